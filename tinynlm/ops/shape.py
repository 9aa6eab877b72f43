"""Ops that move elements around without arithmetic: reshaping, transposing, broadcasting,
joining and splitting, indexing, gathering and triangular masks."""

from __future__ import annotations

import builtins
import numbers

import numpy as np

from .. import backend, dtypes
from ..autograd import Function
from ..tensor import Tensor, _normalize_dim
from .common import sum_to


def _sizes(args, op_name):
    """Accept ``f(2, 3)`` and ``f((2, 3))`` alike."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    if not builtins.all(isinstance(size, numbers.Integral) for size in args):
        raise TypeError(f"{op_name}: sizes must be integers, got {args}")
    return tuple(int(size) for size in args)


# ----------------------------------------------------------------------------- views


class Reshape(Function):
    returns_view = True

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.input_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, grad):
        return reshape(grad, self.input_shape)


def reshape(x, *shape):
    """The same elements in a new shape (one size may be -1); a view when possible.

    >>> import tinynlm as tn
    >>> tn.arange(6).reshape(2, -1).shape
    (2, 3)
    """
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if shape == x.shape:
        return x
    try:
        return Reshape(shape)(x)
    except (ValueError, TypeError):
        raise RuntimeError(f"reshape: cannot reshape a tensor of shape {x.shape} "
                           f"({x.numel()} elements) into {shape}") from None


def view(x, *shape):
    """Like :func:`reshape`. NumPy decides whether the result shares memory: unlike PyTorch,
    a shape that a non-contiguous tensor cannot be viewed as gives a copy, not an error."""
    return reshape(x, *shape)


def flatten(x, start_dim=0, end_dim=-1):
    """Merge dims ``start_dim`` to ``end_dim`` (inclusive) into one."""
    if x.ndim == 0:
        return reshape(x, 1)
    start = _normalize_dim(start_dim, x.ndim, "flatten")
    end = _normalize_dim(end_dim, x.ndim, "flatten")
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    return reshape(x, x.shape[:start] + (-1,) + x.shape[end + 1:])


class Permute(Function):
    returns_view = True

    def __init__(self, dims):
        self.dims = dims

    def forward(self, x):
        return x.transpose(self.dims)

    def backward(self, grad):
        inverse = [0] * len(self.dims)
        for position, dim in enumerate(self.dims):
            inverse[dim] = position
        return Permute(tuple(inverse))(grad)


def permute(x, *dims):
    """Reorder the dims: ``x.permute(2, 0, 1)``."""
    dims = _sizes(dims, "permute")
    ndim = x.ndim
    normalized = tuple(_normalize_dim(d, ndim, "permute") for d in dims)
    if sorted(normalized) != list(range(ndim)):
        raise ValueError(f"permute: {dims} is not a permutation of the {ndim} dims of a tensor "
                         f"of shape {x.shape}")
    if normalized == tuple(range(ndim)):
        return x
    return Permute(normalized)(x)


def transpose(x, dim0, dim1):
    """Swap two dims."""
    ndim = x.ndim
    dim0, dim1 = _normalize_dim(dim0, ndim, "transpose"), _normalize_dim(dim1, ndim, "transpose")
    if dim0 == dim1:
        return x
    order = list(range(ndim))
    order[dim0], order[dim1] = dim1, dim0
    return Permute(tuple(order))(x)


class Expand(Function):
    returns_view = True

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.input_shape = x.shape
        if self.xp is np and x.flags.c_contiguous and x.size:
            return _broadcast_view(x, self.shape)
        return self.xp.broadcast_to(x, self.shape)

    def backward(self, grad):
        return sum_to(grad, self.input_shape)


def _broadcast_view(array, shape):
    """``np.broadcast_to(array, shape)`` for a C-contiguous NumPy array whose shape broadcasts
    to ``shape``, without its checks (twice as fast on small arrays): a read-only view with
    stride 0 along the broadcast dims."""
    strides = (0,) * (len(shape) - array.ndim) + tuple(
        0 if size == 1 else stride for size, stride in zip(array.shape, array.strides))
    view = np.ndarray(shape, array.dtype, array, 0, strides)
    view.flags.writeable = False
    return view


def expand(x, *sizes):
    """Broadcast to a larger shape without copying (-1 keeps a size)."""
    sizes = _sizes(sizes, "expand")
    lead = len(sizes) - x.ndim
    if lead < 0:
        raise RuntimeError(f"expand: cannot expand shape {x.shape} to fewer dims {sizes}")
    shape = tuple(x.shape[i - lead] if size == -1 and i >= lead else size
                  for i, size in enumerate(sizes))
    for i, size in enumerate(x.shape):
        if size != 1 and size != shape[lead + i]:
            raise RuntimeError(f"expand: cannot expand shape {x.shape} to {sizes}")
    if shape == x.shape:
        return x
    return Expand(shape)(x)


def unsqueeze(x, dim):
    """Insert a dim of size 1 at ``dim``."""
    dim = _normalize_dim(dim, x.ndim + 1, "unsqueeze")
    return reshape(x, x.shape[:dim] + (1,) + x.shape[dim:])


def squeeze(x, dim=None):
    """Remove dims of size 1 (only those in ``dim`` when given; others are left alone)."""
    if dim is None:
        dims = [i for i, size in enumerate(x.shape) if size == 1]
    else:
        dims = [dim] if isinstance(dim, (int, np.integer)) else list(dim)
        dims = [_normalize_dim(d, x.ndim, "squeeze") for d in dims]
    return reshape(x, tuple(size for i, size in enumerate(x.shape)
                            if not (i in dims and size == 1)))


# ----------------------------------------------------------------------------- join and split


class Cat(Function):
    def __init__(self, dim):
        self.dim = dim

    def forward(self, *arrays):
        self.sizes = [array.shape[self.dim] for array in arrays]
        return self.xp.concatenate(arrays, axis=self.dim)

    def backward(self, grad):
        grads, start = [], 0
        for position, size in enumerate(self.sizes):
            if self.needs_input_grad(position):
                index = (slice(None),) * self.dim + (slice(start, start + size),)
                grads.append(getitem(grad, index))
            else:
                grads.append(None)
            start += size
        return tuple(grads)


def cat(tensors, dim=0):
    """Join tensors along an existing dim.

    >>> import tinynlm as tn
    >>> tn.cat([tn.ones(2, 3), tn.zeros(1, 3)]).shape
    (3, 3)
    """
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    first = tensors[0]
    dim = _normalize_dim(dim, first.ndim, "cat")
    for other in tensors[1:]:
        if other.ndim != first.ndim or builtins.any(
                a != b for i, (a, b) in enumerate(zip(first.shape, other.shape)) if i != dim):
            raise ValueError(f"cat: tensors must match in every dim except dim {dim}; got shapes "
                             f"{[t.shape for t in tensors]}")
    dtype = first.dtype
    for other in tensors[1:]:
        dtype = dtypes.result_type(dtype, other.dtype)
    return Cat(dim)(*[t.to(dtype) for t in tensors])


def stack(tensors, dim=0):
    """Join same-shaped tensors along a new dim."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    if builtins.any(t.shape != tensors[0].shape for t in tensors):
        raise ValueError(f"stack: all tensors must have the same shape; got "
                         f"{[t.shape for t in tensors]}")
    dim = _normalize_dim(dim, tensors[0].ndim + 1, "stack")
    return cat([unsqueeze(t, dim) for t in tensors], dim)


class Split(Function):
    returns_view = True

    def __init__(self, sizes, dim):
        self.sizes, self.dim = sizes, dim

    def forward(self, x):
        boundaries = np.cumsum(self.sizes[:-1]).tolist()
        return tuple(self.xp.split(x, boundaries, axis=self.dim))

    def backward(self, *grads):
        return cat(grads, self.dim)


def split(x, split_size_or_sections, dim=0):
    """Split into pieces of ``split_size`` (the last may be smaller) or of the given sizes."""
    dim = _normalize_dim(dim, x.ndim, "split")
    length = x.shape[dim]
    if isinstance(split_size_or_sections, numbers.Integral):
        size = int(split_size_or_sections)
        if size <= 0:
            raise ValueError(f"split: split_size must be positive, got {size}")
        sizes = [size] * (length // size) + ([length % size] if length % size else [])
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if builtins.sum(sizes) != length or builtins.any(s < 0 for s in sizes):
            raise ValueError(f"split: sizes {sizes} do not add up to the length {length} of dim "
                             f"{dim}")
    if not sizes:
        sizes = [0]
    return Split(sizes, dim)(x) if len(sizes) > 1 else (x,)


def unbind(x, dim=0):
    """The slices along ``dim``, with that dim removed (one op, so the gradient is one
    concatenation rather than a full-size scatter per slice).

    >>> import tinynlm as tn
    >>> [t.tolist() for t in tn.unbind(tn.tensor([[1, 2], [3, 4]]), dim=1)]
    [[1, 3], [2, 4]]
    """
    dim = _normalize_dim(dim, x.ndim, "unbind")
    return tuple(squeeze(piece, dim) for piece in split(x, 1, dim))


def chunk(x, chunks, dim=0):
    """Split into ``chunks`` nearly equal pieces (fewer when the dim is short), as PyTorch does."""
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be positive, got {chunks}")
    length = x.shape[_normalize_dim(dim, x.ndim, "chunk")]
    return split(x, builtins.max(-(-length // chunks), 1), dim)


# ----------------------------------------------------------------------------- indexing


def array_index(index, device, op_name):
    """A Python index with Tensors inside turned into one NumPy/CuPy can use."""
    parts = index if isinstance(index, tuple) else (index,)
    converted = []
    for part in parts:
        if isinstance(part, Tensor):
            if part.dtype.kind not in "biu":
                raise IndexError(f"{op_name}: tensors used as indices must be integer or bool, "
                                 f"got dtype {part.dtype}")
            if part.device != device:
                raise RuntimeError(f"{op_name}: index is on {part.device} but the tensor is on "
                                   f"{device}")
            part = part.data
        elif isinstance(part, (list, np.ndarray)):
            host = np.asarray(part)
            if host.size == 0:
                host = host.astype(np.int64)  # an empty list selects nothing (it is not float)
            part = backend.move_array(host, device)
            if part.dtype.kind not in "biu":
                raise IndexError(f"{op_name}: arrays used as indices must be integer or bool, "
                                 f"got dtype {part.dtype}")
        converted.append(part)
    return tuple(converted)


def _is_basic(index):
    return builtins.all(part is None or part is Ellipsis or isinstance(part, (slice, numbers.Integral))
                        for part in index)


class GetItem(Function):
    returns_view = True

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.input_shape = x.shape
        return x[self.index]

    def backward(self, grad):
        return IndexAdd(self.input_shape, self.index)(grad)


class IndexAdd(Function):
    """Zeros of ``shape`` with ``values`` added at ``index`` (repeated indices add up)."""

    def __init__(self, shape, index):
        self.shape, self.index = shape, index

    def forward(self, values):
        xp = self.xp
        result = xp.zeros(self.shape, values.dtype)
        if _is_basic(self.index):
            result[self.index] = values
        elif len(self.index) == 1:
            backend.index_add(xp, result, self.index[0], values)
        else:
            # Any mix of basic and advanced indices: find the flat position of every selected
            # element, then add into the flattened result.
            positions = xp.arange(result.size).reshape(self.shape)[self.index]
            backend.index_add(xp, result.reshape(-1), positions.reshape(-1), values.reshape(-1))
        return result

    def backward(self, grad):
        return GetItem(self.index)(grad)


def getitem(x, index):
    """``x[index]`` with ints, slices, None, Ellipsis, integer tensors/arrays and bool masks.

    The gradient scatters back with accumulation, so repeated indices add up.

    >>> import tinynlm as tn
    >>> x = tn.arange(4.0, requires_grad=True)
    >>> x[[0, 0, 3]].sum().backward()
    >>> x.grad.tolist()
    [2.0, 0.0, 0.0, 1.0]
    """
    converted = array_index(index, x.device, "getitem")
    try:
        steps = _integers_first(converted, x.ndim)
        if steps is None:
            return GetItem(converted)(x)
        basic, advanced = steps
        return GetItem(advanced)(GetItem(basic)(x))
    except IndexError as error:
        raise IndexError(f"getitem: {error} (indexing a tensor of shape {x.shape})") from None


def _integers_first(index, ndim):
    """PyTorch applies integer indices before array indices, where NumPy treats an integer beside
    an array as one more array (which can move dims). Split such an index into a basic step
    (integers, slices, None) and an array step, or return None when NumPy's order is PyTorch's."""
    def is_integer(part):
        return isinstance(part, numbers.Integral) and not isinstance(part, bool)

    def is_array(part):
        return not (part is None or part is Ellipsis or isinstance(part, slice) or is_integer(part))

    if not (builtins.any(map(is_integer, index)) and builtins.any(map(is_array, index))):
        return None
    dims_used = [part.ndim if is_array(part) and part.dtype == bool else 1
                 for part in index if part is not None and part is not Ellipsis]
    basic, advanced = [], []
    for part in index:
        if part is Ellipsis:
            fill = [slice(None)] * (ndim - builtins.sum(dims_used))
            basic += fill
            advanced += fill
        elif is_array(part):
            basic += [slice(None)] * (part.ndim if part.dtype == bool else 1)
            advanced.append(part)
        else:
            basic.append(part)
            if not is_integer(part):  # slices and None already applied: keep their dims whole
                advanced.append(slice(None))
    return tuple(basic), tuple(advanced)


class Gather(Function):
    def __init__(self, dim, index):
        self.dim, self.index = dim, index

    def forward(self, x):
        self.input_shape = x.shape
        trimmed = x[tuple(slice(None) if d == self.dim else slice(0, size)
                          for d, size in enumerate(self.index.shape))]
        return self.xp.take_along_axis(trimmed, self.index, axis=self.dim)

    def backward(self, grad):
        return ScatterAdd(self.input_shape, self.dim, self.index)(grad)


class ScatterAdd(Function):
    """Zeros of ``shape`` with ``values[i][j]`` added at ``[index[i][j]][j]`` along ``dim``."""

    def __init__(self, shape, dim, index):
        self.shape, self.dim, self.index = shape, dim, index

    def forward(self, values):
        xp = self.xp
        result = xp.zeros(self.shape, values.dtype)
        grid = list(xp.ogrid[tuple(slice(0, size) for size in self.index.shape)])
        grid[self.dim] = self.index
        backend.index_add(xp, result, tuple(grid), values)
        return result

    def backward(self, grad):
        return Gather(self.dim, self.index)(grad)


def gather(x, dim, index):
    """Pick ``x[..., index[i, j], ...]`` along ``dim`` (PyTorch's ``torch.gather``)."""
    dim = _normalize_dim(dim, x.ndim, "gather")
    if not isinstance(index, Tensor) or index.dtype.kind not in "iu":
        raise TypeError(f"gather: index must be an integer tensor, got "
                        f"{getattr(index, 'dtype', type(index).__name__)}")
    if index.ndim != x.ndim or builtins.any(
            i != dim and index.shape[i] > x.shape[i] for i in range(x.ndim)):
        raise ValueError(f"gather: index of shape {index.shape} does not fit input of shape "
                         f"{x.shape} along dim {dim}")
    if index.device != x.device:
        raise RuntimeError(f"gather: index is on {index.device} but the input is on {x.device}")
    if index.numel() and (int(index.data.min()) < 0 or int(index.data.max()) >= x.shape[dim]):
        raise IndexError(f"gather: index out of range for dim {dim} of size {x.shape[dim]} "
                         f"(indices must be in [0, {x.shape[dim]}))")
    return Gather(dim, index.data)(x)


def index_select(x, dim, index):
    """Rows (or columns, ...) of ``x`` along ``dim`` picked by a 1-D integer tensor."""
    dim = _normalize_dim(dim, x.ndim, "index_select")
    if not isinstance(index, Tensor) or index.ndim > 1 or index.dtype.kind not in "iu":
        raise TypeError("index_select: index must be a 0-D or 1-D integer tensor")
    return getitem(x, (slice(None),) * dim + (index.reshape(-1),))


class Triangle(Function):
    def __init__(self, upper, diagonal):
        self.upper, self.diagonal = upper, diagonal

    def forward(self, x):
        return (self.xp.triu if self.upper else self.xp.tril)(x, self.diagonal)

    def backward(self, grad):
        return Triangle(self.upper, self.diagonal)(grad)


def tril(x, diagonal=0):
    """Keep the lower triangle of the last two dims (on and below ``diagonal``), zero the rest.

    >>> import tinynlm as tn
    >>> tn.tril(tn.ones(2, 2, dtype=tn.bool)).tolist()
    [[True, False], [True, True]]
    """
    if x.ndim < 2:
        raise ValueError(f"tril: needs at least 2 dims, got shape {x.shape}")
    return Triangle(False, diagonal)(x)


def triu(x, diagonal=0):
    """Keep the upper triangle of the last two dims (on and above ``diagonal``), zero the rest."""
    if x.ndim < 2:
        raise ValueError(f"triu: needs at least 2 dims, got shape {x.shape}")
    return Triangle(True, diagonal)(x)
