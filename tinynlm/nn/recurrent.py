"""Recurrent layers with PyTorch's API: the cells ``RNNCell``, ``LSTMCell`` and ``GRUCell`` (one
time step) and the layers ``RNN``, ``LSTM`` and ``GRU`` (whole sequences, stacked, optionally
bidirectional), with PyTorch's arguments, parameter names, gate order and initialisation, so
state dicts move between the two.

A layer projects the inputs of all its time steps in one matrix product; the loop over time then
does only the recurrent product ``h @ W_hh.T`` and the gate arithmetic. With the fused kernels on
(the default) each layer and direction runs as one op, ``tinynlm.ops.recurrence.Recurrence``
(compiled on the CPU); switched off, or for packed sequences and float16, the loop is built from
core ops, one step at a time, and autograd differentiates it. A :class:`~tinynlm.nn.packing.PackedSequence` runs padded, with a
per-step mask that holds the state of each sequence once it has ended (and, going backwards,
until it begins).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import creation, ops
from ..dispatch import fused_kernels_enabled
from ..ops.recurrence import Recurrence
from ..tensor import Tensor
from . import functional as F
from . import init
from .module import Module, Parameter
from .packing import PackedSequence, pack_padded_like, pad_packed_sequence

# ----------------------------------------------------------------------------- one time step
# A step takes the projected input ``x @ W_ih.T + b_ih`` and the projected hidden state
# ``h @ W_hh.T + b_hh``, both (B, gate_count * H), and the state tuple ((h,) or (h, c), each
# (B, H)); it returns the next state tuple.


def _rnn_tanh_step(projected_input, projected_hidden, state):
    """Elman RNN step: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``."""
    return (ops.tanh(projected_input + projected_hidden),)


def _rnn_relu_step(projected_input, projected_hidden, state):
    """Elman RNN step with ReLU: ``h' = relu(W_ih x + b_ih + W_hh h + b_hh)``."""
    return (ops.relu(projected_input + projected_hidden),)


def _lstm_step(projected_input, projected_hidden, state):
    """LSTM step with PyTorch's gate order i, f, g, o: ``c' = f * c + i * g``,
    ``h' = o * tanh(c')``."""
    _, cell = state
    input_gate, forget_gate, candidate, output_gate = ops.chunk(
        projected_input + projected_hidden, 4, 1)                        # 4 x (B, H)
    cell = ops.sigmoid(forget_gate) * cell + ops.sigmoid(input_gate) * ops.tanh(candidate)
    return ops.sigmoid(output_gate) * ops.tanh(cell), cell


def _gru_step(projected_input, projected_hidden, state):
    """GRU step with PyTorch's gate order r, z, n: ``n = tanh(W_in x + b_in + r * (W_hn h +
    b_hn))``, ``h' = (1 - z) * n + z * h``."""
    (hidden,) = state
    input_reset, input_update, input_new = ops.chunk(projected_input, 3, 1)     # 3 x (B, H)
    hidden_reset, hidden_update, hidden_new = ops.chunk(projected_hidden, 3, 1)  # 3 x (B, H)
    reset = ops.sigmoid(input_reset + hidden_reset)
    update = ops.sigmoid(input_update + hidden_update)
    new = ops.tanh(input_new + reset * hidden_new)
    return (new + update * (hidden - new),)


@dataclass(frozen=True)
class _Recurrence:
    """What sets one kind of recurrent layer apart from the others."""

    gate_count: int          # rows of W_ih per hidden unit
    state_count: int         # 1: the state is h; 2: it is (h, c)
    step: Callable
    hidden_bias_in_step: bool  # GRU: b_hn is multiplied by r, so it cannot join b_ih


_RECURRENCES = {  # by PyTorch's mode names
    "RNN_TANH": _Recurrence(gate_count=1, state_count=1, step=_rnn_tanh_step,
                            hidden_bias_in_step=False),
    "RNN_RELU": _Recurrence(gate_count=1, state_count=1, step=_rnn_relu_step,
                            hidden_bias_in_step=False),
    "LSTM": _Recurrence(gate_count=4, state_count=2, step=_lstm_step, hidden_bias_in_step=False),
    "GRU": _Recurrence(gate_count=3, state_count=1, step=_gru_step, hidden_bias_in_step=True),
}

_RNN_MODES = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}


# ----------------------------------------------------------------------------- shared set-up


def _check_sizes(name, input_size, hidden_size):
    for label, size in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 0:
            raise ValueError(f"{name}: {label} must be a non-negative int, got {size!r}")
    if hidden_size == 0:
        raise ValueError(f"{name}: hidden_size must be positive, got 0")


def _register_weights(module, suffix, input_size, hidden_size, gate_count, bias, dtype, device):
    """Register ``weight_ih{suffix}`` (G*H, input), ``weight_hh{suffix}`` (G*H, H) and, with
    ``bias``, ``bias_ih{suffix}`` and ``bias_hh{suffix}`` (G*H), in PyTorch's order."""
    rows = gate_count * hidden_size
    factory = {"dtype": dtype, "device": device}
    module.register_parameter(f"weight_ih{suffix}",
                              Parameter(creation.empty(rows, input_size, **factory)))
    module.register_parameter(f"weight_hh{suffix}",
                              Parameter(creation.empty(rows, hidden_size, **factory)))
    for name in (f"bias_ih{suffix}", f"bias_hh{suffix}"):
        module.register_parameter(name, Parameter(creation.empty(rows, **factory))
                                  if bias else None)


def _reset_uniform(module):
    """PyTorch's initialisation: every weight and bias uniform in ``±1/sqrt(hidden_size)``."""
    bound = 1.0 / math.sqrt(module.hidden_size)
    for parameter in module.parameters():
        init.uniform_(parameter, -bound, bound)


def _check_input(name, input, dims, input_size, parameter):
    """Refuse a non-tensor, a non-float, a dtype or device other than the parameters', a wrong
    number of dims or a wrong feature size, naming the layer and what it got."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
    if input.dtype.kind != "f":
        raise TypeError(f"{name}: input must be floating point, got dtype {input.dtype}")
    if input.dtype != parameter.dtype:
        raise TypeError(f"{name}: input has dtype {input.dtype} but the parameters have dtype "
                        f"{parameter.dtype} (convert one with .to())")
    if input.device != parameter.device:
        raise RuntimeError(f"{name}: input is on {input.device} but the parameters are on "
                           f"{parameter.device}")
    if input.ndim not in dims:
        raise ValueError(f"{name}: expected input with {' or '.join(map(str, dims))} dims, got "
                         f"shape {input.shape}")
    if input.shape[-1] != input_size:
        raise ValueError(f"{name}: expected input of size {input_size} in the last dim, got "
                         f"shape {input.shape}")


def _check_state(name, label, state, expected_shape, parameter):
    if not isinstance(state, Tensor):
        raise TypeError(f"{name}: {label} must be a Tensor, got {type(state).__name__}")
    if state.shape != expected_shape:
        raise ValueError(f"{name}: expected {label} of shape {expected_shape}, got {state.shape}")
    if state.dtype != parameter.dtype or state.device != parameter.device:
        raise TypeError(f"{name}: {label} has dtype {state.dtype} on {state.device} but the "
                        f"parameters have dtype {parameter.dtype} on {parameter.device}")


def _state_tuple(name, hx, state_count):
    """The user's ``hx`` (h, or (h, c) for an LSTM) as a tuple of state tensors."""
    if state_count == 1:
        return (hx,)
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"{name}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
    return tuple(hx)


def _state_labels(state_count):
    return ("hx",) if state_count == 1 else ("h_0", "c_0")


# ----------------------------------------------------------------------------- cells


class RNNCellBase(Module):
    """What the three cells share: parameters ``weight_ih`` (G*H, input_size), ``weight_hh``
    (G*H, H), ``bias_ih`` and ``bias_hh`` (G*H) with G gates per unit, initialisation, checks
    and one step. ``mode`` is one of ``"RNN_TANH"``, ``"RNN_RELU"``, ``"LSTM"``, ``"GRU"``; use
    the subclasses, which take PyTorch's arguments.

    >>> import tinynlm as tn
    >>> tn.nn.GRUCell(2, 3).weight_hh.shape                      # (3 gates * 3, 3)
    (9, 3)
    """

    def __init__(self, mode, input_size, hidden_size, bias, device, dtype):
        super().__init__()
        _check_sizes(type(self).__name__, input_size, hidden_size)
        self.mode = mode
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        _register_weights(self, "", input_size, hidden_size, _RECURRENCES[mode].gate_count, bias,
                          dtype, device)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_uniform(self)

    def _step(self, input, hx):
        """One step for input (B, input_size) or (input_size,); returns the state tuple."""
        name, recurrence = type(self).__name__, _RECURRENCES[self.mode]
        _check_input(name, input, (1, 2), self.input_size, self.weight_ih)
        batched = input.ndim == 2
        if not batched:
            input = input.unsqueeze(0)                                   # (1, input_size)
        batch_size = input.shape[0]
        if hx is None:
            zeros = creation.zeros(batch_size, self.hidden_size, dtype=input.dtype,
                                   device=input.device)
            state = (zeros,) * recurrence.state_count
        else:
            state = _state_tuple(name, hx, recurrence.state_count)
            expected = (batch_size, self.hidden_size) if batched else (self.hidden_size,)
            for label, tensor in zip(_state_labels(recurrence.state_count), state):
                _check_state(name, label, tensor, expected, self.weight_ih)
            if not batched:
                state = tuple(tensor.unsqueeze(0) for tensor in state)   # (1, H)
        projected_input = F.linear(input, self.weight_ih, self.bias_ih)        # (B, G*H)
        projected_hidden = F.linear(state[0], self.weight_hh, self.bias_hh)    # (B, G*H)
        state = recurrence.step(projected_input, projected_hidden, state)
        return state if batched else tuple(tensor.squeeze(0) for tensor in state)

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            text += ", bias=False"
        if self.mode == "RNN_RELU":
            text += ", nonlinearity='relu'"
        return text


class RNNCell(RNNCellBase):
    """One step of an Elman RNN: ``h' = tanh(x @ weight_ih.T + bias_ih + h @ weight_hh.T +
    bias_hh)`` (or ReLU). Input (B, input_size) or (input_size,); ``hx`` defaults to zeros.

    >>> import tinynlm as tn
    >>> cell = tn.nn.RNNCell(3, 5)
    >>> cell(tn.randn(2, 3)).shape, cell.weight_hh.shape
    ((2, 5), (5, 5))
    """

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None,
                 dtype=None):
        if nonlinearity not in _RNN_MODES:
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got "
                             f"{nonlinearity!r}")
        super().__init__(_RNN_MODES[nonlinearity], input_size, hidden_size, bias, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        return self._step(input, hx)[0]


class LSTMCell(RNNCellBase):
    """One LSTM step; ``hx`` is ``(h, c)`` (zeros by default) and the result is ``(h', c')``.
    Gates in PyTorch's order i, f, g, o: ``weight_ih`` is (4 * hidden_size, input_size).

    >>> import tinynlm as tn
    >>> h, c = tn.nn.LSTMCell(3, 5)(tn.randn(2, 3))
    >>> h.shape, c.shape
    ((2, 5), (2, 5))
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, bias, device, dtype)

    def forward(self, input, hx=None):
        return self._step(input, hx)


class GRUCell(RNNCellBase):
    """One GRU step; gates in PyTorch's order r, z, n: ``weight_ih`` is
    (3 * hidden_size, input_size).

    >>> import tinynlm as tn
    >>> tn.nn.GRUCell(3, 5)(tn.randn(3), tn.zeros(5)).shape
    (5,)
    """

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, bias, device, dtype)

    def forward(self, input, hx=None):
        return self._step(input, hx)[0]


# ----------------------------------------------------------------------------- layers


def _run_direction(recurrence, layer_input, state, weights, reverse, step_masks):
    """One layer in one direction over the whole sequence.

    ``layer_input`` is (T, B, input); ``state`` the initial state tuple, each (B, H);
    ``weights`` (weight_ih, weight_hh, bias_ih, bias_hh); ``step_masks[t]`` a (B, 1) bool tensor
    of the sequences that have a step ``t``, or None when all do. Returns the outputs (T, B, H)
    and the final state tuple.
    """
    weight_ih, weight_hh, bias_ih, bias_hh = weights
    steps, batch_size, _ = layer_input.shape
    input_bias, hidden_bias = bias_ih, bias_hh
    if bias_ih is not None and not recurrence.hidden_bias_in_step:
        input_bias, hidden_bias = bias_ih + bias_hh, None  # one bias add for all the steps
    # sizes spelled out, not -1, so that a batch of 0 sequences works too
    projected = F.linear(layer_input.reshape(steps * batch_size, layer_input.shape[2]),
                         weight_ih, input_bias)                           # (T*B, G*H)
    projected = projected.reshape(steps, batch_size, projected.shape[1])  # (T, B, G*H)
    if step_masks is None and fused_kernels_enabled() and projected.dtype.name in _FUSED_DTYPES:
        return _run_fused(recurrence, projected, state, weight_hh, hidden_bias, reverse)
    return _run_steps(recurrence, projected, state, weight_hh, hidden_bias, reverse,
                      step_masks)


_FUSED_DTYPES = ("float32", "float64")  # the compiled loops' dtypes; float16 runs composed


def _run_fused(recurrence, projected, state, weight_hh, hidden_bias, reverse):
    """:func:`_run_steps` as one op (see ``tinynlm.ops.recurrence``)."""
    mode = next(name for name, known in _RECURRENCES.items() if known is recurrence)
    extra = ()
    if recurrence.hidden_bias_in_step:  # a GRU: b_hn is multiplied by the reset gate
        extra = (hidden_bias if hidden_bias is not None else
                 creation.zeros(weight_hh.shape[0], dtype=weight_hh.dtype,
                                device=weight_hh.device),)
    count = len(state)

    def reference(projected, *rest):
        states, (weight, *bias) = rest[:count], rest[count:]
        output, final = _run_steps(recurrence, projected, states, weight,
                                   bias[0] if bias else None, reverse, None)
        return (output, *final)

    results = Recurrence(mode, reverse, reference)(projected, *state, weight_hh, *extra)
    return results[0], tuple(results[1:])


def _run_steps(recurrence, projected, state, weight_hh, hidden_bias, reverse, step_masks):
    """The loop over time in core ops: ``projected`` (T, B, G*H) -> outputs (T, B, H) and the
    final state tuple."""
    steps, batch_size, _ = projected.shape
    projected_steps = ops.unbind(projected, 0)                            # T x (B, G*H)
    weight_hh_t = weight_hh.mT                                            # (H, G*H)
    outputs = [None] * steps
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        projected_hidden = state[0] @ weight_hh_t                         # (B, G*H)
        if hidden_bias is not None:
            projected_hidden = projected_hidden + hidden_bias
        new_state = recurrence.step(projected_steps[t], projected_hidden, state)
        if step_masks is not None and step_masks[t] is not None:
            new_state = tuple(ops.where(step_masks[t], new, old)
                              for new, old in zip(new_state, state))
        state = new_state
        outputs[t] = state[0]
    return ops.stack(outputs), state                                      # (T, B, H)


def _step_masks(lengths, steps, device):
    """For each step t, a (B, 1) bool tensor of ``t < lengths``, or None where every sequence
    has a step t."""
    alive = np.arange(steps)[:, None] < np.asarray(lengths)[None, :]      # (T, B)
    return [None if row.all() else creation.tensor(row[:, None], device=device) for row in alive]


class RNNBase(Module):
    """What RNN, LSTM and GRU share: ``num_layers`` stacked layers, each one or two directions,
    with parameters ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``
    (and ``..._reverse`` for the backward direction).

    ``mode`` is one of ``"RNN_TANH"``, ``"RNN_RELU"``, ``"LSTM"``, ``"GRU"``; use the
    subclasses, which take PyTorch's arguments.

    >>> import tinynlm as tn
    >>> gru = tn.nn.GRU(2, 3, num_layers=2, bidirectional=True)
    >>> gru.weight_ih_l1_reverse.shape                           # (3 gates * 3, 2 * 3)
    (9, 6)
    """

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        _check_sizes(name, input_size, hidden_size)
        if mode not in _RECURRENCES:
            raise ValueError(f"{name}: unknown mode {mode!r}; expected one of "
                             f"{', '.join(_RECURRENCES)}")
        if not isinstance(num_layers, (int, np.integer)) or num_layers < 1:
            raise ValueError(f"{name}: num_layers must be a positive int, got {num_layers!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout must be a number in [0, 1], got {dropout!r}")
        if proj_size:
            raise NotImplementedError(f"{name}: proj_size={proj_size} (LSTM projections) is not "
                                      "supported; use proj_size=0")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"{name}: dropout is applied between recurrent layers, so dropout="
                          f"{dropout} does nothing with num_layers=1", stacklevel=2)
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bias, batch_first
        self.dropout, self.bidirectional = float(dropout), bidirectional
        self.proj_size = 0
        gate_count = _RECURRENCES[mode].gate_count
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else hidden_size * self._directions
            for direction in range(self._directions):
                _register_weights(self, self._suffix(layer, direction), layer_input_size,
                                  hidden_size, gate_count, bias, dtype, device)
        self.reset_parameters()

    @property
    def _directions(self):
        return 2 if self.bidirectional else 1

    @staticmethod
    def _suffix(layer, direction):
        return f"_l{layer}" + ("_reverse" if direction else "")

    def reset_parameters(self):
        _reset_uniform(self)

    def flatten_parameters(self):
        """Does nothing: kept so PyTorch code that calls it runs unchanged."""

    def _weights(self, layer, direction):
        suffix = self._suffix(layer, direction)
        return tuple(getattr(self, f"{kind}{suffix}")
                     for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def forward(self, input, hx=None):
        """Run the whole sequence. ``input`` is (T, B, input_size) ((B, T, input_size) with
        ``batch_first``), (T, input_size) for one unbatched sequence, or a PackedSequence.
        ``hx`` (zeros by default) is (num_layers * num_directions, B, H) ((h_0, c_0) for an
        LSTM; without the B dim for unbatched input). Returns ``output, h_n`` (``output,
        (h_n, c_n)`` for an LSTM), output being (T, B, num_directions * H) (batch first with
        ``batch_first``) or a PackedSequence like the input."""
        name, recurrence = type(self).__name__, _RECURRENCES[self.mode]
        packed = input if isinstance(input, PackedSequence) else None
        lengths = None
        if packed is not None:
            input, lengths = pad_packed_sequence(packed)                  # (T, B, input_size)
            _check_input(name, input, (3,), self.input_size, self.weight_ih_l0)
            lengths = lengths.numpy()
        else:
            _check_input(name, input, (2, 3), self.input_size, self.weight_ih_l0)
        batched = input.ndim == 3
        if not batched:
            input = input.unsqueeze(1)                                    # (T, 1, input_size)
        elif self.batch_first and packed is None:
            input = input.transpose(0, 1)                                 # (T, B, input_size)
        if input.shape[0] == 0:
            raise ValueError(f"{name}: expected a sequence of at least one step, got input of "
                             f"shape {input.shape}")
        initial_states = self._initial_states(hx, input.shape[1], batched)
        output, final_state = self._run_layers(input, initial_states, lengths)
        if packed is not None:
            output = pack_padded_like(output, packed)
        elif not batched:
            output = output.squeeze(1)                                    # (T, D*H)
            final_state = tuple(tensor.squeeze(1) for tensor in final_state)
        elif self.batch_first:
            output = output.transpose(0, 1)                               # (B, T, D*H)
        return output, (final_state[0] if recurrence.state_count == 1 else final_state)

    def _initial_states(self, hx, batch_size, batched):
        """One initial state tuple per layer and direction, each tensor (B, H)."""
        name, recurrence = type(self).__name__, _RECURRENCES[self.mode]
        layer_count = self.num_layers * self._directions
        parameter = self.weight_ih_l0
        if hx is None:
            zeros = creation.zeros(batch_size, self.hidden_size, dtype=parameter.dtype,
                                   device=parameter.device)
            return [(zeros,) * recurrence.state_count] * layer_count
        state = _state_tuple(name, hx, recurrence.state_count)
        expected = (layer_count, batch_size, self.hidden_size) if batched \
            else (layer_count, self.hidden_size)
        for label, tensor in zip(_state_labels(recurrence.state_count), state):
            _check_state(name, label, tensor, expected, parameter)
        if not batched:
            state = tuple(tensor.unsqueeze(1) for tensor in state)        # (L*D, 1, H)
        return [tuple(tensor[index] for tensor in state) for index in range(layer_count)]

    def _run_layers(self, input, initial_states, lengths):
        """input (T, B, input_size) -> output (T, B, D*H) and the final state tuple, each
        (L*D, B, H)."""
        recurrence = _RECURRENCES[self.mode]
        step_masks = None if lengths is None else _step_masks(lengths, input.shape[0],
                                                                input.device)
        layer_input, final_states = input, []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self._directions):
                output, final = _run_direction(
                    recurrence, layer_input, initial_states[layer * self._directions + direction],
                    self._weights(layer, direction), direction == 1, step_masks)
                outputs.append(output)
                final_states.append(final)
            layer_input = outputs[0] if len(outputs) == 1 else ops.cat(outputs, 2)  # (T, B, D*H)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                layer_input = ops.dropout(layer_input, self.dropout)
        return layer_input, tuple(ops.stack([final[k] for final in final_states])
                                  for k in range(recurrence.state_count))

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if self.mode == "RNN_RELU":
            text += ", nonlinearity='relu'"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        return text


class RNN(RNNBase):
    """A multi-layer Elman RNN, ``h_t = tanh(x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh)``
    (or ReLU), with PyTorch's arguments; returns ``output, h_n``.

    >>> import tinynlm as tn
    >>> rnn = tn.nn.RNN(4, 8, num_layers=2, bidirectional=True)
    >>> output, h_n = rnn(tn.randn(5, 3, 4))                   # (T, B, input_size)
    >>> output.shape, h_n.shape
    ((5, 3, 16), (4, 3, 8))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None):
        if nonlinearity not in _RNN_MODES:
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(_RNN_MODES[nonlinearity], input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """A multi-layer LSTM with PyTorch's arguments and gate order (i, f, g, o); returns
    ``output, (h_n, c_n)``. ``proj_size`` other than 0 is not supported.

    >>> import tinynlm as tn
    >>> lstm = tn.nn.LSTM(4, 8, batch_first=True)
    >>> output, (h_n, c_n) = lstm(tn.randn(3, 5, 4))            # (B, T, input_size)
    >>> output.shape, h_n.shape, lstm.weight_ih_l0.shape
    ((3, 5, 8), (1, 3, 8), (32, 4))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype)


class GRU(RNNBase):
    """A multi-layer GRU with PyTorch's arguments and gate order (r, z, n); returns
    ``output, h_n``.

    >>> import tinynlm as tn
    >>> output, h_n = tn.nn.GRU(4, 8)(tn.randn(5, 4))           # one unbatched sequence
    >>> output.shape, h_n.shape
    ((5, 8), (1, 8))
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)
