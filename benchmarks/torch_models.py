"""PyTorch replicas of tinynlm's models, for the benchmarks' reference column (PyTorch is an
optional benchmark dependency; nothing here is imported unless PyTorch is compared).

The replicas use the same parameter names as tinynlm's models (nanoGPT's for the GPT), so
:func:`copy_parameters` gives them tinynlm's weights and both compute the same loss: the
benchmarks check that before timing, so a ratio always compares the same arithmetic.
"""

from __future__ import annotations

import numpy as np

from tinynlm import backend


def copy_parameters(source, target, torch_module) -> None:
    """Copy every parameter of the tinynlm module ``source`` into the PyTorch module ``target``
    of the same parameter names and shapes (tied weights are copied once per name)."""
    ours = dict(source.named_parameters())
    theirs = dict(target.named_parameters())
    if set(ours) != set(theirs):
        raise ValueError(f"copy_parameters: names differ: only tinynlm {sorted(set(ours) - set(theirs))}, "
                         f"only torch {sorted(set(theirs) - set(ours))}")
    with torch_module.no_grad():
        for name, parameter in theirs.items():
            values = backend.to_host(ours[name].data)
            if tuple(values.shape) != tuple(parameter.shape):
                raise ValueError(f"copy_parameters: {name} is {values.shape} in tinynlm, "
                                 f"{tuple(parameter.shape)} in torch")
            parameter.copy_(torch_module.from_numpy(np.ascontiguousarray(values)))


def make_gpt(torch_module, config):
    """nanoGPT's GPT as tinynlm builds it (pre-norm blocks, fused q/k/v, 4x GELU MLP, tied
    head), for a :class:`tinynlm.models.GPTConfig`; ``forward(idx, targets)`` -> (logits, loss)."""
    nn = torch_module.nn
    functional = nn.functional

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
            self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.c_attn(x).split(C, dim=2)                        # 3 x (B, T, C)
            heads = config.n_head
            q, k, v = (t.view(B, T, heads, C // heads).transpose(1, 2)
                       for t in (q, k, v))                                   # (B, nh, T, hs)
            y = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).reshape(B, T, C))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
            self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

        def forward(self, x):
            return self.c_proj(functional.gelu(self.c_fc(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
            self.attn = CausalSelfAttention()
            self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
            self.mlp = MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                h=nn.ModuleList([Block() for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            ))
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.transformer.wte.weight = self.lm_head.weight

        def forward(self, idx, targets):
            T = idx.shape[1]
            positions = torch_module.arange(T, device=idx.device)
            x = self.transformer.wte(idx) + self.transformer.wpe(positions)
            for block in self.transformer.h:
                x = block(x)
            logits = self.lm_head(self.transformer.ln_f(x))
            loss = functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                            targets.reshape(-1))
            return logits, loss

    return GPT()


def make_rnn_lm(torch_module, config):
    """tinynlm's RNN language model (embedding, a multi-layer LSTM/GRU/RNN, linear head) for a
    :class:`tinynlm.models.RNNLMConfig`; ``forward(idx, targets)`` -> (logits, loss)."""
    nn = torch_module.nn
    cells = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

    class RNNLanguageModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(config.vocab_size, config.n_embd)
            self.rnn = cells[config.cell](config.n_embd, config.hidden_size,
                                          num_layers=config.n_layer, batch_first=True)
            self.head = nn.Linear(config.hidden_size, config.vocab_size)

        def forward(self, idx, targets):
            output, _ = self.rnn(self.embedding(idx))
            logits = self.head(output)
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                               targets.reshape(-1))
            return logits, loss

    return RNNLanguageModel()

