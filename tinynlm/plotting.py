"""Loss curves as a PNG, through matplotlib (an optional extra: ``pip install tinynlm[plot]``)."""

from __future__ import annotations


def plot_losses(history, path, title="tinynlm training"):
    """Draw the training and validation loss per evaluation step from a trainer's history
    (a list of ``{"step", "train_loss", "val_loss"}``) and save it to ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plot_losses: plotting needs matplotlib; install it with "
                           "pip install 'tinynlm[plot]'") from None
    if not history:
        raise ValueError("plot_losses: the history is empty (no evaluation has run yet)")
    steps = [row["step"] for row in history]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(steps, [row["train_loss"] for row in history], marker="o", label="train")
    axes.plot(steps, [row["val_loss"] for row in history], marker="o", label="validation")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
