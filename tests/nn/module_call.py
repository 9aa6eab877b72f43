"""A module that wraps one particular call of another module, for gradient checks."""

from tinynlm import nn


class ModuleCall(nn.Module):
    """``fn(module, *inputs)`` as a module (``module`` registered as its child), so that
    ``module_gradcheck`` can check a call with keyword arguments, masks or several outputs.

    >>> import tinynlm as tn
    >>> attention = nn.MultiheadAttention(4, 2)
    >>> call = ModuleCall(attention, lambda m, x: m(x, x, x, need_weights=False)[0])
    >>> call(tn.randn(3, 2, 4)).shape
    (3, 2, 4)
    """

    def __init__(self, module, fn):
        super().__init__()
        self.module, self.fn = module, fn

    def forward(self, *inputs):
        return self.fn(self.module, *inputs)
