"""RMSprop: divide the gradient by a running root mean square of its recent values."""

from __future__ import annotations

from .optimizer import Optimizer


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e), PyTorch's ``torch.optim.RMSprop`` step for step.

    With ``g`` the gradient (negated when ``maximize``), each step does::

        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        a = alpha * a + (1 - alpha) * g          (centered only)
        d = sqrt(v - a * a) + eps  (centered)  or  sqrt(v) + eps
        b = momentum * b + g / d;  p = p - lr * b      (momentum > 0)
        p = p - lr * g / d                             (otherwise)

    >>> import tinynlm as tn
    >>> from tinynlm.optim import RMSprop
    >>> w = tn.tensor([1.0], requires_grad=True)
    >>> optimizer = RMSprop([w], lr=0.01, alpha=0.75)
    >>> w.grad = tn.tensor([3.0])
    >>> optimizer.step()  # v = 0.25 * 9, so the step is 0.01 * 3 / 1.5
    >>> round(w.item(), 6)
    0.98
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _check_group(self, group):
        for name in ("lr", "alpha", "eps", "weight_decay", "momentum"):
            group[name] = self._checked_number(name, group[name])

    def _update(self, xp, param, grad, state, group):
        alpha, momentum, weight_decay = group["alpha"], group["momentum"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(param)
            if momentum > 0:
                state["momentum_buffer"] = xp.zeros_like(param)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(param)
        if group["maximize"]:
            grad = -grad
        state["step"] += 1
        if weight_decay != 0:
            grad = grad + weight_decay * param
        square_avg = state["square_avg"]
        square_avg *= alpha
        square_avg += (1 - alpha) * grad * grad
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg += (1 - alpha) * (grad - grad_avg)  # the lerp PyTorch uses
            denominator = xp.sqrt(square_avg - grad_avg * grad_avg) + group["eps"]
        else:
            denominator = xp.sqrt(square_avg) + group["eps"]
        if momentum > 0:
            buffer = state["momentum_buffer"]
            buffer *= momentum
            buffer += grad / denominator
            param -= group["lr"] * buffer
        else:
            param -= group["lr"] * (grad / denominator)
