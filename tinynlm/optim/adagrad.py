"""Adagrad: per-coordinate learning rates from the sum of all past squared gradients."""

from __future__ import annotations

from .optimizer import Optimizer


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011), PyTorch's ``torch.optim.Adagrad`` step for step.

    With ``g`` the gradient (negated when ``maximize``) and ``t`` the step count, each step does::

        g = g + weight_decay * p
        s = s + g * g                  (s starts at initial_accumulator_value)
        p = p - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)

    >>> import tinynlm as tn
    >>> from tinynlm.optim import Adagrad
    >>> w = tn.tensor([1.0], requires_grad=True)
    >>> optimizer = Adagrad([w], lr=0.5)
    >>> w.grad = tn.tensor([4.0])
    >>> optimizer.step()  # s = 16, so the step is 0.5 * 4 / 4
    >>> w.item()
    0.5
    """

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, *, maximize=False):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize))

    def _check_group(self, group):
        for name in ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            group[name] = self._checked_number(name, group[name])

    def _update(self, xp, param, grad, state, group):
        if not state:
            state["step"] = 0
            state["sum"] = xp.full_like(param, group["initial_accumulator_value"])
        if group["maximize"]:
            grad = -grad
        state["step"] += 1
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param
        decayed_lr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        squared_sum = state["sum"]
        squared_sum += grad * grad
        param -= decayed_lr * (grad / (xp.sqrt(squared_sum) + group["eps"]))
