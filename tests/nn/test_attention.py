"""scaled_dot_product_attention, MultiheadAttention, AdditiveAttention and DotProductAttention:
gradients (float64 gradcheck w.r.t. inputs and parameters), masks, fully padded rows (no NaN),
shapes and errors."""

import math

import numpy as np
import pytest

import tinynlm as tn
from tests.nn.module_call import ModuleCall
from tests.nn.module_gradcheck import module_gradcheck
from tinynlm import nn
from tinynlm.nn.functional import scaled_dot_product_attention as sdpa
from tinynlm.nn.scaled_attention import (masked_softmax_attention,
                                         scaled_dot_product_attention_with_weights)


def randn(*shape, requires_grad=True):
    return tn.randn(*shape, dtype=tn.float64, requires_grad=requires_grad)


def bool_mask(rows):
    """A bool tensor from (nested) rows of 0/1."""
    return tn.tensor(np.array(rows, dtype=bool))


def reference_attention(q, k, v, keep=None, scale=None):
    """Plain NumPy attention; ``keep`` a bool (L, S) mask."""
    scores = q @ np.swapaxes(k, -1, -2) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return weights / weights.sum(-1, keepdims=True) @ v


# ----------------------------------------------------------------------------- sdpa

SDPA_MASKS = {
    "none": {},
    "bool": {"attn_mask": bool_mask([[1, 0, 1, 1, 0], [0, 1, 1, 0, 0], [1, 1, 1, 1, 1]])},
    "bool broadcast over batch": {"attn_mask": bool_mask([[[1, 1, 0, 0, 1]], [[0, 0, 1, 0, 0]]])},
    "causal": {"is_causal": True},
    "scale": {"scale": 0.3},
}


@pytest.mark.parametrize("case", sorted(SDPA_MASKS))
def test_sdpa_gradcheck(case):
    q, k, v = randn(2, 3, 4), randn(2, 5, 4), randn(2, 5, 3)
    assert tn.gradcheck(lambda q, k, v: sdpa(q, k, v, **SDPA_MASKS[case]), (q, k, v))


def test_sdpa_gradcheck_float_mask_and_causal_longer_queries():
    q, k, v = randn(2, 4, 3), randn(2, 2, 3), randn(2, 2, 2)
    mask = randn(4, 2)
    assert tn.gradcheck(lambda q, k, v, mask: sdpa(q, k, v, attn_mask=mask), (q, k, v, mask))
    assert tn.gradcheck(lambda q, k, v: sdpa(q, k, v, is_causal=True), (q, k, v))


def test_sdpa_matches_reference():
    q, k, v = (randn(2, 3, 4, requires_grad=False), randn(2, 5, 4, requires_grad=False),
               randn(2, 5, 3, requires_grad=False))
    keep = np.random.default_rng(0).random((3, 5)) > 0.3
    keep[:, 0] = True
    expected = reference_attention(q.numpy(), k.numpy(), v.numpy(), keep, scale=0.5)
    result = sdpa(q, k, v, attn_mask=tn.tensor(keep), scale=0.5)
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-12)
    # A float mask of 0 / -inf is the same mask.
    additive = tn.tensor(np.where(keep, 0.0, -np.inf))
    np.testing.assert_allclose(sdpa(q, k, v, attn_mask=additive, scale=0.5).numpy(), expected,
                               rtol=1e-12)


def test_sdpa_causal_is_aligned_top_left():
    q, k, v = (randn(4, 3, requires_grad=False), randn(2, 3, requires_grad=False),
               randn(2, 5, requires_grad=False))
    keep = np.tril(np.ones((4, 2), dtype=bool))
    expected = reference_attention(q.numpy(), k.numpy(), v.numpy(), keep)
    np.testing.assert_allclose(sdpa(q, k, v, is_causal=True).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(sdpa(q, k, v, is_causal=True)[0].numpy(), v[0].numpy())


@pytest.mark.parametrize("mask", [
    bool_mask([[1, 1, 0], [0, 0, 0]]),
    tn.tensor([[0.0, 0.5, -math.inf], [-math.inf, -math.inf, -math.inf]], dtype=tn.float64),
], ids=["bool", "float"])
def test_sdpa_fully_masked_row_gives_zeros_not_nan(mask):
    q, k, v = randn(2, 4), randn(3, 4), randn(3, 2)
    output = sdpa(q, k, v, attn_mask=mask)
    assert output[1].tolist() == [0.0, 0.0]
    output.sum().backward()
    for tensor in (q, k, v):
        assert np.isfinite(tensor.grad.numpy()).all()
    assert q.grad[1].tolist() == [0.0] * 4
    assert tn.gradcheck(lambda q, k, v: sdpa(q, k, v, attn_mask=mask), (q, k, v))


def test_sdpa_dropout():
    q, k, v = randn(2, 3, 4), randn(2, 5, 4), randn(2, 5, 3)
    assert (sdpa(q, k, v, dropout_p=1.0) == 0).all()
    _, weights = scaled_dot_product_attention_with_weights(q, k, v)
    _, dropped = scaled_dot_product_attention_with_weights(q, k, v, dropout_p=0.5)
    kept = dropped.detach().numpy() != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(dropped.detach().numpy()[kept], 2 * weights.detach().numpy()[kept])


def test_sdpa_grouped_query_heads_repeat_key_value_heads():
    q, k, v = randn(1, 4, 3, 2), randn(1, 2, 5, 2), randn(1, 2, 5, 3)
    repeated_k = tn.cat([k[:, :1], k[:, :1], k[:, 1:], k[:, 1:]], dim=1)
    repeated_v = tn.cat([v[:, :1], v[:, :1], v[:, 1:], v[:, 1:]], dim=1)
    np.testing.assert_allclose(sdpa(q, k, v, enable_gqa=True).detach().numpy(),
                               sdpa(q, repeated_k, repeated_v).detach().numpy(), rtol=1e-12)


def test_sdpa_float32_keeps_dtype_and_unbatched_shapes():
    q, k, v = tn.randn(3, 4), tn.randn(5, 4), tn.randn(5, 6)
    output = sdpa(q, k, v, attn_mask=tn.zeros(3, 5, dtype=tn.float64))
    assert output.shape == (3, 6) and output.dtype == tn.float32


@pytest.mark.parametrize("kwargs, error, words", [
    ({"attn_mask": tn.ones(3, 5, dtype=tn.int64)}, TypeError, ["attn_mask", "int64"]),
    ({"attn_mask": tn.ones(4, 5, dtype=tn.bool)}, ValueError, ["attn_mask", "(4, 5)", "(2, 3, 5)"]),
    ({"attn_mask": tn.ones(3, 5, dtype=tn.bool), "is_causal": True}, ValueError, ["is_causal"]),
    ({"dropout_p": 1.5}, ValueError, ["dropout_p"]),
], ids=["int mask", "mask shape", "mask and causal", "dropout"])
def test_sdpa_errors_name_the_op_and_shapes(kwargs, error, words):
    with pytest.raises(error) as caught:
        sdpa(tn.randn(2, 3, 4), tn.randn(2, 5, 4), tn.randn(2, 5, 3), **kwargs)
    for word in ["scaled_dot_product_attention"] + words:
        assert word in str(caught.value)


@pytest.mark.parametrize("shapes, error", [
    (((2, 3, 4), (2, 5, 3), (2, 5, 3)), ValueError),
    (((2, 3, 4), (2, 5, 4), (2, 6, 3)), ValueError),
    (((4,), (5, 4), (5, 3)), ValueError),
], ids=["features", "key/value length", "1-D query"])
def test_sdpa_input_shape_errors(shapes, error):
    with pytest.raises(error, match="scaled_dot_product_attention"):
        sdpa(*(tn.randn(*shape) for shape in shapes))


def test_sdpa_dtype_errors():
    with pytest.raises(TypeError, match="one dtype"):
        sdpa(tn.randn(3, 4), tn.randn(5, 4, dtype=tn.float64), tn.randn(5, 3))
    with pytest.raises(TypeError, match="floating point"):
        sdpa(tn.ones(3, 4, dtype=tn.int64), tn.randn(5, 4), tn.randn(5, 3))
    with pytest.raises(ValueError, match="multiple of the key and value heads"):
        sdpa(tn.randn(1, 3, 2, 4), tn.randn(1, 2, 5, 4), tn.randn(1, 2, 5, 4), enable_gqa=True)


def test_masked_softmax_attention_checks_its_mask():
    with pytest.raises(ValueError, match="masked_softmax_attention: attn_mask of shape"):
        masked_softmax_attention(tn.randn(3, 5), tn.randn(5, 2), bool_mask([[1, 0]]))


# ----------------------------------------------------------------------------- MultiheadAttention


def test_multihead_attention_parameters_and_init():
    attention = nn.MultiheadAttention(8, 2)
    shapes = {name: p.shape for name, p in attention.named_parameters()}
    assert shapes == {"in_proj_weight": (24, 8), "in_proj_bias": (24,),
                      "out_proj.weight": (8, 8), "out_proj.bias": (8,)}
    assert (attention.in_proj_bias == 0).all() and (attention.out_proj.bias == 0).all()
    bound = math.sqrt(6 / (8 + 24))  # Xavier-uniform over the packed (3E, E) weight
    assert float(attention.in_proj_weight.abs().max()) <= bound
    assert float(attention.in_proj_weight.abs().max()) > 0.8 * bound

    separate = nn.MultiheadAttention(8, 2, kdim=3, vdim=5, bias=False, add_bias_kv=True)
    shapes = {name: p.shape for name, p in separate.named_parameters()}
    assert shapes == {"q_proj_weight": (8, 8), "k_proj_weight": (8, 3), "v_proj_weight": (8, 5),
                      "bias_k": (1, 1, 8), "bias_v": (1, 1, 8), "out_proj.weight": (8, 8)}
    assert separate.in_proj_weight is None and separate.in_proj_bias is None


MHA_GRADCHECK_CASES = {  # constructor options, input shape, call
    "self, padding, weights": (
        {}, (3, 2, 4), lambda m, x, pad: m(x, x, x, key_padding_mask=pad)),
    "self batch first, padding and bool mask, no weights": (
        {"batch_first": True}, (2, 3, 4),
        lambda m, x, pad: m(x, x, x, key_padding_mask=pad, need_weights=False,
                            attn_mask=bool_mask([[0, 1, 0], [0, 0, 1], [1, 0, 0]]))[0]),
}


@pytest.mark.parametrize("case", sorted(MHA_GRADCHECK_CASES))
def test_multihead_attention_gradcheck(case):
    options, shape, call = MHA_GRADCHECK_CASES[case]
    attention = nn.MultiheadAttention(4, 2, **options)
    padding = bool_mask([[0, 0, 0], [0, 1, 1]])  # True marks padding
    x = randn(*shape)
    assert module_gradcheck(ModuleCall(attention, lambda m, x: call(m, x, padding)), x)


def test_multihead_attention_cross_gradcheck_with_kdim_vdim():
    attention = nn.MultiheadAttention(4, 2, kdim=3, vdim=5)
    padding = bool_mask([[0, 0, 1, 1], [0, 0, 0, 0]])

    def call(module, query, key, value):
        return module(query, key, value, key_padding_mask=padding, average_attn_weights=False)

    assert module_gradcheck(ModuleCall(attention, call), randn(2, 2, 4), randn(4, 2, 3),
                            randn(4, 2, 5))


def test_multihead_attention_gradcheck_bias_kv_zero_attn_and_float_masks():
    attention = nn.MultiheadAttention(4, 2, add_bias_kv=True, add_zero_attn=True)
    padding = tn.tensor([[0.0, -math.inf, 0.5], [0.0, 0.0, 0.0]], dtype=tn.float64)

    def call(module, x, mask):
        return module(x, x, x, key_padding_mask=padding, attn_mask=mask)

    assert module_gradcheck(ModuleCall(attention, call), randn(3, 2, 4), randn(4, 3, 3))


def test_multihead_attention_layouts_agree():
    attention = nn.MultiheadAttention(4, 2).double()
    x = randn(3, 2, 4, requires_grad=False)                            # (L, N, E)
    padding = bool_mask([[0, 0, 1], [0, 0, 0]])
    output, weights = attention(x, x, x, key_padding_mask=padding)
    attention.batch_first = True
    batch_first = x.transpose(0, 1)
    output_bf, weights_bf = attention(batch_first, batch_first, batch_first,
                                      key_padding_mask=padding)
    np.testing.assert_allclose(output_bf.transpose(0, 1).detach().numpy(),
                               output.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(weights_bf.detach().numpy(), weights.detach().numpy(), rtol=1e-12)
    unbatched, unbatched_weights = attention(x[:, 0], x[:, 0], x[:, 0],
                                             key_padding_mask=padding[0])
    assert unbatched.shape == (3, 4) and unbatched_weights.shape == (3, 3)
    np.testing.assert_allclose(unbatched.detach().numpy(), output[:, 0].detach().numpy(),
                               rtol=1e-12)


def test_multihead_attention_masks_bool_equals_float_and_causal_hint():
    attention = nn.MultiheadAttention(4, 2).double()
    x = randn(4, 2, 4, requires_grad=False)
    causal_bool = tn.tensor(np.triu(np.ones((4, 4), dtype=bool), 1))
    causal_float = nn.Transformer.generate_square_subsequent_mask(4, dtype=tn.float64)
    reference, weights = attention(x, x, x, attn_mask=causal_bool)
    for kwargs in ({"attn_mask": causal_float}, {"attn_mask": causal_float, "is_causal": True},
                   {"attn_mask": causal_bool, "is_causal": True, "need_weights": False}):
        output, _ = attention(x, x, x, **kwargs)
        np.testing.assert_allclose(output.detach().numpy(), reference.detach().numpy(),
                                   rtol=1e-12)
    assert np.allclose(np.triu(weights.detach().numpy(), 1), 0)
    assert np.allclose(weights.sum(-1).detach().numpy(), 1)


def test_multihead_attention_3d_mask_is_per_batch_and_head():
    attention = nn.MultiheadAttention(4, 2, batch_first=True).double()
    x = randn(2, 3, 4, requires_grad=False)
    mask = np.zeros((4, 3, 3), dtype=bool)
    mask[3, :, 1:] = True  # batch 1, head 1 sees only key 0
    _, weights = attention(x, x, x, attn_mask=tn.tensor(mask), average_attn_weights=False)
    assert weights.shape == (2, 2, 3, 3)
    assert weights[1, 1, :, 0].tolist() == [1.0, 1.0, 1.0]
    assert (weights[0] > 0).all()


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_fully_padded_rows_give_no_nan(need_weights):
    attention = nn.MultiheadAttention(4, 2, batch_first=True).double()
    tn.nn.init.uniform_(attention.out_proj.bias, -1, 1)
    x = randn(2, 3, 4)
    padding = bool_mask([[0, 0, 1], [1, 1, 1]])  # batch 1 is all padding
    output, weights = attention(x, x, x, key_padding_mask=padding, need_weights=need_weights)
    assert np.isfinite(output.detach().numpy()).all()
    np.testing.assert_allclose(output[1].detach().numpy(),
                               np.broadcast_to(attention.out_proj.bias.detach().numpy(), (3, 4)))
    if need_weights:
        assert (weights[1] == 0).all() and weights[0, :, 2].tolist() == [0.0] * 3
    output.sum().backward()
    assert np.isfinite(x.grad.numpy()).all()
    assert all(np.isfinite(p.grad.numpy()).all() for p in attention.parameters())


def test_multihead_attention_dropout_only_while_training():
    attention = nn.MultiheadAttention(4, 2, dropout=0.5).double()
    x = randn(3, 2, 4, requires_grad=False)
    first, second = attention(x, x, x)[1], attention(x, x, x)[1]
    assert not np.allclose(first.detach().numpy(), second.detach().numpy())
    attention.eval()
    np.testing.assert_array_equal(attention(x, x, x)[1].detach().numpy(),
                                  attention(x, x, x)[1].detach().numpy())


@pytest.mark.parametrize("kwargs, error, words", [
    ({"key_padding_mask": tn.zeros(2, 4, dtype=tn.bool)}, ValueError,
     ["key_padding_mask", "(2, 4)", "(2, 5)"]),
    ({"key_padding_mask": tn.zeros(2, 5, dtype=tn.int64)}, TypeError,
     ["key_padding_mask", "int64"]),
    ({"attn_mask": tn.zeros(3, 4, dtype=tn.bool)}, ValueError,
     ["attn_mask", "(3, 4)", "(3, 5)", "(4, 3, 5)"]),
    ({"attn_mask": tn.zeros(2, 3, 5, dtype=tn.bool)}, ValueError, ["attn_mask", "(4, 3, 5)"]),
    ({"is_causal": True}, RuntimeError, ["is_causal", "attn_mask"]),
], ids=["padding shape", "padding dtype", "2-D mask shape", "3-D mask shape", "causal hint"])
def test_multihead_attention_mask_errors(kwargs, error, words):
    attention = nn.MultiheadAttention(4, 2)
    with pytest.raises(error) as caught:
        attention(tn.randn(3, 2, 4), tn.randn(5, 2, 4), tn.randn(5, 2, 4), **kwargs)
    for word in ["MultiheadAttention"] + words:
        assert word in str(caught.value)


def test_multihead_attention_shape_errors():
    attention = nn.MultiheadAttention(4, 2)
    with pytest.raises(ValueError, match=r"MultiheadAttention: key \(5, 2, 3\)"):
        attention(tn.randn(3, 2, 4), tn.randn(5, 2, 3), tn.randn(5, 4))
    with pytest.raises(ValueError, match="4 features"):
        attention(tn.randn(3, 2, 4), tn.randn(5, 2, 3), tn.randn(5, 2, 4))
    with pytest.raises(ValueError, match="batch size or key/value length"):
        attention(tn.randn(3, 2, 4), tn.randn(5, 2, 4), tn.randn(6, 2, 4))
    with pytest.raises(ValueError, match="not divisible"):
        nn.MultiheadAttention(6, 4)


# ----------------------------------------------------------------------------- Bahdanau and Luong


def test_additive_attention_gradcheck_with_padding():
    attention = nn.AdditiveAttention(query_size=3, key_size=2, hidden_size=4)
    padding = bool_mask([[0, 0, 1, 1], [0, 0, 0, 0]])

    def call(module, queries, keys, values):
        return module(queries, keys, values, key_padding_mask=padding)

    assert module_gradcheck(ModuleCall(attention, call), randn(2, 2, 3), randn(2, 4, 2),
                            randn(2, 4, 3))


def test_additive_attention_scores_follow_bahdanau():
    attention = nn.AdditiveAttention(query_size=3, key_size=2, hidden_size=4).double()
    queries, keys, values = (randn(2, 3, requires_grad=False), randn(4, 2, requires_grad=False),
                             randn(4, 5, requires_grad=False))
    context, weights = attention(queries, keys, values)
    w_q, w_k = (attention.query_proj.weight.detach().numpy(),
                attention.key_proj.weight.detach().numpy())
    v = attention.score_proj.weight.detach().numpy()[0]
    scores = np.tanh((queries.numpy() @ w_q.T)[:, None] + (keys.numpy() @ w_k.T)[None]) @ v
    expected = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    np.testing.assert_allclose(weights.detach().numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(context.detach().numpy(), expected @ values.numpy(), rtol=1e-12)


@pytest.mark.parametrize("score", ["dot", "scaled", "general"])
def test_dot_product_attention_gradcheck_with_padding(score):
    attention = nn.DotProductAttention(score, query_size=4, key_size=3 if score == "general"
                                       else None)
    key_size = 3 if score == "general" else 4
    padding = bool_mask([[0, 1, 0], [0, 0, 0]])

    def call(module, queries, keys, values):
        return module(queries, keys, values, key_padding_mask=padding)

    assert module_gradcheck(ModuleCall(attention, call), randn(2, 2, 4), randn(2, 3, key_size),
                            randn(2, 3, 2))


def test_dot_product_attention_scores():
    queries, keys, values = (randn(2, 3, 4, requires_grad=False),
                             randn(2, 5, 4, requires_grad=False),
                             randn(2, 5, 2, requires_grad=False))
    dot, _ = nn.DotProductAttention("dot")(queries, keys, values)
    np.testing.assert_allclose(dot.numpy(), reference_attention(
        queries.numpy(), keys.numpy(), values.numpy(), scale=1.0), rtol=1e-12)
    scaled, _ = nn.DotProductAttention("scaled")(queries, keys, values)
    np.testing.assert_allclose(scaled.numpy(), sdpa(queries, keys, values).numpy(), rtol=1e-12)


@pytest.mark.parametrize("make", [
    lambda: nn.AdditiveAttention(query_size=4, key_size=4, hidden_size=3),
    lambda: nn.DotProductAttention("general", query_size=4),
    lambda: nn.DotProductAttention("dot"),
], ids=["additive", "general", "dot"])
def test_fully_padded_rows_give_zeros_not_nan(make):
    attention = make().double()
    queries, keys, values = randn(2, 3, 4), randn(2, 5, 4), randn(2, 5, 2)
    padding = bool_mask([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    context, weights = attention(queries, keys, values, key_padding_mask=padding)
    assert (context[1] == 0).all() and (weights[1] == 0).all()
    assert (weights[0, :, 2:] == 0).all()
    np.testing.assert_allclose(weights[0].sum(-1).detach().numpy(), 1.0)
    context.sum().backward()
    for tensor in [queries, keys, values] + list(attention.parameters()):
        assert np.isfinite(tensor.grad.numpy()).all()


def test_classic_attention_dropout_and_errors():
    attention = nn.DotProductAttention("dot", dropout=1.0)
    context, weights = attention(tn.randn(3, 4), tn.randn(5, 4), tn.randn(5, 2))
    assert (weights == 0).all()
    attention.eval()
    assert np.allclose(attention(tn.randn(3, 4), tn.randn(5, 4), tn.randn(5, 2))[1].sum(-1)
                       .numpy(), 1.0)
    with pytest.raises(ValueError, match="score must be one of"):
        nn.DotProductAttention("cosine")
    with pytest.raises(ValueError, match="needs query_size"):
        nn.DotProductAttention("general")
    additive = nn.AdditiveAttention(4, 4, 3)
    with pytest.raises(TypeError, match="AdditiveAttention: key_padding_mask must be a bool"):
        additive(tn.randn(3, 4), tn.randn(5, 4), tn.randn(5, 2), key_padding_mask=tn.zeros(5))
    with pytest.raises(ValueError, match=r"AdditiveAttention: key_padding_mask has shape \(4,\)"):
        additive(tn.randn(3, 4), tn.randn(5, 4), tn.randn(5, 2),
                 key_padding_mask=tn.zeros(4, dtype=tn.bool))
