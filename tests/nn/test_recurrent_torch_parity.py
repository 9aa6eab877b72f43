"""Parity of the recurrent layers, cells and sequence packing with PyTorch.

PyTorch is an optional oracle: the whole module is skipped when it is not installed.

Each test builds the torch module, loads its state dict into the tinynlm module of the same
arguments, feeds both the same seeded inputs (and initial states), and compares the outputs,
the final states, and the gradients of a random-weighted sum of all of them with respect to the
input, the initial states and every parameter (by name): in float64 to ~1e-10 relative, in
float32 to ~1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinynlm as tn

torch = pytest.importorskip("torch", reason="PyTorch is an optional oracle")

DTYPES = {"float64": (tn.float64, torch.float64), "float32": (tn.float32, torch.float32)}
TOLERANCES = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=1e-5, atol=2e-6)}

INPUT_SIZE, HIDDEN_SIZE, STEPS, BATCH = 3, 4, 5, 3

KINDS = {  # id -> (class name, extra constructor arguments)
    "rnn_tanh": ("RNN", {"nonlinearity": "tanh"}),
    "rnn_relu": ("RNN", {"nonlinearity": "relu"}),
    "lstm": ("LSTM", {}),
    "gru": ("GRU", {}),
}
CELLS = {
    "rnn_cell_tanh": ("RNNCell", {"nonlinearity": "tanh"}),
    "rnn_cell_relu": ("RNNCell", {"nonlinearity": "relu"}),
    "lstm_cell": ("LSTMCell", {}),
    "gru_cell": ("GRUCell", {}),
}
LAYER_CONFIGS = {
    "2layers_bidir": dict(num_layers=2, bidirectional=True),
    "2layers_bidir_batch_first_hx": dict(num_layers=2, bidirectional=True, batch_first=True,
                                         with_hx=True),
    "2layers_hx": dict(num_layers=2, with_hx=True),
    "1layer_batch_first": dict(batch_first=True),
    "1layer_bidir_no_bias_hx": dict(bidirectional=True, bias=False, with_hx=True),
    "unbatched_2layers_bidir_hx": dict(num_layers=2, bidirectional=True, unbatched=True,
                                       with_hx=True),
    "unbatched_batch_first": dict(batch_first=True, unbatched=True),
}


def _make_pair(class_name, arguments, dtype_name):
    """The torch module (seeded) and a tinynlm module holding the same weights."""
    tn_dtype, torch_dtype = DTYPES[dtype_name]
    torch.manual_seed(0)
    torch_module = getattr(torch.nn, class_name)(INPUT_SIZE, HIDDEN_SIZE, **arguments)
    torch_module = torch_module.to(torch_dtype)
    module = getattr(tn.nn, class_name)(INPUT_SIZE, HIDDEN_SIZE, dtype=tn_dtype, **arguments)
    module.load_state_dict({k: v.detach().numpy() for k, v in torch_module.state_dict().items()})
    return torch_module, module


def _leaves(arrays, dtype_name):
    """The same arrays as tinynlm and torch leaf tensors that require grad."""
    tn_dtype, torch_dtype = DTYPES[dtype_name]
    return ([tn.tensor(a, dtype=tn_dtype, requires_grad=True) for a in arrays],
            [torch.tensor(a, dtype=torch_dtype, requires_grad=True) for a in arrays])


def _flat(value):
    """Every tensor in an output structure, in order (PackedSequences give their data)."""
    if isinstance(value, (tn.nn.PackedSequence, torch.nn.utils.rnn.PackedSequence)):
        return [value.data]
    if isinstance(value, (tuple, list)):
        return [tensor for item in value for tensor in _flat(item)]
    return [value]


def _backward_weighted_sum(outputs, rng, backend):
    weights = [rng.standard_normal(tuple(output.shape)) for output in outputs]
    if backend is torch:
        total = sum((o * torch.tensor(w, dtype=o.dtype)).sum() for o, w in zip(outputs, weights))
    else:
        total = sum((o * tn.tensor(w, dtype=o.dtype)).sum() for o, w in zip(outputs, weights))
    total.backward()


def _assert_close(actual, expected, dtype_name, what):
    actual = actual.detach().numpy() if isinstance(actual, tn.Tensor) else np.asarray(actual)
    expected = expected.detach().numpy()
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (what, actual.dtype, expected.dtype)
    np.testing.assert_allclose(actual, expected, err_msg=what, **TOLERANCES[dtype_name])


def _compare_run(torch_module, module, tn_call, torch_call, tn_leaves, torch_leaves, dtype_name):
    """Run both, compare every output, then the gradients of the leaves and parameters."""
    tn_outputs = _flat(tn_call(*tn_leaves))
    # PyTorch's oneDNN LSTM compiles kernels for each new configuration (about 0.3 s each);
    # its native kernels are as good an oracle and start at once.
    onednn_enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        torch_outputs = _flat(torch_call(*torch_leaves))
    finally:
        torch.backends.mkldnn.enabled = onednn_enabled
    assert len(tn_outputs) == len(torch_outputs)
    for index, (ours, theirs) in enumerate(zip(tn_outputs, torch_outputs)):
        _assert_close(ours, theirs, dtype_name, f"output {index}")
    _backward_weighted_sum(tn_outputs, np.random.default_rng(1), tn)
    _backward_weighted_sum(torch_outputs, np.random.default_rng(1), torch)
    for index, (ours, theirs) in enumerate(zip(tn_leaves, torch_leaves)):
        _assert_close(ours.grad, theirs.grad, dtype_name, f"gradient of input {index}")
    theirs_by_name = dict(torch_module.named_parameters())
    names = [name for name, _ in module.named_parameters()]
    assert names == list(theirs_by_name)
    for name, parameter in module.named_parameters():
        _assert_close(parameter.grad, theirs_by_name[name].grad, dtype_name, f"gradient of {name}")


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("config_id", list(LAYER_CONFIGS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_layer_matches_torch(kind, config_id, dtype_name):
    class_name, arguments = KINDS[kind]
    config = dict(LAYER_CONFIGS[config_id])
    with_hx, unbatched = config.pop("with_hx", False), config.pop("unbatched", False)
    torch_module, module = _make_pair(class_name, {**arguments, **config}, dtype_name)
    directions = 2 if config.get("bidirectional") else 1
    rng = np.random.default_rng(0)
    batch_dims = () if unbatched else (BATCH,)
    input_shape = (STEPS, INPUT_SIZE) if unbatched else \
        ((BATCH, STEPS, INPUT_SIZE) if config.get("batch_first") else (STEPS, BATCH, INPUT_SIZE))
    arrays = [rng.standard_normal(input_shape)]
    state_count = 2 if class_name == "LSTM" else 1
    if with_hx:
        state_shape = (config.get("num_layers", 1) * directions,) + batch_dims + (HIDDEN_SIZE,)
        arrays += [rng.standard_normal(state_shape) for _ in range(state_count)]
    tn_leaves, torch_leaves = _leaves(arrays, dtype_name)

    def call(layer):
        def run(x, *state):
            hx = None if not state else (state[0] if state_count == 1 else tuple(state))
            return layer(x, hx)
        return run

    _compare_run(torch_module, module, call(module), call(torch_module), tn_leaves, torch_leaves,
                 dtype_name)


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["zero_state", "with_hx"])
@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_matches_torch(kind, with_hx, batched, dtype_name):
    class_name, arguments = CELLS[kind]
    torch_module, module = _make_pair(class_name, arguments, dtype_name)
    rng = np.random.default_rng(0)
    batch_dims = (BATCH,) if batched else ()
    arrays = [rng.standard_normal(batch_dims + (INPUT_SIZE,))]
    state_count = 2 if class_name == "LSTMCell" else 1
    if with_hx:
        arrays += [rng.standard_normal(batch_dims + (HIDDEN_SIZE,)) for _ in range(state_count)]
    tn_leaves, torch_leaves = _leaves(arrays, dtype_name)

    def call(cell):
        def run(x, *state):
            hx = None if not state else (state[0] if state_count == 1 else tuple(state))
            return cell(x, hx)
        return run

    _compare_run(torch_module, module, call(module), call(torch_module), tn_leaves, torch_leaves,
                 dtype_name)


UNSORTED_LENGTHS = [3, 5, 1, 4]


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_first", "batch_first"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_packed_layer_matches_torch(kind, bidirectional, batch_first, dtype_name):
    """Unsorted lengths, enforce_sorted=False, two layers, an initial state; the packed output,
    its padded form (with a padding value and total_length) and the final states agree."""
    class_name, arguments = KINDS[kind]
    config = dict(num_layers=2, bidirectional=bidirectional, batch_first=batch_first)
    torch_module, module = _make_pair(class_name, {**arguments, **config}, dtype_name)
    batch, directions = len(UNSORTED_LENGTHS), 2 if bidirectional else 1
    steps = max(UNSORTED_LENGTHS)
    rng = np.random.default_rng(0)
    input_shape = (batch, steps, INPUT_SIZE) if batch_first else (steps, batch, INPUT_SIZE)
    state_count = 2 if class_name == "LSTM" else 1
    arrays = [rng.standard_normal(input_shape)] + \
        [rng.standard_normal((2 * directions, batch, HIDDEN_SIZE)) for _ in range(state_count)]
    tn_leaves, torch_leaves = _leaves(arrays, dtype_name)

    def call(layer, rnn_utils):
        def run(x, *state):
            packed = rnn_utils.pack_padded_sequence(x, UNSORTED_LENGTHS, batch_first=batch_first,
                                                    enforce_sorted=False)
            hx = state[0] if state_count == 1 else tuple(state)
            output, final = layer(packed, hx)
            padded, lengths = rnn_utils.pad_packed_sequence(
                output, batch_first=batch_first, padding_value=-7.0, total_length=steps + 1)
            assert lengths.tolist() == UNSORTED_LENGTHS
            for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
                assert getattr(output, field).tolist() == getattr(packed, field).tolist()
            return output, padded, final
        return run

    _compare_run(torch_module, module, call(module, tn.nn),
                 call(torch_module, torch.nn.utils.rnn), tn_leaves, torch_leaves, dtype_name)


@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_first", "batch_first"])
def test_packing_matches_torch(batch_first, enforce_sorted):
    lengths = [5, 4, 4, 1] if enforce_sorted else UNSORTED_LENGTHS
    steps, batch = 5, len(lengths)
    shape = (batch, steps, 2) if batch_first else (steps, batch, 2)
    (ours_input,), (theirs_input,) = _leaves([np.random.default_rng(0).standard_normal(shape)],
                                             "float64")
    ours = tn.nn.pack_padded_sequence(ours_input, tn.tensor(lengths), batch_first, enforce_sorted)
    theirs = torch.nn.utils.rnn.pack_padded_sequence(theirs_input, torch.tensor(lengths),
                                                     batch_first, enforce_sorted)
    _assert_close(ours.data, theirs.data, "float64", "packed data")
    for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
        ours_field, theirs_field = getattr(ours, field), getattr(theirs, field)
        assert (ours_field is None) == (theirs_field is None), field
        if ours_field is not None:
            assert ours_field.tolist() == theirs_field.tolist(), field
            assert ours_field.dtype == tn.int64
    ours_padded, ours_lengths = tn.nn.pad_packed_sequence(ours, batch_first, 0.5, steps + 2)
    theirs_padded, theirs_lengths = torch.nn.utils.rnn.pad_packed_sequence(theirs, batch_first,
                                                                           0.5, steps + 2)
    _assert_close(ours_padded, theirs_padded, "float64", "padded")
    assert ours_lengths.tolist() == theirs_lengths.tolist() == lengths
    weights = np.random.default_rng(1).standard_normal(tuple(theirs_padded.shape))
    (ours_padded * tn.tensor(weights)).sum().backward()
    (theirs_padded * torch.tensor(weights)).sum().backward()
    _assert_close(ours_input.grad, theirs_input.grad, "float64", "gradient through packing")
