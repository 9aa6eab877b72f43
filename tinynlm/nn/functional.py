"""Stateless layer functions and losses (``tinynlm.nn.functional``, usually imported as ``F``),
with PyTorch's signatures and semantics."""

from __future__ import annotations

import math

from .. import dispatch, dtypes, ops
from ..autograd import Function
from ..ops.fused import FusedCrossEntropy, FusedLayerNorm
from ..ops.common import require_float
from ..ops.shape import IndexAdd
from ..tensor import Tensor

# Activations and the rest of the elementwise family are the core ops themselves.
relu = ops.relu
gelu = ops.gelu
silu = ops.silu
sigmoid = ops.sigmoid
tanh = ops.tanh
softplus = ops.softplus
dropout = ops.dropout
softmax = ops.softmax
log_softmax = ops.log_softmax


# ----------------------------------------------------------------------------- layers


def linear(input, weight, bias=None):
    """``input @ weight.T + bias``: input (..., in_features), weight (out_features, in_features).

    >>> import tinynlm as tn
    >>> linear(tn.ones(2, 3), tn.ones(4, 3)).shape
    (2, 4)
    """
    if weight.ndim != 2 or input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {input.shape} does not fit a weight of shape "
                         f"{weight.shape} (expects (..., {weight.shape[-1]}) inputs)")
    if input.dtype != weight.dtype:
        raise TypeError(f"linear: input dtype {input.dtype} does not match the weight dtype "
                        f"{weight.dtype} (convert one of them, e.g. with .to())")
    if bias is not None and (bias.shape != weight.shape[:1] or bias.dtype != input.dtype):
        return input @ weight.mT + bias                            # broadcasting, promotion
    return Linear()(input, weight) if bias is None else Linear()(input, weight, bias)


class Linear(Function):
    """``input @ weight.T (+ bias)`` as one op: one BLAS product over the flattened batch
    dims, the bias added in place; the backward is two products and a sum."""

    save_inputs = (0, 1)

    def forward(self, input, weight, bias=None):
        output = input.reshape(-1, input.shape[-1]) @ weight.T     # (batch, out_features)
        if bias is not None:
            output += bias
        return output.reshape(*input.shape[:-1], weight.shape[0])  # (..., out_features)

    def backward(self, grad):
        input, weight = self.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])                    # (batch, out_features)
        grad_input = grad_weight = grad_bias = None
        if self.needs_input_grad(0):
            grad_input = (rows @ weight).reshape(input.shape)      # (..., in_features)
        if self.needs_input_grad(1):
            grad_weight = rows.mT @ input.reshape(-1, input.shape[-1])  # (out, in)
        if len(self.edges) > 2 and self.needs_input_grad(2):
            grad_bias = rows.sum(0)                                # (out_features,)
        return grad_input, grad_weight, grad_bias


class EmbeddingLookup(Function):
    """Rows of ``weight`` picked by integer ids; the ``padding_idx`` row gets no gradient."""

    def __init__(self, ids, padding_idx):
        self.ids, self.padding_idx = ids, padding_idx

    def forward(self, weight):
        self.weight_shape = weight.shape
        return weight[self.ids]                                    # (*ids.shape, embedding_dim)

    def backward(self, grad):
        ids = self.ids
        if self.padding_idx is not None:
            keep = ids != self.padding_idx
            ids, grad = ids[keep], grad[Tensor._make(keep, grad.device)]
        return IndexAdd(self.weight_shape, (ids,))(grad)


def embedding(input, weight, padding_idx=None):
    """Look up rows of ``weight`` (num_embeddings, embedding_dim) for integer ids of any shape.

    Ids outside ``[0, num_embeddings)`` raise an error instead of wrapping around.

    >>> import tinynlm as tn
    >>> embedding(tn.tensor([[0, 2]]), tn.eye(3)).tolist()
    [[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]
    """
    if not isinstance(input, Tensor) or input.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be an integer tensor, got "
                        f"{getattr(input, 'dtype', type(input).__name__)}")
    if input.device != weight.device:
        raise RuntimeError(f"embedding: ids are on {input.device} but the weight is on "
                           f"{weight.device}")
    count = weight.shape[0]
    if input.numel():
        low, high = int(input.data.min()), int(input.data.max())
        if low < 0 or high >= count:
            bad = low if low < 0 else high
            raise IndexError(f"embedding: id {bad} is out of range for {count} embeddings "
                             f"(ids must be in [0, {count}))")
    if padding_idx is not None and padding_idx < 0:
        padding_idx += count
    return EmbeddingLookup(input.data, padding_idx)(weight)


def one_hot(tensor, num_classes=-1):
    """Integer class ids to one-hot int64 vectors along a new last dim."""
    if tensor.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected an integer tensor, got {tensor.dtype}")
    if num_classes < 0:
        num_classes = int(tensor.data.max()) + 1 if tensor.numel() else 0
    if tensor.numel() and (int(tensor.data.min()) < 0 or int(tensor.data.max()) >= num_classes):
        raise IndexError(f"one_hot: class ids must be in [0, {num_classes}), got values from "
                         f"{int(tensor.data.min())} to {int(tensor.data.max())}")
    xp = tensor.xp
    return Tensor._make((tensor.data[..., None] == xp.arange(num_classes)).astype("int64"),
                        tensor.device)


def _normalized_dims(input, normalized_shape, op_name):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if input.shape[input.ndim - len(shape):] != shape or len(shape) > input.ndim:
        raise ValueError(f"{op_name}: input of shape {input.shape} does not end with the "
                         f"normalized shape {shape}")
    return tuple(range(input.ndim - len(shape), input.ndim))


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing ``normalized_shape`` dims to mean 0 and variance 1, then
    scale and shift. A fused kernel does float32 and float64 inputs (see ``tinynlm.kernels``);
    :func:`_composed_layer_norm` is the same function in tensor ops, and its reference.

    >>> import tinynlm as tn
    >>> [round(value, 4) for value in layer_norm(tn.tensor([[1.0, 3.0]]), (2,))[0].tolist()]
    [-1.0, 1.0]
    """
    require_float(input, "layer_norm")
    dims = _normalized_dims(input, normalized_shape, "layer_norm")
    parameters = [p for p in (weight, bias) if p is not None]
    kernels = None
    if (input.dtype in (dtypes.float32, dtypes.float64) and input.numel()
            and (bias is None or weight is not None)
            and all(p.dtype == input.dtype and p.shape == input.shape[dims[0]:]
                    for p in parameters)):
        kernels = dispatch.fused("layer_norm", input.xp)
    if kernels is None:
        return _composed_layer_norm(input, dims, weight, bias, eps)
    columns = math.prod(input.shape[dims[0]:])

    def reference(input, weight=None, bias=None):
        return _composed_layer_norm(input, dims, weight, bias, eps)

    return FusedLayerNorm(kernels, columns, eps, reference, 1 + len(parameters))(input,
                                                                                  *parameters)


def _composed_layer_norm(input, dims, weight, bias, eps):
    dtype = input.dtype
    input = _widen_half(input)
    mean = input.mean(dims, keepdim=True)
    centered = input - mean
    variance = (centered * centered).mean(dims, keepdim=True)
    output = (centered * (variance + eps).rsqrt()).to(dtype)
    if weight is not None:
        output = output * weight
    if bias is not None:
        output = output + bias
    return output


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """Scale by the reciprocal root mean square over the trailing dims (``eps`` defaults to the
    dtype's machine epsilon, as in PyTorch)."""
    require_float(input, "rms_norm")
    dims = _normalized_dims(input, normalized_shape, "rms_norm")
    if eps is None:
        eps = float(input.xp.finfo(input.dtype).eps)
    wide = _widen_half(input)
    output = (wide * ((wide * wide).mean(dims, keepdim=True) + eps).rsqrt()).to(input.dtype)
    return output if weight is None else output * weight


def _widen_half(input):
    """float16 statistics overflow (squares pass 65504): compute them in float32."""
    return input.float() if input.dtype == dtypes.float16 else input


# ----------------------------------------------------------------------------- losses


def _reduce(loss, reduction, op_name):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{op_name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _class_targets(input, target, ignore_index, op_name):
    """Check class-index targets against (N, C, ...) or (C,) scores; return the class count."""
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op_name}: class targets must be an integer tensor, got {target.dtype}")
    classes = input.shape[1] if input.ndim > 1 else input.shape[0]
    expected = (input.shape[:1] + input.shape[2:]) if input.ndim > 1 else ()
    if target.shape != expected:
        raise ValueError(f"{op_name}: input of shape {input.shape} needs a target of shape "
                         f"{expected}, got {target.shape}")
    valid = target.data[target.data != ignore_index]
    if valid.size and (int(valid.min()) < 0 or int(valid.max()) >= classes):
        bad = int(valid.min()) if int(valid.min()) < 0 else int(valid.max())
        raise IndexError(f"{op_name}: target {bad} is out of range for {classes} classes")
    return classes


def _picked_log_probabilities(log_probabilities, target, ignore_index):
    """``log_probabilities[i, target[i], ...]`` with ignored positions set to class 0;
    returns (picked, kept) where kept marks the positions that count."""
    class_dim = 1 if log_probabilities.ndim > 1 else 0
    kept = target != ignore_index
    safe_target = ops.where(kept, target, 0)
    picked = log_probabilities.gather(class_dim, safe_target.unsqueeze(class_dim))
    return picked.squeeze(class_dim), kept


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of class ``target`` under log-probabilities ``input``
    ((N, C), (N, C, d1, ...) or (C,)); with ``weight`` per class and ``ignore_index``."""
    _check_loss_arguments(input, 0.0, "nll_loss")
    return _composed_cross_entropy(input, target, weight, ignore_index, reduction, 0.0,
                                   "nll_loss")


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """Cross-entropy between logits ``input`` (class dim 1, or 0 for a single (C,) vector) and
    ``target``: class indices (with ``ignore_index``) or class probabilities of the input's
    shape. ``weight`` weights classes; ``label_smoothing`` mixes the target with the uniform
    distribution. Stable for logits of any magnitude (it works from ``log_softmax``).

    (N, C) float32 or float64 logits with class-index targets and no ``weight`` run on a fused
    kernel (one pass over the logits forward and one backward, no probability tensor kept);
    the composed version is its reference.

    >>> import tinynlm as tn
    >>> round(cross_entropy(tn.tensor([[0.0, 0.0]]), tn.tensor([1])).item(), 4)
    0.6931
    """
    _check_loss_arguments(input, label_smoothing, "cross_entropy")
    if target.dtype.kind != "f" and weight is None and input.ndim == 2 and input.numel() and \
            input.dtype in (dtypes.float32, dtypes.float64):
        kernels = dispatch.fused("cross_entropy", input.xp)
        if kernels is not None:
            _class_targets(input, target, ignore_index, "cross_entropy")

            def reference(logits):
                return _composed_cross_entropy(logits, target, None, ignore_index, "none",
                                               label_smoothing, "cross_entropy")

            loss = FusedCrossEntropy(kernels, target.data, ignore_index, label_smoothing,
                                     reference)(input)                       # (N,)
            if reduction == "mean":
                return loss.sum() / (target != ignore_index).sum().to(input.dtype)
            return _reduce(loss, reduction, "cross_entropy")
    return _composed_cross_entropy(ops.log_softmax(input, 1 if input.ndim > 1 else 0), target,
                                   weight, ignore_index, reduction, label_smoothing,
                                   "cross_entropy")


def _check_loss_arguments(input, label_smoothing, op_name):
    require_float(input, op_name)
    if input.ndim == 0:
        raise ValueError(f"{op_name}: input must have a class dim, got a 0-d tensor")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op_name}: label_smoothing must be in [0, 1], got {label_smoothing}")


def _composed_cross_entropy(log_probabilities, target, weight, ignore_index, reduction,
                            label_smoothing, op_name):
    """Cross-entropy (and NLL) from log-probabilities in tensor ops: the general path and the
    fused kernel's reference."""
    class_dim = 1 if log_probabilities.ndim > 1 else 0
    classes = log_probabilities.shape[class_dim]
    if weight is not None and weight.shape != (classes,):
        raise ValueError(f"{op_name}: weight must have shape ({classes},), got {weight.shape}")
    # Per-class weights shaped to broadcast along the class dim: (C, 1, 1, ...) or (C,).
    class_weight = None if weight is None else weight.reshape(
        (classes,) + (1,) * (log_probabilities.ndim - class_dim - 1))

    if target.dtype.kind == "f":  # class probabilities
        if target.shape != log_probabilities.shape:
            raise ValueError(f"{op_name}: probability targets must have the input's shape "
                             f"{log_probabilities.shape}, got {target.shape}")
        target = target * (1 - label_smoothing) + label_smoothing / classes
        terms = log_probabilities * target
        if class_weight is not None:
            terms = terms * class_weight
        loss = -terms.sum(class_dim)
        return _reduce(loss, reduction, op_name)

    _class_targets(log_probabilities, target, ignore_index, op_name)
    picked, kept = _picked_log_probabilities(log_probabilities, target, ignore_index)
    kept_float = kept.to(log_probabilities.dtype)
    sample_weight = kept_float if weight is None else weight[ops.where(kept, target, 0)] * kept_float
    loss = -picked * sample_weight
    if label_smoothing > 0:
        smooth_terms = log_probabilities if class_weight is None else log_probabilities * class_weight
        smooth = -smooth_terms.sum(class_dim) * kept_float
        loss = loss * (1 - label_smoothing) + smooth * (label_smoothing / classes)
    if reduction == "mean":
        return loss.sum() / sample_weight.sum()
    return _reduce(loss, reduction, op_name)


def mse_loss(input, target, reduction="mean"):
    """Mean squared error."""
    difference = input - target
    return _reduce(difference * difference, reduction, "mse_loss")


def l1_loss(input, target, reduction="mean"):
    """Mean absolute error."""
    return _reduce((input - target).abs(), reduction, "l1_loss")


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",
                                     pos_weight=None):
    """Binary cross-entropy on logits, computed stably as
    ``(1 - y) x + (1 + (pos_weight - 1) y) * softplus(-x)``."""
    require_float(input, "binary_cross_entropy_with_logits")
    if target.shape != input.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: target of shape {target.shape} must "
                         f"match the input's shape {input.shape}")
    log_weight = 1.0 if pos_weight is None else (pos_weight - 1) * target + 1
    loss = (1 - target) * input + log_weight * ops.softplus(-input)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")
from .scaled_attention import scaled_dot_product_attention  # noqa: E402,F401
