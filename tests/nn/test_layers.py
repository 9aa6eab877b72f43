"""Basic layers: shapes, PyTorch's initialisation, gradients w.r.t. inputs and parameters,
and clear errors."""

import math

import numpy as np
import pytest

import tinynlm as tn
from tests.nn.module_gradcheck import module_gradcheck
from tinynlm import nn


def _x(*shape):
    return tn.randn(*shape, dtype=tn.float64, requires_grad=True)


@pytest.mark.parametrize("make, inputs", [
    (lambda: nn.Linear(3, 2), lambda: [_x(4, 3)]),
    (lambda: nn.Linear(3, 2, bias=False), lambda: [_x(2, 2, 3)]),
    (lambda: nn.Bilinear(2, 3, 2), lambda: [_x(4, 2), _x(4, 3)]),
    (lambda: nn.LayerNorm(4), lambda: [_x(3, 4)]),
    (lambda: nn.LayerNorm((2, 3), elementwise_affine=False), lambda: [_x(2, 2, 3)]),
    (lambda: nn.LayerNorm(3, bias=False), lambda: [_x(2, 3)]),
    (lambda: nn.RMSNorm(4), lambda: [_x(3, 4)]),
    (lambda: nn.RMSNorm(4, eps=1e-3), lambda: [_x(2, 4)]),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2), nn.SiLU()),
     lambda: [_x(2, 3)]),
    (lambda: nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Sigmoid(), nn.Softmax(dim=-1)),
     lambda: [_x(2, 3)]),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(6, 2), nn.LogSoftmax(dim=1)),
     lambda: [_x(2, 2, 3)]),
])
def test_gradcheck_inputs_and_parameters(make, inputs):
    module = make()
    assert module_gradcheck(module, *inputs())


def test_embedding_gradient_skips_the_padding_row():
    embedding = nn.Embedding(5, 3, padding_idx=1)
    assert embedding.weight[1].tolist() == [0.0, 0.0, 0.0]
    ids = tn.tensor([[1, 2, 2], [4, 1, 0]])
    embedding(ids).sum().backward()
    assert embedding.weight.grad[:, 0].tolist() == [1.0, 0.0, 2.0, 0.0, 1.0]
    # Without padding the gradient is the true one (with it, row 1 is frozen on purpose).
    assert module_gradcheck(nn.Embedding(4, 2), tn.tensor([[0, 3, 3]]))


def test_embedding_refuses_bad_ids():
    embedding = nn.Embedding(4, 2)
    with pytest.raises(IndexError, match="id 4 is out of range for 4 embeddings"):
        embedding(tn.tensor([0, 4]))
    with pytest.raises(IndexError, match="id -1 is out of range"):
        embedding(tn.tensor([-1]))
    with pytest.raises(TypeError, match="ids must be an integer tensor"):
        embedding(tn.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="padding_idx 7 is out of range"):
        nn.Embedding(4, 2, padding_idx=7)


def test_linear_initialisation_bounds_and_errors():
    tn.manual_seed(0)
    layer = nn.Linear(100, 50)
    bound = 1 / math.sqrt(100)
    assert float(layer.weight.abs().max()) <= bound and float(layer.bias.abs().max()) <= bound
    assert float(layer.weight.abs().max()) > 0.9 * bound  # spread over the whole range
    assert layer.weight.dtype == tn.float32
    with pytest.raises(ValueError, match=r"linear: input of shape \(2, 5\) does not fit"):
        layer(tn.ones(2, 5))


def test_layer_norm_normalises_and_checks_shape():
    x = tn.randn(4, 6) * 5 + 3
    y = nn.LayerNorm(6)(x)
    np.testing.assert_allclose(y.mean(-1).detach().numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(-1, unbiased=False).detach().numpy(), 1, rtol=1e-3)
    with pytest.raises(ValueError, match="does not end with the normalized shape"):
        nn.LayerNorm(5)(x)
    with pytest.raises(TypeError, match="layer_norm: expected a floating point tensor"):
        nn.LayerNorm(2)(tn.tensor([[1, 2]]))


def test_dropout_module_respects_training_mode():
    layer = nn.Dropout(0.5)
    x = tn.ones(1000)
    assert 0.3 < float((layer(x) == 0).float().mean()) < 0.7
    layer.eval()
    assert layer(x).tolist() == x.tolist()
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(1.5)


def test_init_functions_follow_pytorch_formulas():
    tn.manual_seed(0)
    weight = tn.empty(200, 300)
    nn.init.xavier_uniform_(weight)
    assert float(weight.abs().max()) <= math.sqrt(6 / 500)
    nn.init.kaiming_normal_(weight, nonlinearity="relu")
    assert abs(float(weight.std()) - math.sqrt(2 / 300)) < 0.005
    nn.init.orthogonal_(weight)
    np.testing.assert_allclose((weight @ weight.T).numpy(), np.eye(200), atol=1e-5)
    nn.init.zeros_(weight)
    assert float(weight.abs().sum()) == 0
    with pytest.raises(ValueError, match="at least 2 dims"):
        nn.init.xavier_uniform_(tn.empty(3))


def test_half_precision_norms_do_not_overflow():
    x = tn.full((1, 4096), 5.0).half()
    with tn.no_grad():
        normalized = nn.RMSNorm(4096).to(tn.float16)(x)
        assert normalized.dtype == tn.float16
        np.testing.assert_allclose(normalized.float().numpy(), 1.0, rtol=1e-3)
        y = nn.LayerNorm(4096).to(tn.float16)(x + tn.arange(4096).half() * 0.01)
        assert np.isfinite(y.float().numpy()).all()


def test_empty_and_impossible_initialisations():
    assert nn.Linear(0, 4).weight.shape == (4, 0)
    with pytest.raises(ValueError, match="trunc_normal_"):
        nn.init.trunc_normal_(tn.empty(3), a=6.0, b=7.0)
    with pytest.raises(IndexError, match=r"class ids must be in \[0, 3\)"):
        nn.functional.one_hot(tn.tensor([0, 5]), 3)
