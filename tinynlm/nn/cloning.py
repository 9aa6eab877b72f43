"""Deep copies of modules (``copy.deepcopy`` semantics) that keep tinynlm's shared devices.

``copy.deepcopy`` copies a module's tree, parameters and buffers correctly, but it also copies
the :class:`~tinynlm.backend.Device` objects, and ops tell devices apart by identity (``is``),
so a deep-copied CPU tensor is no longer taken for a CPU tensor. :func:`clone_module` deep-copies
everything except the devices, which it shares.
"""

from __future__ import annotations

import copy

from .. import backend


def clone_module(module):
    """A fresh, independent copy of ``module``: new parameters and buffers with equal values
    (and equal ``.grad``), the same structure, mode and settings.

    >>> import tinynlm as tn
    >>> layer = tn.nn.Linear(3, 2)
    >>> twin = clone_module(layer)
    >>> twin.weight is layer.weight, bool((twin.weight == layer.weight).all())
    (False, True)
    >>> twin(tn.ones(1, 3)).shape
    (1, 2)
    """
    tensors = list(module.parameters()) + list(module.buffers())
    tensors += [tensor.grad for tensor in tensors if tensor.grad is not None]
    devices = {backend.CPU} | {tensor.device for tensor in tensors}
    return copy.deepcopy(module, memo={id(device): device for device in devices})
