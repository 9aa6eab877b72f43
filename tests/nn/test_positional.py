"""Positional encodings: the sinusoidal table, learned position embeddings and rotary
embeddings (values, layouts, offsets, gradients and errors)."""

import math

import numpy as np
import pytest

import tinynlm as tn
from tests.nn.module_gradcheck import module_gradcheck
from tinynlm import nn


def randn(*shape, requires_grad=True):
    return tn.randn(*shape, dtype=tn.float64, requires_grad=requires_grad)


# ----------------------------------------------------------------------------- sinusoidal


@pytest.mark.parametrize("d_model", [6, 5])
def test_sinusoidal_table_follows_the_paper(d_model):
    encoding = nn.SinusoidalPositionalEncoding(d_model, max_len=20)
    table = encoding.table.numpy()
    assert table.shape == (20, d_model) and table.dtype == np.float32
    for position in (0, 3, 19):
        for i in range(d_model):
            angle = position / 10000 ** ((i - i % 2) / d_model)
            expected = math.sin(angle) if i % 2 == 0 else math.cos(angle)
            assert table[position, i] == pytest.approx(expected, abs=1e-6)
    assert encoding.state_dict() == {}  # a non-persistent buffer
    assert list(encoding.parameters()) == []


def test_sinusoidal_layouts_and_offset():
    encoding = nn.SinusoidalPositionalEncoding(4, max_len=10)
    table = encoding.table.numpy()
    x = randn(2, 3, 4, requires_grad=False)
    np.testing.assert_allclose((encoding(x) - x).numpy(), np.broadcast_to(table[:3], (2, 3, 4)),
                               atol=1e-7)
    np.testing.assert_allclose((encoding(x, offset=5) - x).numpy()[0], table[5:8], atol=1e-7)
    np.testing.assert_allclose((encoding(x[0]) - x[0]).numpy(), table[:3], atol=1e-7)
    sequence_first = nn.SinusoidalPositionalEncoding(4, max_len=10, batch_first=False)
    x_first = x.transpose(0, 1)                                          # (T, N, d_model)
    np.testing.assert_allclose(sequence_first(x_first).transpose(0, 1).numpy(),
                               encoding(x).numpy())
    assert encoding(x).dtype == tn.float64


def test_sinusoidal_gradient_and_dropout():
    encoding = nn.SinusoidalPositionalEncoding(4, max_len=8)
    assert tn.gradcheck(lambda x: encoding(x), (randn(2, 3, 4),))
    dropping = nn.SinusoidalPositionalEncoding(4, max_len=8, dropout=1.0)
    assert (dropping(tn.randn(2, 3, 4)) == 0).all()
    assert not (dropping.eval()(tn.randn(2, 3, 4)) == 0).all()


@pytest.mark.parametrize("make", [
    lambda: nn.SinusoidalPositionalEncoding(4, max_len=5),
    lambda: nn.LearnedPositionalEmbedding(5, 4),
    lambda: nn.RotaryPositionalEmbedding(4, max_len=5),
], ids=["sinusoidal", "learned", "rotary"])
def test_positions_past_max_len_are_refused(make):
    module = make()
    name = type(module).__name__
    with pytest.raises(ValueError, match=f"{name}: positions 0..5 do not fit max_len=5"):
        module(tn.randn(2, 6, 4))
    with pytest.raises(ValueError, match=f"{name}: positions 3..5"):
        module(tn.randn(2, 3, 4), offset=3)
    with pytest.raises(ValueError, match=rf"{name}: expects inputs \(..., T, 4\), got shape"):
        module(tn.randn(2, 3, 5))


# ----------------------------------------------------------------------------- learned


def test_learned_positional_embedding_adds_rows_of_its_table():
    positional = nn.LearnedPositionalEmbedding(max_len=8, d_model=4)
    assert {name: p.shape for name, p in positional.named_parameters()} == {
        "embedding.weight": (8, 4)}
    x = tn.randn(2, 3, 4)
    weight = positional.embedding.weight.detach().numpy()
    np.testing.assert_allclose((positional(x) - x).detach().numpy()[1], weight[:3], atol=1e-6)
    np.testing.assert_allclose((positional(x, offset=4) - x).detach().numpy()[0], weight[4:7],
                               atol=1e-6)


def test_learned_positional_embedding_gradcheck():
    assert module_gradcheck(nn.LearnedPositionalEmbedding(max_len=6, d_model=3), randn(2, 4, 3))


# ----------------------------------------------------------------------------- rotary


def rotate_pairs_reference(x, offset, base=10000.0):
    """RoPE by hand, "rotate half" convention: feature i pairs with feature i + d/2."""
    half = x.shape[-1] // 2
    result = np.empty_like(x)
    for position in range(x.shape[-2]):
        for i in range(half):
            angle = (position + offset) * base ** (-2 * i / x.shape[-1])
            first, second = x[..., position, i], x[..., position, i + half]
            result[..., position, i] = first * math.cos(angle) - second * math.sin(angle)
            result[..., position, i + half] = second * math.cos(angle) + first * math.sin(angle)
    return result


@pytest.mark.parametrize("offset", [0, 3])
def test_rotary_matches_the_rotate_half_convention(offset):
    rope = nn.RotaryPositionalEmbedding(head_dim=6, max_len=16).double()
    x = randn(2, 2, 4, 6, requires_grad=False)
    np.testing.assert_allclose(rope(x, offset=offset).numpy(),
                               rotate_pairs_reference(x.numpy(), offset), atol=1e-6)
    assert rope.state_dict() == {} and list(rope.parameters()) == []


def test_rotary_preserves_norms_and_depends_on_relative_position_only():
    rope = nn.RotaryPositionalEmbedding(head_dim=8, max_len=32)  # float32 cos/sin tables
    q, k = randn(1, 8, requires_grad=False), randn(1, 8, requires_grad=False)
    np.testing.assert_allclose(np.linalg.norm(rope(q, offset=7).numpy()),
                               np.linalg.norm(q.numpy()), rtol=1e-6)

    def score(query_position, key_position):
        return float((rope(q, offset=query_position) * rope(k, offset=key_position)).sum())

    assert score(5, 2) == pytest.approx(score(13, 10), rel=1e-6)
    assert score(5, 2) != pytest.approx(score(5, 3), rel=1e-3)


def test_rotary_offset_continues_a_longer_sequence():
    rope = nn.RotaryPositionalEmbedding(head_dim=4, max_len=16)
    x = tn.randn(3, 10, 4)
    np.testing.assert_allclose(rope(x[:, 6:], offset=6).numpy(), rope(x)[:, 6:].numpy(),
                               rtol=1e-6)


def test_rotary_gradcheck_and_errors():
    rope = nn.RotaryPositionalEmbedding(head_dim=4, max_len=8)
    assert tn.gradcheck(lambda x: rope(x, offset=2), (randn(2, 3, 4),))
    with pytest.raises(ValueError, match="head_dim must be even"):
        nn.RotaryPositionalEmbedding(head_dim=5)
