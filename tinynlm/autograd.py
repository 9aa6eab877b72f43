"""Reverse-mode automatic differentiation: the op base class, grad mode and the backward engine.

An op is a :class:`Function` subclass. ``forward`` works on raw arrays (NumPy or CuPy, through
``self.xp``) and runs once per call; ``backward`` receives the output gradients as Tensors and
returns one gradient Tensor (or None) per input, written with ordinary tensor ops. The engine runs
``backward`` with grad mode off, so the plain path records nothing; with ``create_graph=True`` it
runs with grad mode on, so the backward pass is itself recorded and can be differentiated again.

The graph: every output Tensor points at the Function that made it (``grad_fn``); the Function
keeps one edge per input, ``(parent_function, output_index)`` for an intermediate tensor,
``(leaf_tensor, None)`` for a leaf that requires grad, or ``None``. Nothing points back down, so
the graph frees itself as soon as its last output goes away (after ``create_graph=True`` a leaf's
``.grad`` holds a graph that refers back to the leaf: that cycle is left to the garbage
collector, or broken by setting ``.grad = None``).
"""

from __future__ import annotations

import functools

import numpy as np

from . import backend
from .tensor import Tensor


class _GradMode:
    enabled = True


def is_grad_enabled() -> bool:
    """Whether ops are recorded for backward right now."""
    return _GradMode.enabled


class set_grad_enabled:
    """Turn recording on or off: called plainly it switches the mode at once (as in PyTorch);
    as a context manager or a decorator it restores the previous mode afterwards.

    >>> import tinynlm as tn
    >>> with tn.set_grad_enabled(False):
    ...     tn.is_grad_enabled()
    False
    >>> tn.is_grad_enabled()
    True
    """

    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self.previous = [_GradMode.enabled]
        _GradMode.enabled = self.mode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _GradMode.enabled = self.previous.pop()
        return False

    def __call__(self, function):
        _GradMode.enabled = self.previous.pop()  # as a decorator it changes nothing until called
        return _Scoped(self.mode)(function)


class _Scoped:
    """Grad mode ``mode`` inside a ``with`` block; the base of no_grad and enable_grad."""

    def __init__(self, mode: bool):
        self.mode = mode
        self.previous = []

    def __enter__(self):
        self.previous.append(_GradMode.enabled)
        _GradMode.enabled = self.mode
        return self

    def __exit__(self, *exc):
        _GradMode.enabled = self.previous.pop()
        return False

    def __call__(self, function):
        mode = self.mode

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with _Scoped(mode):
                return function(*args, **kwargs)

        return wrapper


class no_grad(_Scoped):
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


class enable_grad(_Scoped):
    """Record ops inside the block even within ``no_grad``."""

    def __init__(self):
        super().__init__(True)


class Function:
    """Base class of every differentiable op.

    Subclasses set ``save_inputs`` (indices of inputs the backward needs as Tensors) and
    ``save_output`` (whether the backward needs the output), implement ``forward(*arrays)``
    returning an array or a tuple of arrays, and ``backward(*grads)`` returning one gradient per
    input. Call an instance on Tensors to run it: ``Exp()(x)``.
    """

    save_inputs = ()
    save_output = False
    returns_view = False   # set by ops whose output may share memory with their first input
    target_device = None   # set by ops whose outputs live on another device than their inputs

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
        arrays = [tensor.data for tensor in inputs]
        if device is backend.CPU:
            self.xp = np
            outputs = self.forward(*arrays)
        else:
            cupy = backend.cupy_module()
            self.xp = cupy
            with cupy.cuda.Device(device.index):
                outputs = self.forward(*arrays)
        if self.target_device is not None:
            device = self.target_device
        # A view shares memory with its input, so it shares the input's version counter too.
        version = inputs[0]._version if self.returns_view else None
        make = Tensor._make
        if type(outputs) is not tuple:  # the common case, one output, written out for speed
            if version is not None and outputs.base is None:
                version = None  # not a view of the input after all: a counter of its own
            if not wants_grad:
                return make(outputs, device, None, 0, version)
            result = make(outputs, device, self, 0, version)
            self._record(inputs, (outputs,), (result,), device)
            return result
        results = tuple(make(out, device, self if wants_grad else None, index,
                             None if version is None or out.base is None else version)
                        for index, out in enumerate(outputs))
        if wants_grad:
            self._record(inputs, outputs, results, device)
        return results

    def _record(self, inputs, outputs, results, device):
        """Keep what backward needs: an edge per input, the saved values, the outputs' meta."""
        self.edges = [None if not tensor._requires_grad
                      else (tensor, None) if tensor.grad_fn is None
                      else (tensor.grad_fn, tensor.output_index)
                      for tensor in inputs]
        if self.save_inputs:
            self.saved_tensors = [inputs[i] for i in self.save_inputs]
            self.saved_versions = [tensor._version[0] for tensor in self.saved_tensors]
        self.device = device
        self.output_meta = [(out.shape, out.dtype) for out in outputs]
        if self.save_output:
            self.saved_outputs = outputs
            self.saved_output_versions = [(r._version, r._version[0]) for r in results]

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


_RELEASED = ("Trying to backward through the graph a second time (or to use saved values after "
             "they were freed). Pass retain_graph=True to the first backward call if you need to "
             "backward through the graph again.")


def run_backward(roots, root_grads, retain_graph=False, create_graph=False, inputs=None,
                 allow_unused=False):
    """Backpropagate ``root_grads`` from ``roots``.

    With ``inputs=None`` gradients accumulate into the ``.grad`` of every leaf reached. Otherwise
    only the part of the graph that leads to ``inputs`` runs, nothing is accumulated, and the
    gradients of ``inputs`` are returned (for :func:`grad`). The graph is walked in topological
    order with dependency counts: no recursion, and each node runs once.
    """
    leaves = _GradientSink(create_graph, inputs)
    buffers = {}       # Function -> list of gradient Tensors (or None), one per output
    root_nodes = []
    previous_mode, _GradMode.enabled = _GradMode.enabled, create_graph
    try:
        for root, grad in zip(roots, root_grads):
            leaves.keep_private(grad.data)  # the caller's gradient stays the caller's
            node = root.grad_fn
            if node is None:
                leaves.deliver_to_leaf(root, grad)
                continue
            if node.edges is None:
                raise RuntimeError(_RELEASED)
            if node not in buffers:
                buffers[node] = [None] * len(node.output_meta)
                root_nodes.append(node)
            slot = buffers[node]
            slot[root.output_index] = _add(slot[root.output_index], grad)

        dependencies, reached, runs = _walk_graph(root_nodes, leaves)
        ready = [node for node in root_nodes if node not in dependencies and node in reached]
        while ready:
            node = ready.pop()
            grads = buffers.pop(node, None)
            if grads is not None and leaves.inputs is not None:
                leaves.capture_outputs(node, grads)
            if node not in runs:
                continue  # only read for tn.grad: the graph above it is left as it is
            input_grads = _run_node(node, grads) if grads is not None else ()
            edges = node.edges
            if not retain_graph:
                node.release()
            for position, edge in enumerate(edges):
                if edge is None:
                    continue
                parent, index = edge
                grad = input_grads[position] if position < len(input_grads) else None
                if index is None:
                    if grad is not None:
                        data = grad.data
                        parent_data = parent.data
                        if data.shape != parent_data.shape or data.dtype != parent_data.dtype:
                            _gradient_error(node, grad, parent_data.shape, parent_data.dtype)
                        leaves.deliver_to_leaf(parent, grad)
                    continue
                if parent not in reached:
                    continue
                if grad is not None:
                    shape, dtype = parent.output_meta[index]
                    data = grad.data
                    if data.shape != shape or data.dtype != dtype:
                        _gradient_error(node, grad, shape, dtype)
                    slot = buffers.get(parent)
                    if slot is None:
                        slot = buffers[parent] = [None] * len(parent.output_meta)
                    total = slot[index]
                    slot[index] = grad if total is None else total + grad
                remaining = dependencies[parent] - 1
                dependencies[parent] = remaining
                if remaining == 0:
                    ready.append(parent)
    finally:
        _GradMode.enabled = previous_mode
    return leaves.results(allow_unused)


def _add(total, grad):
    return grad if total is None else total + grad


def _run_node(node, grads):
    """Call ``node.backward`` with a gradient for every output (zeros for unused ones)."""
    meta = node.output_meta
    if len(meta) > 1 or grads[0] is None:
        for index, (shape, dtype) in enumerate(meta):
            if grads[index] is None:  # an output nobody used gets a zero gradient
                grads[index] = Tensor._make(node.xp.zeros(shape, dtype), node.device)
    _check_versions(node)
    input_grads = node.backward(*grads)
    return input_grads if type(input_grads) is tuple else (input_grads,)


class _GradientSink:
    """Where gradients end up: accumulated into the ``.grad`` of leaves, or, for :func:`grad`,
    collected for the requested ``inputs`` only (leaf or not)."""

    def __init__(self, create_graph, inputs):
        self.create_graph = create_graph
        self.inputs = inputs
        # Arrays already stored somewhere during this pass, by id (held, so no id is reused).
        self.private = {}
        if inputs is not None:
            # id(leaf) or (node, output index) -> the positions in inputs it fills
            self.wanted = {}
            for position, tensor in enumerate(inputs):
                key = id(tensor) if tensor.grad_fn is None else (tensor.grad_fn, tensor.output_index)
                self.wanted.setdefault(key, []).append(position)
            self.collected = [None] * len(inputs)

    def keep_private(self, array):
        self.private[id(array)] = array

    def _owned(self, grad):
        """``grad`` itself, or a copy when its buffer is a view or already stored elsewhere."""
        data = grad.data
        if data.base is not None or id(data) in self.private:
            if grad.requires_grad:  # under create_graph: a copy that stays in the graph
                with set_grad_enabled(True):
                    grad = grad.clone()
            else:
                grad = Tensor._make(data.copy(), grad.device)
        self.private[id(grad.data)] = grad.data
        return grad

    def wants(self, key) -> bool:
        return self.inputs is None or key in self.wanted

    def capture_outputs(self, node, grads):
        """For :func:`grad` (``inputs`` given): keep the gradients of the wanted outputs."""
        for index, grad in enumerate(grads):
            for position in self.wanted.get((node, index), ()):
                self.collected[position] = grad

    def deliver_to_leaf(self, leaf, grad):
        if self.inputs is not None:
            for position in self.wanted.get(id(leaf), ()):
                self.collected[position] = _add(self.collected[position], grad)
        elif leaf.grad is None:
            leaf.grad = self._owned(grad)
        elif self.create_graph:
            leaf.grad = leaf.grad + grad
        else:
            leaf.grad = Tensor._make(leaf.grad.data + grad.data, leaf.device)

    def results(self, allow_unused):
        if self.inputs is None:
            return None
        for position, grad in enumerate(self.collected):
            if grad is None and not allow_unused:
                raise RuntimeError(f"grad: input {position} was not used to compute the outputs "
                                   "(pass allow_unused=True to get None for it)")
        return tuple(None if grad is None else self._owned(grad) for grad in self.collected)


def _walk_graph(root_nodes, sink):
    """Visit every node reachable from the roots, iteratively.

    Returns ``(dependencies, reached, runs)``: the nodes that receive gradients, those whose
    backward must run, and for each reached node how many edges from running nodes lead into
    it. For ``.backward()`` every node is in both sets; for :func:`grad` only the nodes on a
    path to a wanted input run, and a node whose own output is wanted is reached but need not
    run.
    """
    for_grad = sink.inputs is not None  # only tn.grad needs the order and the parents
    dependencies, order, parents = {}, [], {}
    stack = list(root_nodes)
    seen = set(root_nodes)
    while stack:
        node = stack.pop()
        edges = node.edges
        if edges is None:
            raise RuntimeError(_RELEASED)
        if for_grad:
            order.append(node)
            node_parents = parents[node] = []
        for edge in edges:
            if edge is None or edge[1] is None:
                continue
            parent = edge[0]
            if for_grad:
                node_parents.append(parent)
            dependencies[parent] = dependencies.get(parent, 0) + 1
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    if not for_grad:
        return dependencies, seen, seen

    reached = {node for node in order
               if any(sink.wants((node, index)) for index in range(len(node.output_meta)))}
    runs = set()
    changed = True
    while changed:  # discovery order is not topological: repeat until nothing changes
        changed = False
        for node in reversed(order):
            if node not in runs and (
                    any(parent in reached for parent in parents[node])
                    or any(edge is not None and edge[1] is None and sink.wants(id(edge[0]))
                           for edge in node.edges)):
                runs.add(node)
                reached.add(node)
                changed = True
    dependencies = {}
    for node in runs:
        for parent in parents[node]:
            if parent in reached:
                dependencies[parent] = dependencies.get(parent, 0) + 1
    return dependencies, reached, runs


def _check_versions(node):
    """Refuse to compute a gradient from a saved tensor that was changed in place since."""
    if node.save_inputs:
        for tensor, version in zip(node.saved_tensors, node.saved_versions):
            if tensor._version[0] != version:
                _stale_error(node, tensor.shape)
    if node.save_output:
        for (cell, version), (shape, _) in zip(node.saved_output_versions, node.output_meta):
            if cell[0] != version:
                _stale_error(node, shape)


def _stale_error(node, shape):
    raise RuntimeError(f"{node.name} backward: a tensor of shape {shape} it saved for the "
                       "gradient was modified in place afterwards (an in-place op, zero_, "
                       "fill_, copy_ or item assignment), so the gradient would be wrong")


def _gradient_error(node, grad, shape, dtype):
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
        if output.device is backend.CPU and data.ndim == 0:  # the usual loss: np.ones is slower
            return Tensor._make(np.array(1, data.dtype), output.device)
        return Tensor._make(output.xp.ones(data.shape, data.dtype), output.device)
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
