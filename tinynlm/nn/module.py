"""``Module`` and ``Parameter``: the building blocks every layer and model is made of, plus the
containers ``Sequential``, ``ModuleList`` and ``ModuleDict``. Same names and behaviour as
PyTorch's, so state dicts move between the two."""

from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from .. import backend, dtypes
from ..tensor import Tensor


class Parameter(Tensor):
    """A tensor that a :class:`Module` registers as one of its weights (requires grad by default).

    >>> import tinynlm as tn
    >>> w = tn.nn.Parameter(tn.zeros(2, 3))
    >>> w.requires_grad, w.shape
    (True, (2, 3))
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = Tensor._make(np.empty(0, dtypes.DEFAULT_FLOAT), backend.CPU)
        if not isinstance(data, Tensor):
            data = Tensor(data)
        self._set(data.data, data.device)
        self.requires_grad = requires_grad

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class of every layer: assigning a :class:`Parameter`, a Module or a registered buffer
    to an attribute registers it, so ``parameters()``, ``state_dict()``, ``to()`` and friends
    find it.

    >>> import tinynlm as tn
    >>> class Affine(tn.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.scale = tn.nn.Parameter(tn.ones(3))
    ...         self.register_buffer("shift", tn.zeros(3))
    ...     def forward(self, x):
    ...         return x * self.scale + self.shift
    >>> sorted(Affine().state_dict())
    ['scale', 'shift']
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() is called")
        registries = (self._parameters, self._buffers, self._modules)
        if isinstance(value, Parameter):
            self._forget(name, keep=self._parameters)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._forget(name, keep=self._modules)
            self._modules[name] = value
        elif name in self._parameters:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to parameter {name!r} "
                                "(use nn.Parameter or None)")
            self._parameters[name] = None
        elif name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign a {type(value).__name__} to buffer {name!r} "
                                "(use a Tensor or None)")
            self._buffers[name] = value
        elif name in self._modules and value is None:
            self._modules[name] = None
        elif any(name in registry for registry in registries):
            raise TypeError(f"cannot assign a {type(value).__name__} to {name!r}, which holds a "
                            "module")
        object.__setattr__(self, name, value)

    def _forget(self, name, keep=None):
        """Drop ``name`` from every registry but ``keep`` (where a re-assignment then keeps its
        place, so the order of parameters and sub-modules never changes)."""
        for registry in (self._parameters, self._buffers, self._modules):
            if registry is not keep:
                registry.pop(name, None)
        if keep is not self._buffers:
            self._non_persistent_buffers.discard(name)

    def __delattr__(self, name):
        self._forget(name)
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param):
        """Register ``param`` (a Parameter or None) under ``name``."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be a Parameter or None, got "
                            f"{type(param).__name__}")
        self._forget(name, keep=self._parameters)
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def register_buffer(self, name: str, tensor, persistent: bool = True):
        """Register a tensor that is state but not a weight (running statistics, masks, ...).
        Non-persistent buffers stay out of ``state_dict()``."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: {name!r} must be a Tensor or None, got "
                            f"{type(tensor).__name__}")
        self._forget(name, keep=self._buffers)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent_buffers.add(name)
        object.__setattr__(self, name, tensor)

    def add_module(self, name: str, module):
        """Register a sub-module under ``name``."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module or None, got "
                            f"{type(module).__name__}")
        self._forget(name, keep=self._modules)
        self._modules[name] = module
        object.__setattr__(self, name, module)

    register_module = add_module

    # ------------------------------------------------------------------ running
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix: str = "", memo=None):
        """Every module in the tree (self first), each once, with its dotted name."""
        memo = set() if memo is None else memo
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in memo:
                continue
            memo.add(id(module))
            yield name, module
            children = [(f"{name}.{child_name}" if name else child_name, child)
                        for child_name, child in module._modules.items() if child is not None]
            stack.extend(reversed(children))

    def get_submodule(self, target: str):
        """The sub-module at dotted path ``target`` ("" is self)."""
        module = self
        for part in target.split(".") if target else []:
            if part not in module._modules or module._modules[part] is None:
                raise AttributeError(f"get_submodule: {type(module).__name__} has no sub-module "
                                     f"{part!r} (in {target!r})")
            module = module._modules[part]
        return module

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def _named_members(self, registry_name, prefix, recurse):
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, member in getattr(module, registry_name).items():
                if member is None or id(member) in seen:
                    continue
                seen.add(id(member))
                yield (f"{module_prefix}.{name}" if module_prefix else name), member

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        """``(name, parameter)`` pairs; a parameter shared by two modules appears once."""
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True):
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def num_parameters(self, trainable_only: bool = False) -> int:
        """How many numbers the parameters hold (only those requiring grad if asked).

        >>> import tinynlm as tn
        >>> tn.nn.Linear(3, 4).num_parameters()
        16
        """
        return sum(p.numel() for p in self.parameters()
                   if p.requires_grad or not trainable_only)

    def apply(self, fn):
        """Call ``fn`` on every sub-module (children first), then on self; returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes and devices
    def train(self, mode: bool = True):
        """Set training mode (dropout active) on self and every sub-module."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        """Set evaluation mode: ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True):
        """Clear the gradients of every parameter (to None, or to zeros)."""
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad = Tensor._make(param.xp.zeros_like(param.grad.data), param.device)

    def to(self, *args, dtype=None, device=None):
        """Move every parameter and buffer to a device and/or cast the floating ones to a dtype,
        in place (parameters keep their identity, so optimizers still hold them)."""
        for arg in args:
            if isinstance(arg, (str, backend.Device)):
                device = arg
            else:
                dtype = arg
        target_device = None if device is None else backend.as_device(device)
        target_dtype = None if dtype is None else dtypes.as_dtype(dtype)
        if target_dtype is not None and target_dtype.kind != "f":
            raise TypeError(f"Module.to: only floating dtypes are allowed, got {target_dtype}")

        def convert(tensor):
            array = tensor.data
            if target_dtype is not None and array.dtype.kind == "f":
                array = array.astype(target_dtype, copy=False)
            if target_device is not None and tensor.device != target_device:
                array = backend.move_array(array, target_device)
                tensor.device = target_device
            tensor.data = array
            if tensor.grad is not None:
                convert(tensor.grad)

        for module in self.modules():
            for tensor in list(module._parameters.values()) + list(module._buffers.values()):
                if tensor is not None:
                    convert(tensor)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else f"cuda:{int(device)}")

    def float(self):
        return self.to(dtypes.float32)

    def double(self):
        return self.to(dtypes.float64)

    # ------------------------------------------------------------------ state
    def state_dict(self, prefix: str = "") -> "OrderedDict[str, np.ndarray]":
        """Every parameter and persistent buffer as a host NumPy copy, by dotted name (shared
        parameters under each of their names, as in PyTorch)."""
        return OrderedDict((name, np.array(backend.to_host(tensor.data), copy=True))
                           for name, tensor in self._state_tensors(prefix).items())

    def _state_tensors(self, prefix: str = ""):
        """name -> the live Tensor behind each state_dict entry."""
        tensors = OrderedDict()
        for module_prefix, module in self.named_modules(prefix, memo=_NoMemo()):
            dotted = f"{module_prefix}." if module_prefix else ""
            for name, param in module._parameters.items():
                if param is not None:
                    tensors[dotted + name] = param
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module._non_persistent_buffers:
                    tensors[dotted + name] = buffer
        return tensors

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy values (NumPy arrays, Tensors or anything with ``.numpy()``) into the parameters
        and buffers, keeping their dtype and device. Every problem (missing keys with
        ``strict``, unexpected keys with ``strict``, shape mismatches) is reported in one error,
        and nothing is changed when there is one. Returns ``(missing_keys, unexpected_keys)``."""
        targets = self._state_tensors()
        values = {}
        for key, value in state_dict.items():
            if isinstance(value, Tensor):
                value = value.data
            elif not backend.is_array(value) and hasattr(value, "numpy"):
                value = value.detach().numpy() if hasattr(value, "detach") else value.numpy()
            values[key] = value
        missing = [key for key in targets if key not in values]
        unexpected = [key for key in values if key not in targets]
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        for key, target in targets.items():
            if key in values:
                shape = tuple(getattr(values[key], "shape", ()))
                if shape != target.shape:
                    problems.append(f"shape mismatch for {key}: the checkpoint has {shape}, the "
                                    f"model has {target.shape}")
        if problems:
            raise RuntimeError(f"load_state_dict: cannot load into {type(self).__name__}: "
                               + "; ".join(problems))
        converted = {key: backend.move_array(np.asarray(backend.to_host(values[key]),
                                                        dtype=target.dtype), target.device)
                     for key, target in targets.items() if key in values}
        for key, array in converted.items():
            if array is values[key]:
                array = array.copy()  # never alias the caller's arrays
            targets[key].data = array
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ display
    def extra_repr(self) -> str:
        """One line of constructor arguments for ``repr`` (layers override it)."""
        return ""

    def __repr__(self):
        lines = []
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {child}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class _NoMemo(set):
    """A memo that forgets: state_dict lists a shared sub-module under each of its names."""

    def add(self, item):
        pass


class _ModuleSequence(Module):
    """What Sequential and ModuleList share: modules registered under "0", "1", ..."""

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self


class Sequential(_ModuleSequence):
    """Modules applied one after the other.

    >>> import tinynlm as tn
    >>> model = tn.nn.Sequential(tn.nn.Linear(4, 8), tn.nn.ReLU(), tn.nn.Linear(8, 2))
    >>> model(tn.ones(3, 4)).shape
    (3, 2)
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(modules):
                self.add_module(str(index), module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return modules[index]



class ModuleList(_ModuleSequence):
    """A list of modules whose parameters are registered.

    >>> import tinynlm as tn
    >>> layers = tn.nn.ModuleList([tn.nn.Linear(2, 2) for _ in range(3)])
    >>> len(list(layers.parameters()))
    6
    """

    def __init__(self, modules=None):
        super().__init__()
        for module in modules or ():
            self.append(module)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return list(self._modules.values())[index]

    def __setitem__(self, index, module):
        names = list(self._modules)
        self.add_module(names[index], module)


    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def insert(self, index, module):
        modules = list(self._modules.values())
        modules.insert(index, module)
        for name in list(self._modules):
            self._forget(name)
            object.__delattr__(self, name)
        for module_ in modules:
            self.append(module_)


class ModuleDict(Module):
    """A dict of modules whose parameters are registered."""

    def __init__(self, modules=None):
        super().__init__()
        for name, module in (modules or {}).items():
            self.add_module(name, module)

    def __getitem__(self, name):
        return self._modules[name]

    def __setitem__(self, name, module):
        self.add_module(name, module)

    def __delitem__(self, name):
        delattr(self, name)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, name):
        return name in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()
