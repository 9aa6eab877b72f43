"""A first end-to-end run: a tiny character-level language model trained for a few steps.

The model reads the three previous characters of Python's own documentation text
(``pydoc_data.topics``, on every Python install) and predicts the next one:
embeddings -> a tanh hidden layer -> logits, trained with cross-entropy and SGD with momentum.
It prints the falling loss. Run it with ``python -m tinynlm``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tinynlm as tn

CONTEXT = 3


def load_corpus() -> str:
    """The English text of Python's documentation topics (about 465,000 characters)."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


def cross_entropy(logits, targets):
    """Mean negative log-likelihood of ``targets`` (B,) under ``logits`` (B, V)."""
    log_probs = logits.log_softmax(dim=-1)                             # (B, V)
    return -log_probs.gather(1, targets.unsqueeze(1)).mean()


def train(steps=600, batch_size=128, embed=24, hidden=128, lr=0.1, seed=0, device="cpu",
          log_every=50):
    """Train the demo model; return the (step, loss, uniform-guess loss) rows it printed."""
    tn.manual_seed(seed)
    text = load_corpus()
    vocabulary = sorted(set(text))
    lookup = {c: i for i, c in enumerate(vocabulary)}
    data = np.fromiter((lookup[c] for c in text), dtype=np.int64, count=len(text))
    rng = np.random.default_rng(seed)
    vocab_size = len(vocabulary)

    def parameter(*shape, scale):
        return (tn.randn(*shape, device=device) * scale).requires_grad_()

    embedding = parameter(vocab_size, embed, scale=1.0)
    w_hidden = parameter(CONTEXT * embed, hidden, scale=(CONTEXT * embed) ** -0.5)
    b_hidden = tn.zeros(hidden, device=device, requires_grad=True)
    w_out = parameter(hidden, vocab_size, scale=hidden ** -0.5 * 0.1)
    b_out = tn.zeros(vocab_size, device=device, requires_grad=True)
    parameters = [embedding, w_hidden, b_hidden, w_out, b_out]
    velocities = [np.zeros(p.shape, p.dtype) for p in parameters]

    history = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        starts = rng.integers(0, len(data) - CONTEXT - 1, size=batch_size)
        windows = data[starts[:, None] + np.arange(CONTEXT + 1)]       # (B, CONTEXT + 1)
        context = tn.tensor(windows[:, :CONTEXT], device=device)       # (B, CONTEXT)
        targets = tn.tensor(windows[:, CONTEXT], device=device)        # (B,)

        features = embedding[context].reshape(batch_size, -1)          # (B, CONTEXT * embed)
        hidden_state = (features @ w_hidden + b_hidden).tanh()         # (B, hidden)
        loss = cross_entropy(hidden_state @ w_out + b_out, targets)

        for p in parameters:
            p.grad = None
        loss.backward()
        with tn.no_grad():
            for p, velocity in zip(parameters, velocities):
                velocity *= 0.9
                velocity += p.grad.numpy()
                p.data -= lr * velocity
        if step % log_every == 0 or step == 1:
            history.append((step, loss.item(), float(np.log(vocab_size))))
            print(f"step {step:4d}  loss {loss.item():.3f}  ({time.perf_counter() - start:.1f} s)",
                  flush=True)
    return history


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tinynlm",
                                     description="Train a tiny character-level model for a few "
                                                 "steps and print the falling loss.")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    history = train(steps=args.steps, device=args.device, seed=args.seed)
    first, last = history[0][1], history[-1][1]
    print(f"loss went from {first:.3f} to {last:.3f} in {args.steps} steps "
          f"(a uniform guess over the characters scores {history[0][2]:.3f})")


if __name__ == "__main__":
    main()
