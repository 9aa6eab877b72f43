"""Matrix multiplication with PyTorch's batching and 1-D rules; BLAS does the work."""

from __future__ import annotations

from ..autograd import Function
from .common import binary_operands, require_float, sum_to
from .shape import reshape, squeeze, unsqueeze


class MatMul(Function):
    """``a @ b`` for operands with at least 2 dims; batch dims broadcast."""

    save_inputs = (0, 1)

    def forward(self, a, b):
        if a.ndim > 2 and b.ndim == 2:
            # (..., M, K) @ (K, N) as one (B*M, K) @ (K, N) product: one BLAS call, not B.
            return (a.reshape(-1, a.shape[-1]) @ b).reshape(*a.shape[:-1], b.shape[-1])
        return self.xp.matmul(a, b)

    def backward(self, grad):
        a, b = self.saved_tensors
        grad_a = grad_b = None
        if self.needs_input_grad(0):
            if b.ndim == 2 and a.ndim > 2:
                # (..., M, N) @ (K, N)^T: one big matrix product over the flattened batch.
                grad_a = reshape(matmul(reshape(grad, -1, grad.shape[-1]), b.mT), a.shape)
            else:
                grad_a = sum_to(matmul(grad, b.mT), a.shape)
        if self.needs_input_grad(1):
            if b.ndim == 2 and a.ndim > 2:
                # sum over the batch of a^T @ grad, as one (K, B*M) @ (B*M, N) product.
                grad_b = matmul(reshape(a, -1, a.shape[-1]).mT, reshape(grad, -1, grad.shape[-1]))
            else:
                grad_b = sum_to(matmul(a.mT, grad), b.shape)
        return grad_a, grad_b


def matmul(a, b):
    """Matrix product with PyTorch's rules: 1-D @ 1-D is a dot product, a 1-D operand is treated
    as a row (left) or column (right) vector and that dim removed, batch dims broadcast.

    >>> import tinynlm as tn
    >>> (tn.ones(5, 2, 3) @ tn.ones(3, 4)).shape
    (5, 2, 4)
    >>> (tn.ones(3) @ tn.ones(3)).item()
    3.0
    """
    a, b = binary_operands("matmul", a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise RuntimeError(f"matmul: both arguments need at least 1 dim, got shapes {a.shape} and "
                           f"{b.shape}")
    require_float(a, "matmul")
    inner_a = a.shape[-1]
    inner_b = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if inner_a != inner_b:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied "
                         f"({inner_a} != {inner_b})")
    if a.ndim == 1 and b.ndim == 1:
        return squeeze(matmul(unsqueeze(a, 0), unsqueeze(b, 1)), (0, 1))
    if a.ndim == 1:
        return squeeze(matmul(unsqueeze(a, 0), b), -2)
    if b.ndim == 1:
        return squeeze(matmul(a, unsqueeze(b, 1)), -1)
    try:
        return MatMul()(a, b)
    except ValueError:
        raise ValueError(f"matmul: batch dims of shapes {a.shape} and {b.shape} cannot be "
                         "broadcast together") from None
