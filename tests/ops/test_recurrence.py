"""``tinynlm.ops.recurrence.Recurrence``: a recurrent layer as one op, against the same layer
composed from core ops (``tn.use_fused_kernels(False)``), and through gradcheck and
gradgradcheck in float64."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynlm as tn
from tinynlm.ops import recurrence
from tinynlm.ops.recurrence import Recurrence

TOLERANCE = {"float64": 1e-10, "float32": 2e-5}
LAYERS = {"lstm": lambda **kw: tn.nn.LSTM(**kw), "gru": lambda **kw: tn.nn.GRU(**kw),
          "rnn_tanh": lambda **kw: tn.nn.RNN(nonlinearity="tanh", **kw),
          "rnn_relu": lambda **kw: tn.nn.RNN(nonlinearity="relu", **kw)}


def run_layer(kind, fused, dtype, steps, batch, input_size, hidden, layers, bidirectional,
              bias, with_state, seed):
    """Outputs, final states and every gradient (input, initial states, parameters) of one
    forward and backward, seeded with fixed random output gradients."""
    tn.manual_seed(seed)
    layer = LAYERS[kind](input_size=input_size, hidden_size=hidden, num_layers=layers,
                         bidirectional=bidirectional, bias=bias, dtype=getattr(tn, dtype))
    rng = np.random.default_rng(seed)
    x = tn.tensor(rng.standard_normal((steps, batch, input_size)), dtype=dtype,
                  requires_grad=True)
    directions = 2 if bidirectional else 1
    states = []
    if with_state:
        for _ in range(2 if kind == "lstm" else 1):
            states.append(tn.tensor(rng.standard_normal((layers * directions, batch, hidden)),
                                    dtype=dtype, requires_grad=True))
    hx = None if not states else states[0] if kind != "lstm" else tuple(states)
    with tn.use_fused_kernels(fused):
        output, final = layer(x, hx)
        finals = list(final) if kind == "lstm" else [final]
        loss = (output * tn.tensor(rng.standard_normal(output.shape), dtype=dtype)).sum()
        for tensor in finals:
            loss = loss + (tensor * tn.tensor(rng.standard_normal(tensor.shape),
                                              dtype=dtype)).sum()
        loss.backward()
    results = [t.detach().numpy() for t in [output] + finals] + [x.grad.numpy()]
    results += [s.grad.numpy() for s in states]
    results += [p.grad.numpy() for p in layer.parameters()]
    return results


layer_cases = st.fixed_dictionaries({
    "kind": st.sampled_from(sorted(LAYERS)), "steps": st.integers(1, 6),
    "batch": st.integers(1, 4), "input_size": st.integers(1, 5), "hidden": st.integers(1, 6),
    "layers": st.integers(1, 2), "bidirectional": st.booleans(), "bias": st.booleans(),
    "with_state": st.booleans(), "seed": st.integers(0, 2**16)})


@given(case=layer_cases, dtype=st.sampled_from(["float32", "float64"]),
       cells=st.sampled_from(["kernels", "arrays"]))
def test_one_op_matches_the_composed_layer(case, dtype, cells):
    """With the CPU's gate kernels, and with the array-op gates other devices use."""
    with pytest.MonkeyPatch.context() as patch:
        if cells == "arrays":
            patch.setattr(recurrence, "fused", lambda name, xp: None)
        fused = run_layer(fused=True, dtype=dtype, **case)
    composed = run_layer(fused=False, dtype=dtype, **case)
    assert len(fused) == len(composed)
    for got, want in zip(fused, composed):
        assert got.dtype == want.dtype and got.shape == want.shape
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE[dtype] * scale)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_and_double_backward(mode, reverse):
    """Through the op itself (float64): first derivatives from its backward, second from
    differentiating its composed reference."""
    from tinynlm.nn import recurrent

    recurrence = recurrent._RECURRENCES[mode]
    rng = np.random.default_rng(5)
    steps, batch, hidden = 3, 2, 3
    gates = recurrence.gate_count * hidden

    def tensor(*shape, scale=0.5):
        return tn.tensor(rng.standard_normal(shape) * scale, requires_grad=True)

    projected = tensor(steps, batch, gates)
    states = [tensor(batch, hidden) for _ in range(recurrence.state_count)]
    weight = tensor(gates, hidden)
    bias = tensor(gates) if recurrence.hidden_bias_in_step else None

    def layer(projected, *rest):
        with tn.use_fused_kernels(True):
            count = recurrence.state_count
            output, final = recurrent._run_fused(recurrence, projected, tuple(rest[:count]),
                                                 rest[count], rest[count + 1] if bias is not None
                                                 else None, reverse)
        return (output, *final)

    inputs = (projected, *states, weight) + ((bias,) if bias is not None else ())
    if mode == "RNN_RELU":  # keep the pre-activations away from relu's kink at 0
        projected.data += np.where(projected.data >= 0, 0.3, -0.3)
    assert isinstance(layer(*inputs)[0].grad_fn, Recurrence)
    assert tn.gradcheck(layer, inputs)
    assert tn.gradgradcheck(layer, inputs)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_layers_run_as_one_op_unless_switched_off(kind):
    layer = LAYERS[kind](input_size=3, hidden_size=4)
    x = tn.randn(5, 2, 3, requires_grad=True)
    assert isinstance(layer(x)[0].grad_fn, Recurrence)
    with tn.use_fused_kernels(False):
        assert not isinstance(layer(x)[0].grad_fn, Recurrence)


def test_packed_sequences_keep_the_composed_path():
    """Per-step masks (packed sequences of different lengths) run composed, and agree."""
    layer = tn.nn.LSTM(3, 4)
    x = tn.randn(5, 2, 3)
    packed = tn.nn.utils.rnn.pack_padded_sequence(x, [5, 3])
    output, _ = layer(packed)
    padded, lengths = tn.nn.utils.rnn.pad_packed_sequence(output)
    with tn.use_fused_kernels(False):
        expected, _ = tn.nn.utils.rnn.pad_packed_sequence(layer(packed)[0])
    np.testing.assert_allclose(padded.detach().numpy(), expected.detach().numpy(), atol=1e-6)
    assert lengths.tolist() == [5, 3]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_batch_rows_shared_among_threads(monkeypatch, kind):
    """With the batch cut into blocks on three threads the compiled loops still match."""
    from tinynlm.kernels import cpu_parallel, cpu_recurrence

    monkeypatch.setattr(cpu_recurrence, "MIN_WORK_PER_BLOCK", 1)
    for module in (cpu_recurrence, cpu_parallel):
        monkeypatch.setattr(module, "cpu_cores", lambda: 3)
    case = dict(kind=kind, steps=4, batch=7, input_size=3, hidden=5, layers=2,
                bidirectional=True, bias=True, with_state=True, seed=3)
    fused, composed = (run_layer(fused=flag, dtype="float64", **case) for flag in (True, False))
    for got, want in zip(fused, composed):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_float16_layers_run_composed(kind):
    layer = LAYERS[kind](input_size=2, hidden_size=3, dtype=tn.float16)
    output = layer(tn.randn(4, 2, 2, dtype=tn.float16))[0]
    assert output.dtype == tn.float16 and not isinstance(output.grad_fn, Recurrence)
