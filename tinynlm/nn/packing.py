"""Variable-length batches for the recurrent layers, with PyTorch's API (``torch.nn.utils.rnn``):
:class:`PackedSequence`, :func:`pack_padded_sequence` and :func:`pad_packed_sequence`.

A packed sequence keeps only the real steps of a batch, time step after time step: the rows of
step 0 for every sequence, then the rows of step 1 for the sequences that are that long, and so
on, with the sequences in order of decreasing length. ``batch_sizes[t]`` says how many sequences
have a step ``t``. ``sorted_indices`` maps that order back to the caller's batch order and
``unsorted_indices`` is its inverse (both None when the caller's batch was already sorted).

Packing and unpacking are index lookups, so gradients flow through both.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from .. import creation, ops
from ..ops.common import scalar_tensor
from ..tensor import Tensor


class PackedSequence(NamedTuple):
    """The real steps of a variable-length batch; build one with :func:`pack_padded_sequence`.

    ``data`` is (sum of lengths, *features); ``batch_sizes`` is an int64 CPU tensor with the
    number of sequences alive at each step; ``sorted_indices`` and ``unsorted_indices`` (int64,
    or None) convert between the caller's batch order and the order of decreasing length.

    >>> import tinynlm as tn
    >>> padded = tn.arange(6.0).reshape(3, 2)             # (T=3, B=2): columns are sequences
    >>> packed = tn.nn.pack_padded_sequence(padded, [3, 1])
    >>> packed.data.tolist(), packed.batch_sizes.tolist()
    ([0.0, 1.0, 2.0, 4.0], [2, 1, 1])
    """

    data: Tensor
    batch_sizes: Tensor
    sorted_indices: Optional[Tensor] = None
    unsorted_indices: Optional[Tensor] = None


def _host_lengths(lengths, batch_size, max_steps):
    """``lengths`` (a list, array or integer tensor) as a checked 1-D int64 NumPy array."""
    if isinstance(lengths, Tensor):
        if lengths.dtype.kind not in "iu":
            raise TypeError(f"pack_padded_sequence: lengths must be integers, got dtype "
                            f"{lengths.dtype}")
        lengths = lengths.tolist()
    host = np.asarray(lengths)
    if host.ndim != 1 or (host.size and host.dtype.kind not in "iu"):
        raise TypeError(f"pack_padded_sequence: lengths must be a 1-D sequence of integers, got "
                        f"{lengths!r}")
    host = host.astype(np.int64)
    if host.shape[0] != batch_size:
        raise ValueError(f"pack_padded_sequence: got {host.shape[0]} lengths for a batch of "
                         f"{batch_size} sequences")
    if host.size and (host.min() <= 0 or host.max() > max_steps):
        raise ValueError(f"pack_padded_sequence: every length must be in [1, {max_steps}] (the "
                         f"padded number of steps), got {host.tolist()}")
    return host


def _packed_positions(batch_sizes, sorted_indices):
    """The (time step, batch index) of every packed row, as two NumPy arrays; ``batch_sizes``
    and ``sorted_indices`` are host arrays (``sorted_indices`` None for the identity)."""
    order = np.arange(batch_sizes[0]) if sorted_indices is None else sorted_indices
    time_index = np.repeat(np.arange(len(batch_sizes)), batch_sizes)
    batch_index = np.concatenate([order[:size] for size in batch_sizes])
    return time_index, batch_index


def _host(tensor):
    return None if tensor is None else np.asarray(tensor.tolist(), dtype=np.int64)


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """Pack a padded batch (T, B, *) (or (B, T, *) with ``batch_first``) whose sequence ``b``
    has ``lengths[b]`` real steps. With ``enforce_sorted`` the lengths must already decrease;
    otherwise the batch is sorted here and the order kept in the result.

    >>> import tinynlm as tn
    >>> padded = tn.tensor([[1.0, 0.0], [2.0, 3.0]])      # (B=2, T=2), batch_first
    >>> packed = tn.nn.pack_padded_sequence(padded, [1, 2], batch_first=True,
    ...                                     enforce_sorted=False)
    >>> packed.data.tolist(), packed.sorted_indices.tolist()
    ([2.0, 1.0, 3.0], [1, 0])
    """
    if not isinstance(input, Tensor) or input.ndim < 2:
        raise ValueError(f"pack_padded_sequence: input must be a tensor with at least 2 dims "
                         f"({'(B, T, *)' if batch_first else '(T, B, *)'}), got "
                         f"{getattr(input, 'shape', type(input).__name__)}")
    batch_size, max_steps = (input.shape[0], input.shape[1]) if batch_first \
        else (input.shape[1], input.shape[0])
    host_lengths = _host_lengths(lengths, batch_size, max_steps)
    if batch_size == 0:
        raise ValueError("pack_padded_sequence: cannot pack an empty batch")
    if enforce_sorted:
        if np.any(np.diff(host_lengths) > 0):
            raise ValueError(f"pack_padded_sequence: lengths {host_lengths.tolist()} must be "
                             "sorted in decreasing order when enforce_sorted=True (pass "
                             "enforce_sorted=False to pack an unsorted batch)")
        sorted_indices = unsorted_indices = None
    else:
        sorted_indices = np.argsort(-host_lengths, kind="stable")
        unsorted_indices = np.empty_like(sorted_indices)
        unsorted_indices[sorted_indices] = np.arange(batch_size)
    # batch_sizes[t]: how many sequences have a step t
    batch_sizes = (host_lengths[None, :] > np.arange(host_lengths.max())[:, None]).sum(1)
    time_index, batch_index = _packed_positions(batch_sizes, sorted_indices)
    data = input[batch_index, time_index] if batch_first else input[time_index, batch_index]

    def as_indices(array):
        return None if array is None else creation.tensor(array, device=input.device)

    return PackedSequence(data, creation.tensor(batch_sizes.astype(np.int64)),
                          as_indices(sorted_indices), as_indices(unsorted_indices))


def pack_padded_like(padded, template):
    """Pack a time-major padded tensor (T, B, *) at the positions of the PackedSequence
    ``template`` (same batch order, same lengths): how a recurrent layer packs its output.

    >>> import tinynlm as tn
    >>> template = tn.nn.pack_padded_sequence(tn.zeros(2, 2), [2, 1])
    >>> pack_padded_like(tn.tensor([[1.0, 2.0], [3.0, 4.0]]), template).data.tolist()
    [1.0, 2.0, 3.0]
    """
    batch_sizes = _host(template.batch_sizes)
    time_index, batch_index = _packed_positions(batch_sizes, _host(template.sorted_indices))
    return PackedSequence(padded[time_index, batch_index], template.batch_sizes,
                          template.sorted_indices, template.unsorted_indices)


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """Undo :func:`pack_padded_sequence`: a padded tensor (T, B, *) (or (B, T, *) with
    ``batch_first``) in the caller's batch order, with ``padding_value`` after each sequence's
    end, and the lengths as an int64 tensor. ``total_length`` pads to that many steps.

    >>> import tinynlm as tn
    >>> packed = tn.nn.pack_padded_sequence(tn.tensor([[1.0, 2.0], [3.0, 4.0]]), [2, 1])
    >>> padded, lengths = tn.nn.pad_packed_sequence(packed, padding_value=-1.0)
    >>> padded.tolist(), lengths.tolist()
    ([[1.0, 2.0], [3.0, -1.0]], [2, 1])
    """
    if not isinstance(sequence, PackedSequence):
        raise TypeError(f"pad_packed_sequence: expected a PackedSequence, got "
                        f"{type(sequence).__name__}")
    data = sequence.data
    batch_sizes = _host(sequence.batch_sizes)
    max_steps, batch_size = len(batch_sizes), int(batch_sizes[0])
    steps = max_steps if total_length is None else int(total_length)
    if steps < max_steps:
        raise ValueError(f"pad_packed_sequence: total_length {total_length} is shorter than the "
                         f"longest sequence ({max_steps} steps)")
    unsorted_indices = _host(sequence.unsorted_indices)
    # The position of each of the caller's sequences in the order of decreasing length.
    sorted_position = np.arange(batch_size) if unsorted_indices is None else unsorted_indices
    step_sizes = np.concatenate([batch_sizes, np.zeros(steps - max_steps, np.int64)])
    first_row = np.concatenate([[0], np.cumsum(step_sizes)[:-1]])       # of each step, (T,)
    is_real = sorted_position[None, :] < step_sizes[:, None]             # (T, B)
    rows = np.where(is_real, first_row[:, None] + sorted_position[None, :], 0)  # (T, B)
    padded = data[rows]                                                  # (T, B, *)
    feature_dims = (1,) * (data.ndim - 1)
    real = creation.tensor(is_real.reshape(is_real.shape + feature_dims), device=data.device)
    padded = ops.where(real, padded, scalar_tensor(padding_value, data.dtype, data.device))
    if batch_first:
        padded = padded.transpose(0, 1)                                  # (B, T, *)
    lengths = (batch_sizes[:, None] > np.arange(batch_size)[None, :]).sum(0)[sorted_position]
    return padded, creation.tensor(lengths.astype(np.int64))
