"""Reverse-mode automatic differentiation: the op base class, grad mode and the backward engine.

An op is a :class:`Function` subclass. ``forward`` works on raw arrays (NumPy or CuPy, through
``self.xp``) and runs once per call; ``backward`` receives the output gradients as Tensors and
returns one gradient Tensor (or None) per input, written with ordinary tensor ops. The engine runs
``backward`` with grad mode off, so the plain path records nothing; with ``create_graph=True`` it
runs with grad mode on, so the backward pass is itself recorded and can be differentiated again.

The graph: every output Tensor points at the Function that made it (``grad_fn``); the Function
keeps one edge per input, ``(parent_function, output_index)`` for an intermediate tensor,
``(leaf_tensor, None)`` for a leaf that requires grad, or ``None``. Nothing points back down, so
the graph frees itself as soon as its last output goes away.
"""

from __future__ import annotations

import numpy as np

from . import backend
from .tensor import Tensor


class _GradMode:
    enabled = True


def is_grad_enabled() -> bool:
    """Whether ops are recorded for backward right now."""
    return _GradMode.enabled


class set_grad_enabled:
    """Turn recording on or off, as a context manager or a decorator.

    >>> import tinynlm as tn
    >>> with tn.set_grad_enabled(False):
    ...     tn.is_grad_enabled()
    False
    """

    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self.previous = []

    def __enter__(self):
        self.previous.append(_GradMode.enabled)
        _GradMode.enabled = self.mode
        return self

    def __exit__(self, *exc):
        _GradMode.enabled = self.previous.pop()
        return False

    def __call__(self, function):
        def wrapper(*args, **kwargs):
            with type(self)(*self._args()):
                return function(*args, **kwargs)

        wrapper.__name__, wrapper.__doc__ = function.__name__, function.__doc__
        wrapper.__wrapped__ = function
        return wrapper

    def _args(self):
        return (self.mode,)


class no_grad(set_grad_enabled):
    """Record nothing inside the block (or the decorated function).

    >>> import tinynlm as tn
    >>> x = tn.ones(2, requires_grad=True)
    >>> with tn.no_grad():
    ...     y = x * 2
    >>> y.requires_grad
    False
    """

    def __init__(self):
        super().__init__(False)

    def _args(self):
        return ()


class enable_grad(set_grad_enabled):
    """Record ops inside the block even within ``no_grad``."""

    def __init__(self):
        super().__init__(True)

    def _args(self):
        return ()


class Function:
    """Base class of every differentiable op.

    Subclasses set ``save_inputs`` (indices of inputs the backward needs as Tensors) and
    ``save_output`` (whether the backward needs the output), implement ``forward(*arrays)``
    returning an array or a tuple of arrays, and ``backward(*grads)`` returning one gradient per
    input. Call an instance on Tensors to run it: ``Exp()(x)``.
    """

    save_inputs = ()
    save_output = False
    target_device = None  # set by ops whose outputs live on another device than their inputs

    # Set on every call: the array module (numpy or cupy) the forward should use.
    xp = np

    def __call__(self, *inputs):
        device = inputs[0].device
        wants_grad = False
        for tensor in inputs:
            if tensor.device is not device:  # devices are interned: `is` decides
                raise RuntimeError(f"{self.name}: expected all tensors on one device, got "
                                   f"{device} and {tensor.device}")
            if tensor._requires_grad:
                wants_grad = _GradMode.enabled
        if device is backend.CPU:
            outputs = self.forward(*[tensor.data for tensor in inputs])
        else:
            cupy = backend.cupy_module()
            self.xp = cupy
            with cupy.cuda.Device(device.index):
                outputs = self.forward(*[tensor.data for tensor in inputs])
        if self.target_device is not None:
            device = self.target_device

        if not wants_grad:
            if type(outputs) is tuple:
                return tuple(Tensor._make(out, device) for out in outputs)
            return Tensor._make(outputs, device)
        self.edges = [_edge(tensor) for tensor in inputs]
        if self.save_inputs:
            self.saved_tensors = [inputs[i] for i in self.save_inputs]
            self.saved_versions = [tensor._version for tensor in self.saved_tensors]
        self.device = device
        if type(outputs) is tuple:
            self.saved_outputs = outputs if self.save_output else None
            self.output_meta = [(out.shape, out.dtype) for out in outputs]
            return tuple(Tensor._make(out, device, self, index)
                         for index, out in enumerate(outputs))
        result = Tensor._make(outputs, device, self, 0)
        self.saved_outputs = (result.data,) if self.save_output else None
        self.output_meta = ((result.data.shape, result.data.dtype),)
        return result

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, *grads):
        raise NotImplementedError

    def needs_input_grad(self, index: int) -> bool:
        """Whether input ``index`` wants a gradient; lets backward skip work."""
        return self.edges[index] is not None

    def output(self, index: int = 0):
        """Output ``index`` as a Tensor for use in backward (part of the graph under create_graph)."""
        array = self.saved_outputs[index]
        if _GradMode.enabled:
            return Tensor._make(array, self.device, self, index)
        return Tensor._make(array, self.device)

    def release(self):
        """Free what backward needed; a later backward through this node raises."""
        vars(self).clear()
        self.edges = None


def _edge(tensor):
    if not tensor._requires_grad:
        return None
    if tensor.grad_fn is None:
        return (tensor, None)
    return (tensor.grad_fn, tensor.output_index)


_RELEASED = ("Trying to backward through the graph a second time (or to use saved values after "
             "they were freed). Pass retain_graph=True to the first backward call if you need to "
             "backward through the graph again.")


def run_backward(roots, root_grads, retain_graph=False, create_graph=False, inputs=None,
                 allow_unused=False):
    """Backpropagate ``root_grads`` from ``roots``.

    With ``inputs=None`` gradients accumulate into the ``.grad`` of every leaf reached. Otherwise
    nothing is accumulated and the gradients of ``inputs`` are returned (for :func:`grad`).
    The graph is walked in topological order with dependency counts (no recursion, and each node
    runs once).
    """
    capture = None
    if inputs is not None:
        # id(leaf) or (node, output index) -> position in inputs
        capture = {(id(t) if t.grad_fn is None else (t.grad_fn, t.output_index)): position
                   for position, t in enumerate(inputs)}
        captured = [None] * len(inputs)
    leaves = _LeafGradients(create_graph, capture)

    buffers = {}       # Function -> list of gradient Tensors, one per output
    root_nodes = []
    previous_mode, _GradMode.enabled = _GradMode.enabled, create_graph
    try:
        for root, grad in zip(roots, root_grads):
            leaves.handed_out.add(id(grad.data))  # the caller's gradient stays the caller's
            node = root.grad_fn
            if node is None:
                leaves.deliver(root, grad)
                continue
            if node.edges is None:
                raise RuntimeError(_RELEASED)
            if node not in buffers:
                buffers[node] = [None] * len(node.output_meta)
                root_nodes.append(node)
            slot = buffers[node]
            index = root.output_index
            slot[index] = grad if slot[index] is None else slot[index] + grad

        dependencies = _count_dependencies(root_nodes)
        ready = [node for node in root_nodes if node not in dependencies]
        while ready:
            node = ready.pop()
            grads = buffers.pop(node)
            if capture is not None:
                for index, grad in enumerate(grads):
                    position = capture.get((node, index))
                    if position is not None:
                        captured[position] = grad
            if len(grads) > 1:  # an output nobody used gets a zero gradient
                for index, (shape, dtype) in enumerate(node.output_meta):
                    if grads[index] is None:
                        grads[index] = Tensor._make(node.xp.zeros(shape, dtype), node.device)
            if node.save_inputs:
                _check_versions(node)
            input_grads = node.backward(*grads)
            if type(input_grads) is not tuple:
                input_grads = (input_grads,)
            edges = node.edges
            if not retain_graph:
                node.release()
            for edge, grad in zip(edges, input_grads):
                if edge is None or grad is None:
                    continue
                parent, index = edge
                if index is None:
                    _check_gradient(node, grad, parent.data.shape, parent.data.dtype)
                    leaves.deliver(parent, grad)
                    continue
                _check_gradient(node, grad, *parent.output_meta[index])
                slot = buffers.get(parent)
                if slot is None:
                    slot = buffers[parent] = [None] * len(parent.output_meta)
                slot[index] = grad if slot[index] is None else slot[index] + grad
                remaining = dependencies[parent] - 1
                dependencies[parent] = remaining
                if remaining == 0:
                    ready.append(parent)
    finally:
        _GradMode.enabled = previous_mode

    if capture is None:
        return None
    for position, grad in leaves.captured.items():
        captured[position] = grad
    for position, grad in enumerate(captured):
        if grad is None and not allow_unused:
            raise RuntimeError(f"grad: input {position} was not used to compute the outputs "
                               "(pass allow_unused=True to get None for it)")
    return tuple(captured)


class _LeafGradients:
    """Where gradients reaching leaves go: into ``.grad`` (accumulating), or, for :func:`grad`,
    into ``captured`` for the requested leaves only."""

    def __init__(self, create_graph, capture):
        self.create_graph = create_graph
        self.capture = capture
        self.captured = {}      # position in inputs -> gradient
        self.handed_out = set()  # ids of arrays already stored somewhere during this pass

    def deliver(self, leaf, grad):
        if self.capture is not None:
            position = self.capture.get(id(leaf))
            if position is not None:
                previous = self.captured.get(position)
                self.captured[position] = grad if previous is None else previous + grad
            return
        if leaf.grad is None:
            data = grad.data
            # Never let two leaves (or a leaf and the caller) share one gradient buffer.
            if data.base is not None or id(data) in self.handed_out:
                grad = Tensor._make(data.copy(), grad.device, grad.grad_fn, grad.output_index)
            self.handed_out.add(id(grad.data))
            leaf.grad = grad
        elif self.create_graph:
            leaf.grad = leaf.grad + grad
        else:
            leaf.grad = Tensor._make(leaf.grad.data + grad.data, leaf.device)


def _count_dependencies(root_nodes):
    """For each node reachable from the roots, how many graph edges lead into it."""
    dependencies = {}
    stack = list(root_nodes)
    seen = set(root_nodes)
    while stack:
        node = stack.pop()
        if node.edges is None:
            raise RuntimeError(_RELEASED)
        for edge in node.edges:
            if edge is None or edge[1] is None:
                continue
            parent = edge[0]
            dependencies[parent] = dependencies.get(parent, 0) + 1
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return dependencies


def _check_versions(node):
    for tensor, version in zip(node.saved_tensors, node.saved_versions):
        if tensor._version != version:
            raise RuntimeError(f"{node.name} backward: a tensor of shape {tensor.shape} it saved "
                               "for the gradient was modified in place afterwards (zero_, fill_, "
                               "copy_ or item assignment), so the gradient would be wrong")


def _check_gradient(node, grad, shape, dtype):
    data = grad.data
    if data.shape != shape or data.dtype != dtype:
        raise RuntimeError(f"{node.name} backward: produced a gradient of shape {grad.shape} and "
                           f"dtype {grad.dtype} for an input of shape {shape} and dtype {dtype}")


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """Gradients of ``outputs`` with respect to ``inputs``, without touching any ``.grad``.

    >>> import tinynlm as tn
    >>> x = tn.tensor([1.0, 2.0], requires_grad=True)
    >>> (dx,) = tn.grad((x ** 3).sum(), x, create_graph=True)
    >>> dx.tolist()
    [3.0, 12.0]
    >>> (ddx,) = tn.grad(dx.sum(), x)
    >>> ddx.tolist()
    [6.0, 12.0]
    """
    outputs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
    single_input = isinstance(inputs, Tensor)
    inputs = (inputs,) if single_input else tuple(inputs)
    for position, tensor in enumerate(inputs):
        if not tensor.requires_grad:
            raise RuntimeError(f"grad: input {position} does not require grad")
    if grad_outputs is None or isinstance(grad_outputs, Tensor):
        grad_outputs = (grad_outputs,) * len(outputs) if grad_outputs is None else (grad_outputs,)
    root_grads = [_root_gradient(output, given, "grad")
                  for output, given in zip(outputs, grad_outputs)]
    if retain_graph is None:
        retain_graph = create_graph
    return run_backward(outputs, root_grads, retain_graph, create_graph, inputs, allow_unused)


def _root_gradient(output, given, op_name):
    """The starting gradient for ``output``: ``given`` checked, or ones for a scalar."""
    if not output._requires_grad:
        raise RuntimeError(f"{op_name}: a tensor of shape {output.shape} does not require grad "
                           "and has no grad_fn")
    if given is None:
        data = output.data
        if data.size != 1:
            raise RuntimeError(f"{op_name}: grad can be implicitly created only for scalar outputs; "
                               f"got shape {output.shape}, so pass a gradient of that shape")
        xp = np if output.device is backend.CPU else output.xp
        return Tensor._make(xp.ones(data.shape, data.dtype), output.device)
    if not isinstance(given, Tensor):
        given = Tensor._make(output.xp.asarray(given, dtype=output.dtype), output.device)
    if given.shape != output.shape:
        raise RuntimeError(f"{op_name}: gradient has shape {given.shape} but the output has shape "
                           f"{output.shape}")
    if given.device != output.device:
        raise RuntimeError(f"{op_name}: gradient is on {given.device} but the output is on "
                           f"{output.device}")
    if given.dtype != output.dtype:
        given = given.to(output.dtype)
    return given
