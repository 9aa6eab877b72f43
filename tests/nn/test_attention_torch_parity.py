"""Attention, Transformer layers and the Transformer against PyTorch (an optional oracle).

Each check loads PyTorch's weights into the tinynlm module, runs the same call on both (the two
APIs are the same, so the call is written once as ``call(module, inputs)``), then compares every
output and the gradients of a random-weighted sum of the outputs with respect to every floating
input and every parameter. Modules run in eval mode (no dropout); masks leave every query at
least one key, where PyTorch's paths disagree among themselves (NaN or zeros).
"""

import numpy as np
import pytest

import tinynlm as tn
from tinynlm import nn

torch = pytest.importorskip("torch", reason="PyTorch is an optional oracle")

# PyTorch's own notes about its fast paths and mask types, not about the results.
pytestmark = [pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask"),
              pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")]

TOLERANCE = {np.float64: dict(rtol=1e-9, atol=1e-11), np.float32: dict(rtol=1e-5, atol=1e-5)}
DTYPES = [np.float64, np.float32]


def _tensors(framework, inputs, dtype):
    """Floating arrays become tensors that require grad; bool arrays constant masks; other
    values (None, flags) pass through."""
    made = {}
    for name, value in inputs.items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            if framework is tn:
                made[name] = tn.tensor(value.astype(dtype), requires_grad=True)
            else:
                made[name] = torch.tensor(value.astype(dtype), requires_grad=True)
        elif isinstance(value, np.ndarray):
            made[name] = framework.tensor(value)
        else:
            made[name] = value
    return made


def _outputs(result):
    results = result if isinstance(result, tuple) else (result,)
    return [output for output in results if output is not None]


def _as_numpy(tensor):
    return tensor.detach().numpy()


def check_parity(ours, theirs, call, inputs, dtype):
    """Same weights and inputs: same outputs, input gradients and parameter gradients."""
    theirs = theirs.to(torch.float64 if dtype == np.float64 else torch.float32).eval()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    ours.to(tn.float64 if dtype == np.float64 else tn.float32).eval()
    our_inputs, their_inputs = _tensors(tn, inputs, dtype), _tensors(torch, inputs, dtype)
    our_outputs = _outputs(call(ours, our_inputs))
    their_outputs = _outputs(call(theirs, their_inputs))
    assert len(our_outputs) == len(their_outputs)
    rng = np.random.default_rng(1)
    our_loss, their_loss = 0, 0
    for ours_out, theirs_out in zip(our_outputs, their_outputs):
        assert ours_out.shape == tuple(theirs_out.shape)
        np.testing.assert_allclose(_as_numpy(ours_out), _as_numpy(theirs_out), **TOLERANCE[dtype])
        weight = rng.standard_normal(ours_out.shape).astype(dtype)
        our_loss = our_loss + (ours_out * tn.tensor(weight)).sum()
        their_loss = their_loss + (theirs_out * torch.tensor(weight)).sum()
    our_loss.backward()
    their_loss.backward()
    for name, value in their_inputs.items():
        if isinstance(value, torch.Tensor) and value.requires_grad:
            np.testing.assert_allclose(_gradient(our_inputs[name]), _gradient(value),
                                       **TOLERANCE[dtype], err_msg=f"gradient of input {name}")
    their_params = dict(theirs.named_parameters())
    our_params = dict(ours.named_parameters())
    assert sorted(our_params) == sorted(their_params)
    for name, param in our_params.items():
        np.testing.assert_allclose(_gradient(param), _gradient(their_params[name]),
                                   **TOLERANCE[dtype], err_msg=f"gradient of parameter {name}")


def _gradient(tensor):
    """The gradient as an array, zeros when none reached the tensor (an unused input)."""
    if tensor.grad is None:
        return np.zeros(tuple(tensor.shape))
    return tensor.grad.numpy()


def _normal(rng, *shape):
    return rng.standard_normal(shape)


def _causal_float(size):
    return np.triu(np.full((size, size), -np.inf), 1)


# ----------------------------------------------------------------------------- sdpa


class _Functional(nn.Module):
    """Lets check_parity run a stateless function (no parameters)."""


def _sdpa_call(**options):
    def call(module, x):
        functional = tn.nn.functional if isinstance(module, nn.Module) else torch.nn.functional
        return functional.scaled_dot_product_attention(x["q"], x["k"], x["v"],
                                                       attn_mask=x.get("mask"), **options)
    return call


def _sdpa_inputs(query_shape=(2, 3, 4, 5), key_length=6, value_features=3, mask=None,
                 key_heads=None):
    rng = np.random.default_rng(0)
    *batch, length, features = query_shape
    if key_heads is not None:
        batch[-1] = key_heads
    inputs = {"q": _normal(rng, *query_shape), "k": _normal(rng, *batch, key_length, features),
              "v": _normal(rng, *batch, key_length, value_features)}
    if mask is not None:
        inputs["mask"] = mask(rng, length, key_length)
    return inputs


def _bool_mask(rng, length, key_length):
    keep = rng.random((length, key_length)) > 0.4
    keep[:, 0] = True  # every query keeps a key
    return keep


def _float_mask(rng, length, key_length):
    mask = rng.standard_normal((2, 1, length, key_length))
    mask[..., 1::3] = -np.inf
    return mask


SDPA_CASES = {
    "plain": (_sdpa_inputs(), {}),
    "bool mask": (_sdpa_inputs(mask=_bool_mask), {}),
    "float mask": (_sdpa_inputs(mask=_float_mask), {}),
    "causal L < S": (_sdpa_inputs(), {"is_causal": True}),
    "causal L > S": (_sdpa_inputs(key_length=2), {"is_causal": True}),
    "scale": (_sdpa_inputs(mask=_bool_mask), {"scale": 0.37}),
    "unbatched": (_sdpa_inputs(query_shape=(3, 5)), {}),
    "grouped query heads": (_sdpa_inputs(query_shape=(2, 4, 3, 5), key_heads=2),
                            {"enable_gqa": True}),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(SDPA_CASES))
def test_scaled_dot_product_attention(case, dtype):
    inputs, options = SDPA_CASES[case]
    check_parity(_Functional(), torch.nn.Module(), _sdpa_call(**options), inputs, dtype)


def test_scaled_dot_product_attention_fully_masked_rows():
    inputs = _sdpa_inputs(mask=_bool_mask)
    inputs["mask"][1] = False  # query 1 may see no key
    their = torch.nn.functional.scaled_dot_product_attention(
        *(torch.tensor(inputs[name]) for name in ("q", "k", "v")),
        attn_mask=torch.tensor(inputs["mask"]))
    if torch.isnan(their).any():
        pytest.skip("this PyTorch (< 2.5) gives NaN for fully masked rows")
    check_parity(_Functional(), torch.nn.Module(), _sdpa_call(), inputs, np.float64)


# ----------------------------------------------------------------------------- MultiheadAttention


def _mha_call(**options):
    def call(module, x):
        key = x["q"] if "k" not in x else x["k"]
        value = x["q"] if "v" not in x else x["v"]
        return module(x["q"], key, value, key_padding_mask=x.get("key_padding_mask"),
                      attn_mask=x.get("attn_mask"), **options)
    return call


def _padding(batch, length, padded_from):
    """Padding masks with sequence ``i`` padded from ``padded_from[i]`` on."""
    mask = np.zeros((batch, length), dtype=bool)
    for row, start in enumerate(padded_from):
        mask[row, start:] = True
    return mask


def _mha_case(constructor, batch_first=False, cross=False, kdim=4, vdim=4, padding=None,
              attn_mask=None, unbatched=False, seed=0, **call_options):
    rng = np.random.default_rng(seed)
    embed_dim, batch, length, source_length = 4, 2, 3, 5
    if not cross:
        source_length = length

    def layout(sequence, features):
        if unbatched:
            return _normal(rng, sequence, features)
        return _normal(rng, *((batch, sequence) if batch_first else (sequence, batch)), features)

    inputs = {"q": layout(length, embed_dim)}
    if cross:
        inputs["k"], inputs["v"] = layout(source_length, kdim), layout(source_length, vdim)
    if padding == "bool":
        inputs["key_padding_mask"] = _padding(batch, source_length, [source_length, 2])
    elif padding == "float":
        inputs["key_padding_mask"] = np.where(_padding(batch, source_length, [4, 2]), -np.inf,
                                              rng.standard_normal((batch, source_length)))
    if unbatched and padding:
        inputs["key_padding_mask"] = inputs["key_padding_mask"][1]
    if attn_mask == "bool":
        inputs["attn_mask"] = ~_bool_mask(rng, length, source_length)
    elif attn_mask == "float 3d":
        inputs["attn_mask"] = rng.standard_normal((batch * 2, length, source_length))
    elif attn_mask == "causal":
        inputs["attn_mask"] = _causal_float(length)
    options = dict(constructor, batch_first=batch_first)
    if cross:
        options.update(kdim=kdim, vdim=vdim)
    return options, inputs, call_options


MHA_CASES = {
    "self": _mha_case({}),
    "self batch first, bool masks, no weights": _mha_case(
        {}, batch_first=True, padding="bool", attn_mask="bool", need_weights=False),
    "self, weights per head": _mha_case({}, padding="bool", average_attn_weights=False),
    "cross": _mha_case({}, cross=True, padding="bool", attn_mask="bool"),
    "cross kdim vdim, float masks": _mha_case(
        {}, cross=True, kdim=3, vdim=6, padding="float", attn_mask="float 3d",
        average_attn_weights=False),
    "cross kdim vdim batch first, no weights": _mha_case(
        {}, batch_first=True, cross=True, kdim=3, vdim=6, padding="bool", need_weights=False),
    "causal hint, no weights": _mha_case({}, attn_mask="causal", is_causal=True,
                                         need_weights=False),
    "causal hint with padding": _mha_case({}, attn_mask="causal", padding="bool",
                                          is_causal=True),
    "unbatched": _mha_case({}, unbatched=True, padding="bool", attn_mask="bool"),
    "unbatched cross, no weights": _mha_case({}, unbatched=True, cross=True, kdim=3, vdim=6,
                                             padding="bool", need_weights=False),
    "no bias": _mha_case({"bias": False}, padding="bool"),
    "bias kv, zero attn": _mha_case({"add_bias_kv": True, "add_zero_attn": True},
                                    padding="bool", attn_mask="bool"),
    "dropout off in eval": _mha_case({"dropout": 0.5}, cross=True, padding="float"),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(MHA_CASES))
def test_multihead_attention(case, dtype):
    options, inputs, call_options = MHA_CASES[case]
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(4, 2, **options)
    ours = nn.MultiheadAttention(4, 2, **options)
    check_parity(ours, theirs, _mha_call(**call_options), inputs, dtype)


# ----------------------------------------------------------------------------- Transformer layers

LAYER_OPTIONS = [dict(norm_first=norm_first, activation=activation)
                 for norm_first in (False, True) for activation in ("relu", "gelu")]


def _layer_id(options):
    return f"{'pre' if options['norm_first'] else 'post'}-LN {options['activation']}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", LAYER_OPTIONS, ids=_layer_id)
def test_transformer_encoder_layer(options, dtype):
    rng = np.random.default_rng(0)
    inputs = {"src": _normal(rng, 2, 5, 8), "src_mask": ~_bool_mask(rng, 5, 5),
              "src_key_padding_mask": _padding(2, 5, [5, 3])}
    torch.manual_seed(0)
    constructor = dict(d_model=8, nhead=2, dim_feedforward=16, batch_first=True, **options)
    theirs = torch.nn.TransformerEncoderLayer(**constructor)
    ours = nn.TransformerEncoderLayer(**constructor)

    def call(module, x):
        return module(x["src"], src_mask=x["src_mask"],
                      src_key_padding_mask=x["src_key_padding_mask"])

    check_parity(ours, theirs, call, inputs, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", LAYER_OPTIONS, ids=_layer_id)
def test_transformer_decoder_layer(options, dtype):
    rng = np.random.default_rng(0)
    inputs = {"tgt": _normal(rng, 4, 2, 8), "memory": _normal(rng, 5, 2, 8),
              "tgt_mask": _causal_float(4), "memory_mask": ~_bool_mask(rng, 4, 5),
              "tgt_key_padding_mask": _padding(2, 4, [4, 3]),
              "memory_key_padding_mask": _padding(2, 5, [5, 2])}
    torch.manual_seed(0)
    constructor = dict(d_model=8, nhead=2, dim_feedforward=16, **options)
    theirs = torch.nn.TransformerDecoderLayer(**constructor)
    ours = nn.TransformerDecoderLayer(**constructor)

    def call(module, x):
        return module(x["tgt"], x["memory"], tgt_mask=x["tgt_mask"], memory_mask=x["memory_mask"],
                      tgt_key_padding_mask=x["tgt_key_padding_mask"],
                      memory_key_padding_mask=x["memory_key_padding_mask"], tgt_is_causal=True)

    check_parity(ours, theirs, call, inputs, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer(norm_first, dtype):
    rng = np.random.default_rng(0)
    inputs = {"src": _normal(rng, 2, 5, 8), "tgt": _normal(rng, 2, 4, 8),
              "src_key_padding_mask": _padding(2, 5, [5, 3]),
              "tgt_key_padding_mask": _padding(2, 4, [4, 2]),
              "memory_key_padding_mask": _padding(2, 5, [5, 3])}
    torch.manual_seed(0)
    constructor = dict(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=2,
                       dim_feedforward=16, batch_first=True, norm_first=norm_first,
                       activation="gelu")
    theirs = torch.nn.Transformer(**constructor)
    ours = nn.Transformer(**constructor)

    def call(module, x):
        mask = type(module).generate_square_subsequent_mask(4)
        if isinstance(mask, torch.Tensor):
            mask = mask.to(x["src"].dtype)
        return module(x["src"], x["tgt"], tgt_mask=mask,
                      src_key_padding_mask=x["src_key_padding_mask"],
                      tgt_key_padding_mask=x["tgt_key_padding_mask"],
                      memory_key_padding_mask=x["memory_key_padding_mask"])

    check_parity(ours, theirs, call, inputs, dtype)


def test_state_dict_keys_match_pytorch():
    constructor = dict(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=1,
                       dim_feedforward=16)
    ours = nn.Transformer(**constructor).state_dict()
    theirs = torch.nn.Transformer(**constructor).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[key].shape == tuple(theirs[key].shape) for key in ours)


@pytest.mark.parametrize("options", [{}, {"kdim": 3, "vdim": 6}, {"bias": False},
                                     {"add_bias_kv": True}])
def test_multihead_attention_parameters_match_pytorch(options):
    ours = dict(nn.MultiheadAttention(4, 2, **options).named_parameters())
    theirs = dict(torch.nn.MultiheadAttention(4, 2, **options).named_parameters())
    assert list(ours) == list(theirs)
    assert all(ours[name].shape == tuple(theirs[name].shape) for name in ours)


def test_generate_square_subsequent_mask_matches_pytorch():
    np.testing.assert_array_equal(nn.Transformer.generate_square_subsequent_mask(5).numpy(),
                                  torch.nn.Transformer.generate_square_subsequent_mask(5).numpy())
