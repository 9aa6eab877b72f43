"""The ``layers`` suite: forward + backward of single layers, float32.

Each layer is built once per variant from the same seed: ``fused`` and ``composed`` are tinynlm
with the fused kernels on and off (the baseline), ``torch`` is the PyTorch layer with tinynlm's
weights copied in, so all three compute the same numbers (checked on the first call). A step
clears the gradients, runs the forward and ``backward`` with a fixed output gradient, and
returns the output and the input's (or, for the embedding, the weight's) gradient.

Sizes (``--quick`` halves batch and length): Linear 512 -> 512 and LayerNorm(512) on (32, 64,
512); Embedding 10000 x 256 on (32, 64) ids; LSTM and GRU, 2 layers, input and hidden 256, T =
64, batch 32; MultiheadAttention (width 256, 4 heads, self-attention, no weights returned) and
a Transformer encoder layer (width 256, 4 heads, feed-forward 1024, no dropout) on (16, 128, 256).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import tinynlm as tn

from .runner import Variant, Workload
from .torch_models import copy_parameters

SUITE = "layers"
TOLERANCE = 1e-3


@dataclass(frozen=True)
class Layer:
    """How to make a layer in either library (``make(nn_module)``, the same arguments), its
    input (``input_shape``, token ids below ``ids_below`` if given) and how to call it."""

    name: str
    description: str
    make: Callable
    input_shape: tuple
    call: Callable = staticmethod(lambda layer, x: layer(x))
    ids_below: int | None = None


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _layers(quick: bool) -> list[Layer]:
    batch, length = (16, 32) if quick else (32, 64)
    attention_batch, attention_length = (8, 64) if quick else (16, 128)
    return [
        Layer("linear", "Linear 512 -> 512", lambda nn: nn.Linear(512, 512),
              (batch, length, 512)),
        Layer("layer_norm", "LayerNorm(512)", lambda nn: nn.LayerNorm(512),
              (batch, length, 512)),
        Layer("embedding", "Embedding 10000 x 256", lambda nn: nn.Embedding(10000, 256),
              (batch, length), ids_below=10000),
        Layer("lstm", "LSTM 2 x 256, batch_first",
              lambda nn: nn.LSTM(256, 256, num_layers=2, batch_first=True),
              (batch, length, 256), call=lambda layer, x: _first(layer(x))),
        Layer("gru", "GRU 2 x 256, batch_first",
              lambda nn: nn.GRU(256, 256, num_layers=2, batch_first=True),
              (batch, length, 256), call=lambda layer, x: _first(layer(x))),
        Layer("multihead_attention", "MultiheadAttention 256, 4 heads, self-attention",
              lambda nn: nn.MultiheadAttention(256, 4, batch_first=True),
              (attention_batch, attention_length, 256),
              call=lambda layer, x: layer(x, x, x, need_weights=False)[0]),
        Layer("transformer_encoder_layer", "TransformerEncoderLayer 256, 4 heads, ff 1024",
              lambda nn: nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0,
                                                    batch_first=True),
              (attention_batch, attention_length, 256)),
    ]


def _inputs(layer: Layer):
    rng = np.random.default_rng(0)
    if layer.ids_below:
        x = rng.integers(0, layer.ids_below, size=layer.input_shape)
    else:
        x = rng.standard_normal(layer.input_shape, dtype=np.float32)
    return x, rng


def _tinynlm_variant(layer: Layer, fused: bool):
    def build(device, torch):
        tn.manual_seed(0)
        module = layer.make(tn.nn).to(device)
        x_values, rng = _inputs(layer)
        x = tn.tensor(x_values, device=device, requires_grad=not layer.ids_below)
        with tn.no_grad():
            shape = layer.call(module, x).shape
        grad_output = tn.tensor(rng.standard_normal(shape, dtype=np.float32), device=device)
        watched = module.weight if layer.ids_below else x

        def step():
            with tn.use_fused_kernels(fused):
                module.zero_grad()
                x.grad = None
                output = layer.call(module, x)
                output.backward(grad_output)
                return output, watched.grad
        return step
    return build


def _torch_variant(layer: Layer):
    def build(device, torch):
        tn.manual_seed(0)
        source = layer.make(tn.nn)
        module = layer.make(torch.nn)
        copy_parameters(source, module, torch)
        module = module.to(device)
        x_values, rng = _inputs(layer)
        x = torch.from_numpy(x_values).to(device)
        if not layer.ids_below:
            x.requires_grad_(True)
        with torch.no_grad():
            shape = tuple(layer.call(module, x).shape)
        grad_output = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)).to(device)

        def step():
            module.zero_grad(set_to_none=True)
            x.grad = None
            output = layer.call(module, x)
            output.backward(grad_output)
            return output, (module.weight if layer.ids_below else x).grad
        return step
    return build


def workloads(quick: bool) -> list[Workload]:
    """One workload per layer, at the quick or the full sizes."""
    result = []
    for layer in _layers(quick):
        tokens = int(np.prod(layer.input_shape[:2]))
        result.append(Workload(
            SUITE, layer.name, f"{layer.description}, input {layer.input_shape}, fwd+bwd",
            (Variant("fused", _tinynlm_variant(layer, True)),
             Variant("composed", _tinynlm_variant(layer, False)),
             Variant("torch", _torch_variant(layer))),
            baseline="composed", params={"input_shape": list(layer.input_shape)},
            tokens=tokens, tolerance=TOLERANCE, smallest=True))
    return result
