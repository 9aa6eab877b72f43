"""Stochastic gradient descent, with momentum, Nesterov momentum and weight decay."""

from __future__ import annotations

from .optimizer import Optimizer


class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch's ``torch.optim.SGD`` step for step.

    With ``g`` the gradient (negated when ``maximize``), each step does::

        g = g + weight_decay * p
        b = g (first step)  or  b = momentum * b + (1 - dampening) * g   (when momentum != 0)
        g = g + momentum * b (nesterov)  or  g = b                      (when momentum != 0)
        p = p - lr * g

    >>> import tinynlm as tn
    >>> from tinynlm.optim import SGD
    >>> w = tn.tensor([1.0], requires_grad=True)
    >>> optimizer = SGD([w], lr=0.5, momentum=0.5)
    >>> for _ in range(2):
    ...     w.grad = tn.tensor([1.0])
    ...     optimizer.step()
    >>> w.item()  # steps of 0.5 * 1 and 0.5 * (0.5 * 1 + 1)
    -0.25
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _check_group(self, group):
        for name in ("lr", "momentum", "weight_decay"):
            group[name] = self._checked_number(name, group[name])
        group["dampening"] = self._checked_number("dampening", group["dampening"], low=None)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: Nesterov momentum requires a momentum > 0 and zero dampening, "
                             f"got momentum {group['momentum']} and dampening "
                             f"{group['dampening']}")

    def _update(self, xp, param, grad, state, group):
        momentum, weight_decay = group["momentum"], group["weight_decay"]
        if group["maximize"]:
            grad = -grad
        if weight_decay != 0:
            grad = grad + weight_decay * param
        if momentum != 0:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = xp.copy(grad)
            else:
                buffer *= momentum
                buffer += (1 - group["dampening"]) * grad
            grad = grad + momentum * buffer if group["nesterov"] else buffer
        param -= group["lr"] * grad
