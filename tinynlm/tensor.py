"""The Tensor: an array (NumPy on the CPU, CuPy on CUDA) plus what autograd needs.

Every method that computes something forwards to a function in :mod:`tinynlm.ops`, where the op
and its gradient are defined once for both devices.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import backend, dtypes


class Tensor:
    """A multi-dimensional array with reverse-mode automatic differentiation.

    Make one with :func:`tinynlm.tensor` or the other creation functions. ``data`` is the
    underlying NumPy/CuPy array (shared, not copied); ``grad`` is a Tensor or None.

    >>> import tinynlm as tn
    >>> x = tn.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    >>> y = (x * x).sum()
    >>> y.backward()
    >>> x.grad.tolist()
    [[2.0, 4.0], [6.0, 8.0]]
    """

    __slots__ = ("data", "device", "grad", "grad_fn", "output_index", "_requires_grad",
                 "_version", "__weakref__")
    __array_priority__ = 1000  # so `ndarray * tensor` calls Tensor.__rmul__

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        from .creation import as_array

        array, device = as_array(data, dtype, device)
        self._set(array, device)
        self.requires_grad = requires_grad

    def _set(self, array, device, grad_fn=None, output_index=0, version=None):
        self.data = array
        self.device = device
        self.grad = None
        self.grad_fn = grad_fn
        self.output_index = output_index
        self._requires_grad = grad_fn is not None
        # A one-element list counting in-place changes, shared by tensors that share memory
        # (views, detach()), so backward can spot saved values that changed under it.
        self._version = [0] if version is None else version

    @classmethod
    def _make(cls, array, device, grad_fn=None, output_index=0, version=None):
        """Wrap an array without any checks (for ops, which already checked)."""
        if type(array) is not np.ndarray and isinstance(array, np.generic):
            array = np.asarray(array)  # NumPy returns scalars for 0-d results; keep arrays
        tensor = cls.__new__(cls)
        tensor._set(array, device, grad_fn, output_index, version)
        return tensor

    # ------------------------------------------------------------------ attributes
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def xp(self):
        """The array module of this tensor: numpy or cupy."""
        return backend.array_module(self.device)

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        flag = bool(flag)
        if flag and self.grad_fn is None and not dtypes.is_floating(self.dtype):
            raise RuntimeError(f"requires_grad: only floating point tensors can require gradients, "
                               f"got dtype {self.dtype}")
        if not flag and self.grad_fn is not None:
            raise RuntimeError("requires_grad: cannot turn off requires_grad on a non-leaf tensor; "
                               "use detach() instead")
        self._requires_grad = flag

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` in place and return self."""
        self.requires_grad = requires_grad
        return self

    def size(self, dim=None):
        """The shape, or the length of one dimension."""
        if dim is None:
            return self.shape
        return self.shape[_normalize_dim(dim, self.ndim, "size")]

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return int(self.data.size)

    def element_size(self) -> int:
        return self.dtype.itemsize

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    # ------------------------------------------------------------------ conversion
    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (shared on the CPU, copied from a GPU).

        Raises for a tensor that requires grad, as PyTorch does; use ``detach().numpy()``.
        """
        if self.requires_grad:
            raise RuntimeError("numpy: cannot call numpy() on a tensor that requires grad; "
                               "use tensor.detach().numpy()")
        return backend.to_host(self.data)

    def item(self):
        """The single value of a one-element tensor as a Python number."""
        if self.numel() != 1:
            raise ValueError(f"item: only one-element tensors can be converted to Python scalars, "
                             f"got shape {self.shape}")
        return backend.to_host(self.data).item()

    def tolist(self):
        return backend.to_host(self.data).tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self.numel() != 1:
            raise RuntimeError(f"bool: the truth value of a tensor with {self.numel()} elements is "
                               "ambiguous; use .any() or .all()")
        return bool(self.item())

    def __index__(self):
        if self.dtype.kind not in "iu" or self.numel() != 1:
            raise TypeError("only integer tensors of a single element can be used as an index")
        return int(self.item())

    def __array__(self, dtype=None, copy=None):
        array = backend.to_host(self.data)
        return array if dtype is None else array.astype(dtype, copy=False)

    def to(self, *args, dtype=None, device=None):
        """Move to a device and/or cast to a dtype: ``x.to("cuda")``, ``x.to(tn.float64)``,
        ``x.to("cpu", tn.float32)``. Differentiable; returns self when nothing changes."""
        for arg in args:
            if isinstance(arg, (str, backend.Device)):
                device = arg
            else:
                dtype = arg
        result = self
        if dtype is not None:
            result = ops.cast(result, dtypes.as_dtype(dtype))
        if device is not None:
            result = ops.to_device(result, backend.as_device(device))
        return result

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else f"cuda:{int(device)}")

    def float(self):
        return self.to(dtypes.float32)

    def double(self):
        return self.to(dtypes.float64)

    def half(self):
        return self.to(dtypes.float16)

    def long(self):
        return self.to(dtypes.int64)

    def int(self):
        return self.to(dtypes.int32)

    def bool(self):
        return self.to(dtypes.bool_)

    def type(self, dtype):
        return self.to(dtype)

    def detach(self):
        """The same data (shared memory, shared version counter), cut from the graph."""
        return Tensor._make(self.data, self.device, version=self._version)

    def detach_(self):
        """Cut this tensor from the graph in place."""
        self.grad_fn = None
        self._requires_grad = False
        return self

    def clone(self):
        """A copy of the data that stays in the graph."""
        return ops.clone(self)

    def contiguous(self):
        """A C-contiguous tensor: self if it already is, else a differentiable copy."""
        return self if self.data.flags.c_contiguous else ops.clone(self)

    def is_contiguous(self) -> bool:
        return bool(self.data.flags.c_contiguous)

    # ------------------------------------------------------------------ autograd
    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        """Accumulate the gradient of this tensor into the ``.grad`` of every leaf.

        ``gradient`` may be omitted for a one-element tensor. The graph is freed afterwards
        unless ``retain_graph=True`` (which ``create_graph=True`` implies).
        """
        root_gradient = autograd._root_gradient(self, gradient, "backward")
        if retain_graph is None:
            retain_graph = create_graph
        autograd.run_backward([self], [root_gradient], retain_graph, create_graph)

    # ------------------------------------------------------------------ in-place updates
    # In-place changes happen outside the graph (for optimizers, initialisation and masks):
    # a tensor that requires grad can only be changed under tn.no_grad(). Each change bumps the
    # version counter, so a backward that saved the old values refuses to run.

    def zero_(self):
        """Fill with zeros in place."""
        return self._write("zero_", Ellipsis, 0)

    def fill_(self, value):
        """Fill with ``value`` in place."""
        return self._write("fill_", Ellipsis, value)

    def copy_(self, source):
        """Copy ``source`` (broadcastable to this shape, from any device) into this tensor."""
        source_shape = tuple(getattr(source, "shape", ()))
        try:
            broadcast = np.broadcast_shapes(source_shape, self.shape)
        except ValueError:
            broadcast = None
        if broadcast != self.shape:
            raise RuntimeError(f"copy_: source of shape {source_shape} does not broadcast to the "
                               f"destination shape {self.shape}")
        return self._write("copy_", Ellipsis, source, any_device=True)

    def __setitem__(self, index, value):
        self._write("__setitem__", ops.array_index(index, self.device, "__setitem__"), value)

    def add_(self, other, alpha=1):
        """``self += alpha * other`` in place.

        >>> import tinynlm as tn
        >>> x = tn.ones(2)
        >>> x += 1
        >>> x.add_(tn.ones(2), alpha=3).tolist()
        [5.0, 5.0]
        """
        return self._update("add_", other, lambda a, b: a + b * alpha if alpha != 1 else a + b)

    def sub_(self, other, alpha=1):
        """``self -= alpha * other`` in place."""
        return self._update("sub_", other, lambda a, b: a - b * alpha if alpha != 1 else a - b)

    def mul_(self, other):
        """``self *= other`` in place."""
        return self._update("mul_", other, lambda a, b: a * b)

    def div_(self, other):
        """``self /= other`` in place."""
        return self._update("div_", other, lambda a, b: a / b)

    def clamp_(self, min=None, max=None):
        """Limit values to ``[min, max]`` in place."""
        return self._write("clamp_", Ellipsis, ops.clamp(self.detach(), min, max))

    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    def _update(self, name, other, combine):
        """``self = combine(self, other)`` in place, computed out of the graph with the usual
        broadcasting and promotion; the result must keep this tensor's shape and dtype kind."""
        from .autograd import no_grad

        with no_grad():
            result = combine(self.detach(), other)
        if result.shape != self.shape:
            raise RuntimeError(f"{name}: the result has shape {result.shape}, which does not fit "
                               f"the tensor's shape {self.shape}")
        if dtypes.result_type(self.dtype, result.dtype) != self.dtype and \
                result.dtype.kind != self.dtype.kind:
            raise RuntimeError(f"{name}: a {result.dtype} result cannot be stored in place in a "
                               f"{self.dtype} tensor")
        return self._write(name, Ellipsis, result)

    def _write(self, name, index, value, any_device=False):
        if self.requires_grad and autograd.is_grad_enabled():
            raise RuntimeError(f"{name}: a tensor that requires grad cannot be changed in place "
                               "while grad mode is on; wrap the update in tn.no_grad()")
        if isinstance(value, Tensor):
            if value.device != self.device and not any_device:
                raise RuntimeError(f"{name}: the value is on {value.device} but the tensor is on "
                                   f"{self.device}")
            value = value.data
        if backend.is_array(value):
            value = backend.move_array(value, self.device)
        self.data[index] = value
        self._version[0] += 1
        return self

    # ------------------------------------------------------------------ display
    def __repr__(self):
        body = np.array2string(backend.to_host(self.data), separator=", ", precision=4,
                               prefix="tensor(", threshold=200, edgeitems=3)
        extras = []
        if self.device.type != "cpu":
            extras.append(f"device='{self.device}'")
        if self.dtype not in (dtypes.float32, dtypes.int64, dtypes.bool_):
            extras.append(f"dtype={self.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{type(self.grad_fn).__name__}Backward>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extras) + ")"

    def __hash__(self):
        return id(self)

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other):
        return ops.add(self, other)

    def __radd__(self, other):
        return ops.add(other, self)

    def __sub__(self, other):
        return ops.sub(self, other)

    def __rsub__(self, other):
        return ops.sub(other, self)

    def __mul__(self, other):
        return ops.mul(self, other)

    def __rmul__(self, other):
        return ops.mul(other, self)

    def __truediv__(self, other):
        return ops.div(self, other)

    def __rtruediv__(self, other):
        return ops.div(other, self)

    def __pow__(self, exponent):
        return ops.pow(self, exponent)

    def __rpow__(self, base):
        return ops.pow(base, self)

    def __matmul__(self, other):
        return ops.matmul(self, other)

    def __rmatmul__(self, other):
        return ops.matmul(other, self)

    def __neg__(self):
        return ops.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return ops.abs(self)

    def __lt__(self, other):
        return ops.lt(self, other)

    def __le__(self, other):
        return ops.le(self, other)

    def __gt__(self, other):
        return ops.gt(self, other)

    def __ge__(self, other):
        return ops.ge(self, other)

    def __eq__(self, other):
        if not _comparable(other):
            return NotImplemented  # so `x == None` is False, as in Python and PyTorch
        return ops.eq(self, other)

    def __ne__(self, other):
        if not _comparable(other):
            return NotImplemented
        return ops.ne(self, other)

    def __invert__(self):
        return ops.bitwise_not(self)

    def __and__(self, other):
        return ops.bitwise_and(self, other)

    def __or__(self, other):
        return ops.bitwise_or(self, other)

    def __xor__(self, other):
        return ops.bitwise_xor(self, other)

    def __getitem__(self, index):
        return ops.getitem(self, index)

    # ------------------------------------------------------------------ op methods
    add = __add__
    sub = __sub__
    mul = __mul__
    div = __truediv__
    matmul = __matmul__
    neg = __neg__
    abs = __abs__
    eq = __eq__
    ne = __ne__
    lt = __lt__
    le = __le__
    gt = __gt__
    ge = __ge__

    def pow(self, exponent):
        return ops.pow(self, exponent)

    def exp(self):
        return ops.exp(self)

    def log(self):
        return ops.log(self)

    def sqrt(self):
        return ops.sqrt(self)

    def rsqrt(self):
        return ops.rsqrt(self)

    def sin(self):
        return ops.sin(self)

    def cos(self):
        return ops.cos(self)

    def tanh(self):
        return ops.tanh(self)

    def sigmoid(self):
        return ops.sigmoid(self)

    def relu(self):
        return ops.relu(self)

    def erf(self):
        return ops.erf(self)

    def sign(self):
        return ops.sign(self)

    def square(self):
        return ops.mul(self, self)

    def maximum(self, other):
        return ops.maximum(self, other)

    def minimum(self, other):
        return ops.minimum(self, other)

    def clamp(self, min=None, max=None):
        return ops.clamp(self, min, max)

    clip = clamp

    def masked_fill(self, mask, value):
        return ops.masked_fill(self, mask, value)

    def sum(self, dim=None, keepdim=False):
        return ops.sum(self, dim, keepdim)

    def mean(self, dim=None, keepdim=False):
        return ops.mean(self, dim, keepdim)

    def var(self, dim=None, unbiased=None, keepdim=False, correction=None):
        return ops.var(self, dim, unbiased, keepdim, correction=correction)

    def std(self, dim=None, unbiased=None, keepdim=False, correction=None):
        return ops.std(self, dim, unbiased, keepdim, correction=correction)

    def max(self, dim=None, keepdim=False):
        return ops.max(self, dim, keepdim)

    def min(self, dim=None, keepdim=False):
        return ops.min(self, dim, keepdim)

    def amax(self, dim=None, keepdim=False):
        return ops.amax(self, dim, keepdim)

    def amin(self, dim=None, keepdim=False):
        return ops.amin(self, dim, keepdim)

    def argmax(self, dim=None, keepdim=False):
        return ops.argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        return ops.argmin(self, dim, keepdim)

    def logsumexp(self, dim, keepdim=False):
        return ops.logsumexp(self, dim, keepdim)

    def softmax(self, dim):
        return ops.softmax(self, dim)

    def log_softmax(self, dim):
        return ops.log_softmax(self, dim)

    def all(self, dim=None, keepdim=False):
        return ops.all(self, dim, keepdim)

    def any(self, dim=None, keepdim=False):
        return ops.any(self, dim, keepdim)

    def reshape(self, *shape):
        return ops.reshape(self, *shape)

    def view(self, *shape):
        return ops.view(self, *shape)

    def flatten(self, start_dim=0, end_dim=-1):
        return ops.flatten(self, start_dim, end_dim)

    def transpose(self, dim0, dim1):
        return ops.transpose(self, dim0, dim1)

    swapaxes = transpose

    def permute(self, *dims):
        return ops.permute(self, *dims)

    @property
    def T(self):
        return ops.permute(self, *reversed(range(self.ndim)))

    @property
    def mT(self):
        return ops.transpose(self, -2, -1)

    def t(self):
        if self.ndim > 2:
            raise RuntimeError(f"t: expects a tensor with at most 2 dims, got shape {self.shape}")
        return self.T

    def expand(self, *sizes):
        return ops.expand(self, *sizes)

    def expand_as(self, other):
        return ops.expand(self, *other.shape)

    def broadcast_to(self, shape):
        return ops.expand(self, *shape)

    def unsqueeze(self, dim):
        return ops.unsqueeze(self, dim)

    def squeeze(self, dim=None):
        return ops.squeeze(self, dim)

    def split(self, split_size_or_sections, dim=0):
        return ops.split(self, split_size_or_sections, dim)

    def chunk(self, chunks, dim=0):
        return ops.chunk(self, chunks, dim)

    def unbind(self, dim=0):
        return ops.unbind(self, dim)

    def gather(self, dim, index):
        return ops.gather(self, dim, index)

    def index_select(self, dim, index):
        return ops.index_select(self, dim, index)

    def tril(self, diagonal=0):
        return ops.tril(self, diagonal)

    def triu(self, diagonal=0):
        return ops.triu(self, diagonal)

    def where(self, condition, other):
        return ops.where(condition, self, other)


def _comparable(value) -> bool:
    return isinstance(value, (Tensor, numbers.Number, np.generic, np.ndarray))


def _normalize_dim(dim, ndim, op_name):
    """A dim in ``[-ndim, ndim)`` as a non-negative int, or a clear IndexError.
    (A 0-d tensor accepts 0 and -1, as in PyTorch.)"""
    if type(dim) is not int and (isinstance(dim, bool) or not isinstance(dim, np.integer)):
        raise TypeError(f"{op_name}: dim must be an int, got {dim!r}")
    size = ndim or 1
    if not -size <= dim < size:
        raise IndexError(f"{op_name}: dim {dim} is out of range for a tensor of {ndim} dims")
    return int(dim) % size


from . import autograd, ops  # noqa: E402  (both need Tensor defined first)
