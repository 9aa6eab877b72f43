"""The optimizer base class: parameter groups, per-parameter state, the step loop and checkpoints.

A concrete optimizer only supplies its update rule, ``_update(xp, param, grad, state, group)``,
which changes the raw array ``param`` in place with array-module (NumPy or CuPy) operations, so
no autograd graph is recorded. Everything else (which parameters have gradients, devices,
``zero_grad``, ``state_dict``) lives here once.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections import defaultdict

import numpy as np

from .. import backend
from ..autograd import enable_grad
from ..tensor import Tensor


class Optimizer:
    """Base class of all optimizers, with PyTorch's interface.

    ``params`` is an iterable of Tensors, or of dicts (parameter groups) each holding
    ``"params"`` and any hyperparameters that differ from ``defaults`` for that group.

    Attributes:
        param_groups: a list of dicts, each with ``"params"`` (a list of Tensors) and every
            hyperparameter; change ``group["lr"]`` to change the learning rate.
        state: per-parameter state, a dict keyed by the parameter Tensor.

    Subclasses call ``super().__init__(params, defaults)`` and implement
    ``_check_group(group)`` (validate a group's hyperparameters, storing numbers as Python
    floats so float32 updates never turn float64) and
    ``_update(xp, param, grad, state, group)``.

    >>> import tinynlm as tn
    >>> from tinynlm.optim import SGD
    >>> w, b = tn.ones(2, requires_grad=True), tn.zeros(1, requires_grad=True)
    >>> optimizer = SGD([{"params": [w]}, {"params": [b], "lr": 0.5}], lr=0.1)
    >>> [group["lr"] for group in optimizer.param_groups]
    [0.1, 0.5]
    """

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self._check_group(self.defaults)
        self.state = defaultdict(dict)
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError(f"{self._name}: params should be an iterable of Tensors or of dicts, "
                            "got a single Tensor; wrap it in a list")
        self._check_ordered(params)
        groups = list(params)
        if not groups:
            raise ValueError(f"{self._name}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    @property
    def _name(self) -> str:
        return type(self).__name__

    def __repr__(self):
        lines = [f"{self._name} ("]
        for index, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {index}")
            lines.extend(f"    {key}: {group[key]}" for key in sorted(group) if key != "params")
        return "\n".join(lines + [")"])

    def add_param_group(self, param_group: dict):
        """Add a group of parameters (with optional per-group hyperparameters), for example
        layers unfrozen during fine-tuning. Missing hyperparameters take the defaults.

        >>> import tinynlm as tn
        >>> from tinynlm.optim import SGD
        >>> optimizer = SGD([tn.ones(2, requires_grad=True)], lr=0.1)
        >>> optimizer.add_param_group({"params": tn.ones(3, requires_grad=True), "lr": 0.01})
        >>> len(optimizer.param_groups), optimizer.param_groups[1]["lr"]
        (2, 0.01)
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"{self._name}: a parameter group must be a dict, "
                            f"got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError(f"{self._name}: a parameter group must have a 'params' entry")
        params = param_group["params"]
        self._check_ordered(params)
        params = [params] if isinstance(params, Tensor) else list(params)
        for param in params:
            if not isinstance(param, Tensor):
                raise TypeError(f"{self._name}: can only optimize Tensors, got "
                                f"{type(param).__name__}")
            if not param.is_leaf:
                raise ValueError(f"{self._name}: cannot optimize a non-leaf Tensor (shape "
                                 f"{param.shape}); optimize the leaf it was computed from")
        ids = [id(param) for param in params]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self._name}: a parameter group lists the same tensor twice")
        existing = {id(param) for group in self.param_groups for param in group["params"]}
        if not existing.isdisjoint(ids):
            raise ValueError(f"{self._name}: some parameters appear in more than one "
                             "parameter group")
        group = dict(param_group, params=params)
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self._check_group(group)
        self.param_groups.append(group)

    def _check_ordered(self, params):
        if isinstance(params, (set, frozenset)):
            raise TypeError(f"{self._name}: parameters must be given in an ordered collection; "
                            "the order of a set changes between runs, so use a list")

    def zero_grad(self, set_to_none: bool = True):
        """Forget the gradients: set each ``.grad`` to None (the default, which saves memory)
        or fill it with zeros.

        >>> import tinynlm as tn
        >>> from tinynlm.optim import SGD
        >>> w = tn.ones(2, requires_grad=True)
        >>> (w * 3).sum().backward()
        >>> SGD([w]).zero_grad()
        >>> w.grad is None
        True
        """
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if set_to_none:
                    param.grad = None
                else:
                    param.grad.detach_()
                    param.grad.zero_()

    def step(self, closure=None):
        """Update every parameter that has a gradient, in place; parameters whose ``.grad`` is
        None are skipped. ``closure``, if given, re-evaluates the model and returns the loss
        (it runs with grad mode on), and that loss is returned.

        >>> import tinynlm as tn
        >>> from tinynlm.optim import SGD
        >>> w = tn.tensor([1.0, -2.0], requires_grad=True)
        >>> optimizer = SGD([w], lr=0.25)
        >>> (w * w).sum().backward()  # the gradient is 2w = [2, -4]
        >>> optimizer.step()
        >>> w.tolist()
        [0.5, -1.0]
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            # Checked again at every step: a scheduler or a user may have changed a value.
            self._check_group(group)
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = self._gradient_array(param)
                with _device_scope(param.device):
                    self._update(param.xp, param.data, grad, self.state[param], group)
                _mark_changed(param)
        return loss

    def _gradient_array(self, param):
        grad = param.grad
        if not isinstance(grad, Tensor):
            raise TypeError(f"{self._name}.step: a parameter's .grad must be a Tensor or None, "
                            f"got {type(grad).__name__}")
        if (grad.shape, grad.dtype, grad.device) != (param.shape, param.dtype, param.device):
            raise RuntimeError(f"{self._name}.step: a parameter of shape {param.shape}, dtype "
                               f"{param.dtype} on {param.device} has a gradient of shape "
                               f"{grad.shape}, dtype {grad.dtype} on {grad.device}")
        return grad.data

    def _check_group(self, group: dict):
        """Validate a group's hyperparameters (an optimizer without any has nothing to check)."""

    def _update(self, xp, param, grad, state: dict, group: dict):
        """Change the array ``param`` in place given ``grad`` (an array of the same shape and
        dtype), this parameter's ``state`` dict (empty at first) and its ``group``; ``xp`` is
        NumPy or CuPy. Never modify ``grad``: it is the caller's ``.grad``."""
        raise NotImplementedError

    def _checked_number(self, name: str, value, low=0.0, below=None) -> float:
        """``value`` as a Python float after checking ``low <= value`` (and ``value < below``);
        ``low=None`` means no lower bound. A NumPy float64 scalar would turn float32 updates
        into float64 ones, hence the conversion."""
        in_range = (isinstance(value, numbers.Real) and not isinstance(value, bool)
                    and (low is None or value >= low) and (below is None or value < below))
        if not in_range or math.isnan(value):
            bounds = "any number" if low is None else f"a number >= {low}"
            if below is not None:
                bounds = f"a number in [{low}, {below})"
            raise ValueError(f"{self._name}: invalid {name} {value!r}; expected {bounds}")
        return float(value)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """The optimizer's state in PyTorch's layout, ready to save.

        ``{"state": {index: {name: value}}, "param_groups": [{hyperparameters...,
        "params": [index, ...]}]}``, where parameters are numbered in group order and state values
        are NumPy arrays (host copies) or Python numbers.

        >>> import tinynlm as tn
        >>> from tinynlm.optim import SGD
        >>> w = tn.ones(2, requires_grad=True)
        >>> optimizer = SGD([w], lr=0.1, momentum=0.9)
        >>> w.grad = tn.ones(2)
        >>> optimizer.step()
        >>> saved = optimizer.state_dict()
        >>> saved["state"][0]["momentum_buffer"]
        array([1., 1.], dtype=float32)
        >>> saved["param_groups"][0]["params"]
        [0]
        """
        index_of = {}  # id(parameter) -> its number in the state dict
        groups = []
        for group in self.param_groups:
            packed = {key: value for key, value in group.items() if key != "params"}
            packed["params"] = [index_of.setdefault(id(param), len(index_of))
                                for param in group["params"]]
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for param in group["params"]:
                values = self.state.get(param)
                if values:
                    state[index_of[id(param)]] = {key: _host_copy(value)
                                                  for key, value in values.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict):
        """Restore what :meth:`state_dict` returned, onto this optimizer's parameters (same
        number of groups and of parameters per group, in the same order). Hyperparameters come
        from the state dict; state arrays go to each parameter's device, floating ones in the
        parameter's dtype. Nothing changes unless the whole state dict fits.

        >>> import tinynlm as tn
        >>> from tinynlm.optim import Adam
        >>> w = tn.ones(2, requires_grad=True)
        >>> saved = Adam([w], lr=0.5).state_dict()
        >>> optimizer = Adam([w])
        >>> optimizer.load_state_dict(saved)
        >>> optimizer.param_groups[0]["lr"]
        0.5
        """
        name = f"{self._name}.load_state_dict"
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}: the state dict has {len(saved_groups)} parameter groups "
                             f"but the optimizer has {len(self.param_groups)}")
        param_of = {}  # index in the state dict -> parameter
        for number, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{name}: parameter group {number} has {len(saved['params'])} "
                                 f"parameters in the state dict but {len(group['params'])} in "
                                 "the optimizer")
            param_of.update(zip(saved["params"], group["params"]))
        state = defaultdict(dict)
        for index, values in state_dict["state"].items():
            if index not in param_of:
                raise ValueError(f"{name}: the state dict has state for parameter {index!r}, "
                                 "which no parameter group lists")
            param = param_of[index]
            state[param] = {key: _loaded_value(name, param, index, key, value)
                            for key, value in values.items()}
        groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            loaded = {key: value for key, value in saved.items() if key != "params"}
            loaded["params"] = group["params"]
            self._check_group(loaded)
            groups.append(loaded)
        self.state, self.param_groups = state, groups


def _mark_changed(tensor):
    """Bump ``tensor``'s version counter after its ``.data`` changed in place, so a pending
    backward that saved the old values raises instead of computing a wrong gradient. (Tensor has
    no public method for a change made to ``.data`` directly; its counter is a one-element list
    shared with its views.)"""
    tensor._version[0] += 1


def _device_scope(device):
    """Make ``device`` CuPy's current GPU for the block (a no-op on the CPU)."""
    if device.type == "cpu":
        return contextlib.nullcontext()
    return backend.cupy_module().cuda.Device(device.index)


def _host_copy(value):
    """A state value as something that can be saved: arrays become NumPy copies."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if backend.is_array(value):
        return backend.to_host(value)
    return value


def _loaded_value(where, param, index, key, value):
    """A saved state value back on ``param``'s device, floating arrays in its dtype. Values
    may be NumPy arrays, tinynlm Tensors or anything with ``.numpy()`` (PyTorch tensors, so a
    PyTorch optimizer's state dict loads too; its 0-d ``step`` becomes a number)."""
    if isinstance(value, Tensor):
        value = value.data
    elif not backend.is_array(value) and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else value.numpy()
    if backend.is_array(value) and value.ndim == 0 and key == "step":
        value = backend.to_host(value).item()
    if isinstance(value, np.generic):
        return value.item()
    if not backend.is_array(value):
        return value
    host = backend.to_host(value)
    if host.shape != param.shape:
        raise ValueError(f"{where}: state {key!r} of parameter {index} has shape {host.shape} "
                         f"but the parameter has shape {param.shape}")
    dtype = param.dtype if host.dtype.kind == "f" else host.dtype
    # A fresh array, so later steps never write into the caller's state dict.
    return backend.move_array(host.astype(dtype, copy=True), param.device)
