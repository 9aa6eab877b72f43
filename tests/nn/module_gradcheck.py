"""Gradient-check a module with respect to its inputs and all its parameters at once."""

import contextlib

import tinynlm as tn


@contextlib.contextmanager
def parameters_replaced(module, names, tensors):
    """Temporarily let ``module`` compute with ``tensors`` in place of its named parameters."""
    saved = []
    for name, tensor in zip(names, tensors):
        owner_path, _, attribute = name.rpartition(".")
        owner = module.get_submodule(owner_path) if owner_path else module
        saved.append((owner, attribute, owner.__dict__[attribute]))
        object.__setattr__(owner, attribute, tensor)
    try:
        yield
    finally:
        for owner, attribute, original in saved:
            object.__setattr__(owner, attribute, original)


def module_gradcheck(module, *inputs, **tolerances):
    """``tn.gradcheck`` of ``module(*inputs)`` in float64 over the float inputs and every
    parameter (the module is converted to float64)."""
    module.double()
    names = [name for name, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in module.named_parameters()]
    count = len(inputs)

    def call(*arguments):
        with parameters_replaced(module, names, arguments[count:]):
            return module(*arguments[:count])

    return tn.gradcheck(call, tuple(inputs) + tuple(params), **tolerances)
