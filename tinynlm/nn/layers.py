"""Basic layers: Linear, Bilinear, Embedding, Dropout, LayerNorm, RMSNorm, Identity, Flatten
and the activation modules, with PyTorch's arguments, parameter names and initialisation."""

from __future__ import annotations

import math

from .. import creation, ops
from . import functional as F
from . import init
from .module import Module, Parameter


def _factory(dtype, device):
    return {"dtype": dtype, "device": device}


class Linear(Module):
    """``y = x @ weight.T + bias`` with weight (out_features, in_features), both initialised
    uniformly in ``±1/sqrt(in_features)`` as in PyTorch.

    >>> import tinynlm as tn
    >>> tn.nn.Linear(3, 2)(tn.ones(5, 3)).shape
    (5, 2)
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(creation.empty(out_features, in_features, **_factory(dtype, device)))
        if bias:
            self.bias = Parameter(creation.empty(out_features, **_factory(dtype, device)))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Bilinear(Module):
    """``y_k = x1 @ weight[k] @ x2 + bias_k`` with weight (out, in1, in2)."""

    def __init__(self, in1_features, in2_features, out_features, bias=True, device=None,
                 dtype=None):
        super().__init__()
        self.in1_features, self.in2_features = in1_features, in2_features
        self.out_features = out_features
        factory = _factory(dtype, device)
        self.weight = Parameter(creation.empty(out_features, in1_features, in2_features, **factory))
        if bias:
            self.bias = Parameter(creation.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        bound = 1 / math.sqrt(in1_features)
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input1, input2):
        # (..., in1) x (out, in1, in2) -> (..., out, in2), then contract with (..., 1, in2)
        left = (input1.unsqueeze(-2).unsqueeze(-2) @ self.weight).squeeze(-2)
        output = (left * input2.unsqueeze(-2)).sum(-1)              # (..., out)
        return output if self.bias is None else output + self.bias

    def extra_repr(self):
        return (f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")


class Embedding(Module):
    """A table of ``num_embeddings`` vectors, looked up by integer ids; weights start as
    N(0, 1) and the ``padding_idx`` row starts at zero and never gets a gradient.

    >>> import tinynlm as tn
    >>> tn.nn.Embedding(10, 4, padding_idx=0)(tn.tensor([[0, 3]])).shape
    (1, 2, 4)
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None,
                 norm_type=2.0, scale_grad_by_freq=False, sparse=False, _weight=None,
                 _freeze=False, device=None, dtype=None):
        super().__init__()
        if max_norm is not None or scale_grad_by_freq or sparse:
            raise NotImplementedError("Embedding: max_norm, scale_grad_by_freq and sparse are "
                                      "not supported")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} is out of range for "
                                 f"{num_embeddings} embeddings")
            padding_idx %= num_embeddings
        self.padding_idx = padding_idx
        if _weight is None:
            self.weight = Parameter(creation.empty(num_embeddings, embedding_dim,
                                                   **_factory(dtype, device)))
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(f"Embedding: _weight has shape {tuple(_weight.shape)}, expected "
                                 f"{(num_embeddings, embedding_dim)}")
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None):
        """An Embedding whose table is ``embeddings`` (num_embeddings, embedding_dim).

        >>> import tinynlm as tn
        >>> tn.nn.Embedding.from_pretrained(tn.eye(3))(tn.tensor([2])).tolist()
        [[0.0, 0.0, 1.0]]
        """
        if embeddings.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: embeddings must be 2-D, got shape "
                             f"{tuple(embeddings.shape)}")
        rows, columns = embeddings.shape
        return cls(rows, columns, padding_idx=padding_idx, _weight=embeddings.detach().clone(),
                   _freeze=freeze)

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx)

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        return text if self.padding_idx is None else text + f", padding_idx={self.padding_idx}"


class Dropout(Module):
    """Zero elements with probability ``p`` while training (scaling the rest by 1/(1-p)).
    (``inplace`` is accepted for PyTorch compatibility; the result is always a new tensor.)

    >>> import tinynlm as tn
    >>> tn.nn.Dropout(0.5).eval()(tn.ones(3)).tolist()
    [1.0, 1.0, 1.0]
    """

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, input):
        return F.dropout(input, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape`` dims, with a learned scale
    (ones) and shift (zeros) when ``elementwise_affine``."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) \
            else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.elementwise_affine = elementwise_affine
        factory = _factory(dtype, device)
        if elementwise_affine:
            self.weight = Parameter(creation.ones(shape, **factory))
            if bias:
                self.bias = Parameter(creation.zeros(shape, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class RMSNorm(Module):
    """Root-mean-square normalisation over the trailing dims, with a learned scale (ones)."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None,
                 dtype=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) \
            else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(creation.ones(shape, **_factory(dtype, device)))
        else:
            self.register_parameter("weight", None)

    def forward(self, input):
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class Identity(Module):
    """Returns its input."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Flatten(Module):
    """Flatten dims ``start_dim`` to ``end_dim`` (by default all but the batch dim)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class ReLU(Module):
    """``max(x, 0)`` (``inplace`` accepted for PyTorch compatibility, never needed here)."""

    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, input):
        return ops.relu(input)


class GELU(Module):
    """Gaussian error linear unit, exact or with the tanh approximation."""

    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, input):
        return ops.gelu(input, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    """Hyperbolic tangent."""

    def forward(self, input):
        return ops.tanh(input)


class Sigmoid(Module):
    """Logistic sigmoid."""

    def forward(self, input):
        return ops.sigmoid(input)


class SiLU(Module):
    """``x * sigmoid(x)`` (``inplace`` accepted for PyTorch compatibility)."""

    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, input):
        return ops.silu(input)


class Softmax(Module):
    """Softmax along ``dim``."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return ops.softmax(input, self._dim(input))

    def _dim(self, input):
        if self.dim is not None:
            return self.dim
        return 0 if input.ndim in (0, 1, 3) else 1  # PyTorch's legacy implicit choice

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """Log-softmax along ``dim``."""

    def forward(self, input):
        return ops.log_softmax(input, self._dim(input))
