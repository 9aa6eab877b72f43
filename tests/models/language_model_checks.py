"""What the GPT and RNN language model tests share: generation without any cache, as the
reference the models' cached generation must match, and a short training run."""

import numpy as np

import tinynlm as tn

# 200 characters of text for the overfitting tests.
TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was "
        "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, "
        "it was the season of Light, i")
assert len(TEXT) == 200


def naive_generate(model, idx, max_new_tokens, sampler, context_size=None):
    """Sample like ``model.generate`` but re-run the whole forward on the prefix (its last
    ``context_size`` tokens) for every new token."""
    model.eval()
    for _ in range(max_new_tokens):
        context = idx if context_size is None else idx[:, -context_size:]
        with tn.no_grad():
            logits = model(context)[0][:, -1]                               # (B, vocab)
        ids = sampler(logits.numpy())
        idx = tn.cat([idx, tn.tensor(ids[:, None])], 1)                     # (B, T + 1)
    return idx


def encoded_text():
    """TEXT as int64 ids and the vocabulary size."""
    alphabet = sorted(set(TEXT))
    return np.array([alphabet.index(char) for char in TEXT], dtype=np.int64), len(alphabet)


def train_on_text(model, length, steps, lr):
    """Train with AdamW on every window of ``length`` characters of TEXT at once; return the
    final loss."""
    ids, _ = encoded_text()
    starts = np.arange(len(ids) - length)
    windows = starts[:, None] + np.arange(length + 1)                       # (N, length + 1)
    inputs, targets = tn.tensor(ids[windows[:, :-1]]), tn.tensor(ids[windows[:, 1:]])
    optimizer = tn.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        loss = model(inputs, targets)[1]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()
