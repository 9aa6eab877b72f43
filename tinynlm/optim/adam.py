"""Adam and AdamW: adaptive moment estimation, with L2 or decoupled weight decay."""

from __future__ import annotations

from .optimizer import Optimizer


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015), PyTorch's ``torch.optim.Adam`` step for step.

    With ``g`` the gradient (negated when ``maximize``) and ``t`` the step count, each step does::

        g = g + weight_decay * p                 (or p = p * (1 - lr * weight_decay) when
                                                   decoupled_weight_decay, as in AdamW)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v)                    (amsgrad, which then uses v_max for v)
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    >>> import tinynlm as tn
    >>> from tinynlm.optim import Adam
    >>> w = tn.tensor([2.0, -2.0], requires_grad=True)
    >>> optimizer = Adam([w], lr=0.1)
    >>> w.grad = tn.tensor([4.0, -0.001])
    >>> optimizer.step()  # the first step moves each entry by about lr, whatever the scale
    >>> [round(value, 4) for value in w.tolist()]
    [1.9, -1.9]
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _check_group(self, group):
        for name in ("lr", "eps", "weight_decay"):
            group[name] = self._checked_number(name, group[name])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{self._name}: betas must be a pair (beta1, beta2), got {betas!r}")
        group["betas"] = tuple(self._checked_number(f"betas[{index}]", beta, 0.0, 1.0)
                               for index, beta in enumerate(betas))

    def _update(self, xp, param, grad, state, group):
        beta1, beta2 = group["betas"]
        lr, weight_decay = group["lr"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(param)
            state["exp_avg_sq"] = xp.zeros_like(param)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(param)
        if group["maximize"]:
            grad = -grad
        state["step"] += 1
        step = state["step"]
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                param *= 1 - lr * weight_decay
            else:
                grad = grad + weight_decay * param
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg += (1 - beta1) * (grad - exp_avg)  # the lerp PyTorch uses
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        if group["amsgrad"]:
            xp.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            exp_avg_sq = state["max_exp_avg_sq"]
        bias_correction1 = 1 - beta1 ** step
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        denominator = xp.sqrt(exp_avg_sq) / bias_correction2_sqrt + group["eps"]
        param -= lr / bias_correction1 * (exp_avg / denominator)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019), PyTorch's
    ``torch.optim.AdamW``: the decay shrinks the parameters directly,
    ``p = p * (1 - lr * weight_decay)``, instead of entering the moment estimates.

    >>> import tinynlm as tn
    >>> from tinynlm.optim import AdamW
    >>> w = tn.tensor([1.0], requires_grad=True)
    >>> optimizer = AdamW([w], lr=0.1, weight_decay=0.5)
    >>> w.grad = tn.tensor([0.0])  # no gradient signal: only the decay acts
    >>> optimizer.step()
    >>> round(w.item(), 6)
    0.95
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
