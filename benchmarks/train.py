"""The ``train`` suite: one full training step (zero the gradients, forward with the loss,
backward, AdamW) of the language models, float32.

Models: a GPT (vocabulary 96, 4 layers, 4 heads, width 128; T = 128, batch 16) and an LSTM
language model (2 layers, embedding 128, hidden 256; T = 64, batch 32) on every device, and a
GPT scaled up for the GPU (width 512, 6 layers, 8 heads; T = 1024, batch 8) on ``cuda`` only,
left out by ``--quick``.

Variants: ``fused`` and ``composed`` (tinynlm with the fused kernels on and off, the baseline)
and ``torch`` (the same model in PyTorch with tinynlm's initial weights copied in, see
:mod:`benchmarks.torch_models`; on a GPU with TF32 off, so all run in fp32). Each is built from
the same seed and the first step's losses are checked to agree. Tokens per second count
batch x length per step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

import tinynlm as tn
from tinynlm.models import GPT, GPTConfig, RNNLanguageModel, RNNLMConfig
from tinynlm.optim import AdamW

from . import torch_models
from .runner import Variant, Workload

SUITE = "train"
VOCAB_SIZE = 96
LEARNING_RATE = 1e-3
TOLERANCE = 1e-4


@dataclass(frozen=True)
class Model:
    """A model to train: its config, how to build it in tinynlm and in PyTorch."""

    name: str
    description: str
    config: object
    build: Callable
    build_torch: Callable
    batch: int
    length: int
    devices: tuple = ("cpu", "cuda")


def _gpt(name, batch, length, n_layer, n_head, n_embd, devices=("cpu", "cuda")) -> Model:
    config = GPTConfig(vocab_size=VOCAB_SIZE, block_size=length, n_layer=n_layer,
                       n_head=n_head, n_embd=n_embd)
    return Model(name, f"GPT {n_layer} layers, {n_head} heads, width {n_embd}", config, GPT,
                 torch_models.make_gpt, batch, length, devices)


def _lstm(name, batch, length) -> Model:
    config = RNNLMConfig(vocab_size=VOCAB_SIZE, cell="lstm", n_embd=128, hidden_size=256,
                         n_layer=2)
    return Model(name, "LSTM LM 2 layers, embedding 128, hidden 256", config, RNNLanguageModel,
                 torch_models.make_rnn_lm, batch, length)


def _models(quick: bool) -> list[Model]:
    small = [_gpt("gpt", 16, 128, 4, 4, 128), _lstm("lstm", 32, 64)]
    return small if quick else small + [_gpt("gpt-512x6", 8, 1024, 6, 8, 512, devices=("cuda",))]


def _batch(model: Model):
    tokens = np.random.default_rng(0).integers(0, VOCAB_SIZE, size=(model.batch, model.length + 1))
    return tokens[:, :-1], tokens[:, 1:]


def _tinynlm_variant(model: Model, fused: bool):
    def build(device, torch):
        tn.manual_seed(0)
        network = model.build(model.config).to(device)
        optimizer = AdamW(network.parameters(), lr=LEARNING_RATE)
        inputs, targets = (tn.tensor(ids, device=device) for ids in _batch(model))

        def step():
            with tn.use_fused_kernels(fused):
                return _training_step(network, optimizer, inputs, targets)
        return step
    return build


def _training_step(network, optimizer, inputs, targets):
    """Zero the gradients, forward with the loss, backward, optimizer step (either library)."""
    optimizer.zero_grad()  # PyTorch's sets them to None, as tinynlm's does
    loss = network(inputs, targets)[1]
    loss.backward()
    optimizer.step()
    return loss.detach()


def _torch_variant(model: Model):
    def build(device, torch):
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        tn.manual_seed(0)
        source = model.build(model.config)
        network = model.build_torch(torch, model.config)
        torch_models.copy_parameters(source, network, torch)
        network = network.to(device)
        optimizer = torch.optim.AdamW(network.parameters(), lr=LEARNING_RATE)
        inputs, targets = (torch.from_numpy(ids).to(device) for ids in _batch(model))
        return functools.partial(_training_step, network, optimizer, inputs, targets)
    return build


def workloads(quick: bool) -> list[Workload]:
    """One workload per model, at the quick or the full sizes."""
    return [Workload(
        SUITE, model.name, f"{model.description}; T={model.length}, batch {model.batch}",
        (Variant("fused", _tinynlm_variant(model, True)),
         Variant("composed", _tinynlm_variant(model, False)),
         Variant("torch", _torch_variant(model))),
        baseline="composed", params={"batch": model.batch, "length": model.length},
        devices=model.devices, tokens=model.batch * model.length, tolerance=TOLERANCE,
        smallest=model.devices != ("cuda",)) for model in _models(quick)]
