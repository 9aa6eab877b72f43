"""Training a character-level language model: the configuration, presets and the loop.

The loop is one plain function, :func:`train`, that a user can read in one screen: draw a batch,
forward, backward, clip, step the optimizer and the learning-rate schedule (linear warmup, then
cosine decay), evaluate every ``eval_interval`` steps on the held-out last 10% of the corpus, and
keep a checkpoint that ``--resume`` continues from exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass

import tinynlm as tn

from .data import (ByteTokenizer, CharTokenizer, RandomWindowBatcher, load_corpus,
                   sequential_batches, split_train_val, tokenizer_from_dict)
from .models import GPT, GPTConfig, RNNLanguageModel, RNNLMConfig

MODELS = ("gpt", "lstm", "gru", "rnn")


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved beside each checkpoint)."""

    model: str = "gpt"
    data: str | None = None          # a UTF-8 text file; None: Python's documentation topics
    tokenizer: str = "char"          # "char" or "byte"
    device: str = "cpu"
    steps: int = 700
    batch_size: int = 32
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    hidden_size: int = 256           # recurrent models
    dropout: float = 0.0
    learning_rate: float = 6e-3
    min_learning_rate: float = 6e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 350
    eval_batches: int = 20
    seed: int = 1337
    out: str = "out"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS = {
    # tiny: the README's main job; about three minutes on two CPU cores. Short windows and a
    # high learning rate: the loss falls fastest per second of CPU at this size.
    "tiny": dict(model="gpt", steps=700, batch_size=32, block_size=64, n_layer=4, n_head=4,
                 n_embd=128, learning_rate=6e-3, min_learning_rate=6e-4, warmup_steps=50,
                 eval_interval=350),
    # small: a longer run for a better model.
    "small": dict(model="gpt", steps=5000, batch_size=32, block_size=256, n_layer=6, n_head=6,
                  n_embd=192, dropout=0.1, learning_rate=1e-3, min_learning_rate=1e-4,
                  warmup_steps=200),
}


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to ``learning_rate``, then cosine decay to ``min_learning_rate``.

    >>> config = TrainConfig(steps=100, warmup_steps=10, learning_rate=1.0, min_learning_rate=0.0)
    >>> learning_rate_at(4, config), learning_rate_at(10, config), learning_rate_at(100, config)
    (0.5, 1.0, 0.0)
    """
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.min_learning_rate + cosine * (config.learning_rate - config.min_learning_rate)


def build_model(config: TrainConfig, vocab_size: int):
    """The model a config names, on its device."""
    if config.model == "gpt":
        model = GPT(GPTConfig(vocab_size=vocab_size, block_size=config.block_size,
                              n_layer=config.n_layer, n_head=config.n_head,
                              n_embd=config.n_embd, dropout=config.dropout))
    elif config.model in ("lstm", "gru", "rnn"):
        model = RNNLanguageModel(RNNLMConfig(vocab_size=vocab_size, cell=config.model,
                                             n_embd=config.n_embd,
                                             hidden_size=config.hidden_size,
                                             n_layer=config.n_layer, dropout=config.dropout))
    else:
        raise ValueError(f"train: unknown model {config.model!r}; choose one of {MODELS}")
    return model.to(config.device)


def make_tokenizer(kind: str, text: str):
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "byte":
        return ByteTokenizer()
    raise ValueError(f"train: unknown tokenizer {kind!r}; choose 'char' or 'byte'")


@tn.no_grad()
def evaluate(model, ids, config: TrainConfig) -> float:
    """Mean cross-entropy (nats per token) over fixed windows of ``ids``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in sequential_batches(ids, config.block_size, config.batch_size, config.device,
                                   max_batches=config.eval_batches):
        _, loss = _forward(model, x, y)
        total += loss.item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / max(count, 1)


def _forward(model, x, y):
    """(logits, loss) for either kind of model."""
    outputs = model(x, y)
    return outputs[0], outputs[1]


# ----------------------------------------------------------------------------- checkpoints

CHECKPOINT_FILE = "checkpoint.safetensors"
CONFIG_FILE = "config.json"


def save_checkpoint(out_dir, model, optimizer, sampler_state, rng_state, step, config,
                    tokenizer, history):
    """Write the model, optimizer, batch sampler, step and RNG state (safetensors) and the
    config, tokenizer and loss history (JSON), each atomically."""
    os.makedirs(out_dir, exist_ok=True)
    tn.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "batcher": sampler_state, "step": step, "rng": rng_state},
            os.path.join(out_dir, CHECKPOINT_FILE))
    _write_json_atomically(os.path.join(out_dir, CONFIG_FILE),
                           {"config": config.to_dict(), "tokenizer": tokenizer.to_dict(),
                            "history": history, "step": step})


def _write_json_atomically(path, payload):
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_checkpoint(out_dir):
    """``(meta, checkpoint)``: the JSON side (config, tokenizer, history) and the tensors."""
    config_path = os.path.join(out_dir, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"load_checkpoint: {config_path} does not exist (is {out_dir!r} a "
                                "checkpoint directory written by `tinynlm train`?)")
    with open(config_path, encoding="utf-8") as handle:
        meta = json.load(handle)
    return meta, tn.load(os.path.join(out_dir, CHECKPOINT_FILE))


def load_checkpoint(out_dir, device=None):
    """``(model, tokenizer, config, checkpoint, history)`` from a directory that
    :func:`save_checkpoint` wrote, the model rebuilt and loaded (on ``device`` if given)."""
    meta, checkpoint = read_checkpoint(out_dir)
    config = TrainConfig(**meta["config"])
    if device is not None:
        config.device = device
    tokenizer = tokenizer_from_dict(meta["tokenizer"])
    model = build_model(config, tokenizer.vocab_size)
    model.load_state_dict(checkpoint["model"])
    return model, tokenizer, config, checkpoint, meta.get("history", [])


# ----------------------------------------------------------------------------- the loop


def train(config: TrainConfig, resume: bool = False, progress=True, log=print) -> dict:
    """Train ``config.model`` on the corpus and return a summary (final losses, time, speed).

    Ctrl-C saves a checkpoint before stopping; a non-finite loss stops the run with a clear
    message and leaves the last good checkpoint in place.
    """
    tn.manual_seed(config.seed)
    text = load_corpus(config.data)
    tokenizer = make_tokenizer(config.tokenizer, text)
    train_ids, val_ids = split_train_val(tokenizer.encode(text), val_fraction=0.1,
                                         min_length=config.block_size + 1)
    model = build_model(config, tokenizer.vocab_size)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = tn.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                {"params": no_decay, "weight_decay": 0.0}],
                               lr=config.learning_rate, betas=(0.9, 0.99))
    batcher = RandomWindowBatcher(train_ids, config.block_size, config.batch_size,
                                  seed=config.seed)
    start_step, history = 0, []
    if resume and os.path.isfile(os.path.join(config.out, CHECKPOINT_FILE)):
        meta, checkpoint = read_checkpoint(config.out)
        history = meta.get("history", [])
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        batcher.load_state_dict(checkpoint["batcher"])
        tn.set_rng_state(checkpoint["rng"])
        start_step = int(checkpoint["step"])
        log(f"resumed from {config.out} at step {start_step}")
    log(f"model {config.model}: {model.num_parameters():,} parameters; vocabulary "
        f"{tokenizer.vocab_size}; {len(train_ids):,} training and {len(val_ids):,} validation "
        f"tokens; device {config.device}")

    bar = _ProgressBar(progress, start_step, config.steps)
    started = time.perf_counter()
    tokens_per_step = config.batch_size * config.block_size
    completed, loss_value, val_loss = start_step, float("nan"), None
    loss_total, loss_count = 0.0, 0  # training losses since the last evaluation
    # The sampler and RNG state as of the last completed step: what a checkpoint must hold so
    # that a resumed run draws exactly the batches and dropout masks the uninterrupted one would.
    random_state = (batcher.state_dict(), tn.get_rng_state())
    try:
        for step in range(start_step, config.steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(step, config)
            x, y = batcher.next_batch(config.device)
            _, loss = _forward(model, x, y)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"train: the loss became {loss_value} at step {step}; stopping. The last "
                    f"good checkpoint in {config.out} is kept (try a lower --lr)")
            optimizer.zero_grad()
            loss.backward()
            tn.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            completed = step + 1
            random_state = (batcher.state_dict(), tn.get_rng_state())
            loss_total, loss_count = loss_total + loss_value, loss_count + 1
            if completed % config.eval_interval == 0 or completed == config.steps:
                val_loss = evaluate(model, val_ids, config)
                history.append({"step": completed, "train_loss": loss_total / loss_count,
                                "val_loss": val_loss})
                loss_total, loss_count = 0.0, 0
                save_checkpoint(config.out, model, optimizer, *random_state, completed, config,
                                tokenizer, history)
                _report(bar, log, completed, val_loss)
            elapsed = time.perf_counter() - started
            bar.update(loss_value, tokens_per_step * (completed - start_step) / max(elapsed, 1e-9))
    except KeyboardInterrupt:
        log(f"\ninterrupted after step {completed}: saving a checkpoint to {config.out}")
        save_checkpoint(config.out, model, optimizer, *random_state, completed, config,
                        tokenizer, history)
        raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    summary = {"steps": config.steps, "train_loss": loss_value, "val_loss": val_loss,
               "seconds": elapsed, "parameters": model.num_parameters(),
               "tokens_per_second": tokens_per_step * (config.steps - start_step) / max(elapsed, 1e-9)}
    if val_loss is not None:
        log(f"done: {config.steps} steps in {elapsed:.0f} s; validation loss {val_loss:.3f} nats "
            f"per character ({val_loss / math.log(2):.3f} bits, perplexity {math.exp(val_loss):.2f})")
    return summary


def _report(bar, log, step, val_loss):
    bar.write(f"step {step}: validation loss {val_loss:.4f} nats, "
              f"{val_loss / math.log(2):.3f} bits per character, perplexity {math.exp(val_loss):.2f}",
              log)


class _ProgressBar:
    """A tqdm bar (step, loss, tokens per second, time left) when tqdm is installed and wanted;
    otherwise a quiet stand-in."""

    def __init__(self, enabled, start, total):
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(self, loss, tokens_per_second):
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_second:,.0f}",
                                 refresh=False)
            self.bar.update(1)

    def write(self, message, log):
        if self.bar is not None:
            self.bar.write(message)
        else:
            log(message)

    def close(self):
        if self.bar is not None:
            self.bar.close()
