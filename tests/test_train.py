"""The trainer and the command line, on tiny runs: losses fall, checkpoints resume exactly,
bad runs stop cleanly, and every sub-command works."""

import json
import math

import numpy as np
import pytest

import tinynlm as tn
from tinynlm import cli
from tinynlm.train import TrainConfig, learning_rate_at, load_checkpoint, train

PARAGRAPH = ("The quick brown fox jumps over the lazy dog. " * 40).strip()


def _config(tmp_path, **overrides):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(PARAGRAPH, encoding="utf-8")
    values = dict(model="gpt", data=str(corpus), steps=30, batch_size=8, block_size=16,
                  n_layer=1, n_head=2, n_embd=32, hidden_size=32, learning_rate=1e-2,
                  min_learning_rate=1e-3, warmup_steps=5, eval_interval=10, eval_batches=2,
                  out=str(tmp_path / "out"))
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.parametrize("model, learning_rate", [("gpt", 1e-2), ("lstm", 3e-2), ("gru", 3e-2),
                                                  ("rnn", 3e-2)])
def test_training_lowers_the_validation_loss(tmp_path, model, learning_rate):
    config = _config(tmp_path, model=model, learning_rate=learning_rate,
                     min_learning_rate=learning_rate / 10)
    summary = train(config, progress=False, log=lambda message: None)
    with open(tmp_path / "out" / "config.json") as handle:
        history = json.load(handle)["history"]
    assert [row["step"] for row in history] == [10, 20, 30]
    assert summary["val_loss"] < math.log(len(set(PARAGRAPH))) - 1.0
    assert history[-1]["val_loss"] < history[0]["val_loss"]


def test_resume_after_an_interruption_continues_exactly(tmp_path):
    uninterrupted = _config(tmp_path, out=str(tmp_path / "a"), dropout=0.1)
    train(uninterrupted, progress=False, log=lambda message: None)

    def interrupt_at_step_20(message):
        if message.startswith("step 20:"):
            raise KeyboardInterrupt  # as Ctrl-C would, right after the step-20 evaluation

    interrupted = _config(tmp_path, out=str(tmp_path / "b"), dropout=0.1)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, progress=False, log=interrupt_at_step_20)
    with open(tmp_path / "b" / "config.json") as handle:
        assert json.load(handle)["step"] == 20
    train(interrupted, resume=True, progress=False, log=lambda message: None)
    histories = []
    for name in ("a", "b"):
        with open(tmp_path / name / "config.json") as handle:
            histories.append(json.load(handle)["history"])
    assert histories[0] == histories[1]  # identical losses, evaluation after evaluation
    model_a, *_ = load_checkpoint(str(tmp_path / "a"))
    model_b, *_ = load_checkpoint(str(tmp_path / "b"))
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    config = _config(tmp_path, steps=10)
    train(config, progress=False, log=lambda message: None)
    before = (tmp_path / "out" / "checkpoint.safetensors").read_bytes()
    exploding = _config(tmp_path, steps=20, learning_rate=1e30, min_learning_rate=1e30,
                        grad_clip=1e30)
    with pytest.raises(FloatingPointError, match="the loss became"):
        train(exploding, resume=True, progress=False, log=lambda message: None)
    assert (tmp_path / "out" / "checkpoint.safetensors").read_bytes() == before


def test_learning_rate_schedule():
    config = TrainConfig(steps=110, warmup_steps=10, learning_rate=1.0, min_learning_rate=0.1)
    rates = [learning_rate_at(step, config) for step in range(110)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)


def test_command_line_train_eval_generate(tmp_path, capsys):
    config = _config(tmp_path, steps=10)
    out = config.out
    assert cli.main(["train", "--data", config.data, "--steps", "10", "--batch-size", "8",
                     "--block-size", "16", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
                     "--eval-interval", "5", "--eval-batches", "2", "--out", out,
                     "--no-progress", "--sample-tokens", "20"]) == 0
    assert "sample:" in capsys.readouterr().out
    assert cli.main(["eval", "--checkpoint", out]) == 0
    assert "bits per token" in capsys.readouterr().out
    assert cli.main(["generate", "--checkpoint", out, "--prompt", "The ", "--max-new-tokens",
                     "15", "--top-k", "5", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("The ") and len(first.rstrip("\n")) == 4 + 15
    cli.main(["generate", "--checkpoint", out, "--prompt", "The ", "--max-new-tokens", "15",
              "--top-k", "5", "--seed", "3"])
    assert capsys.readouterr().out == first  # the seed makes sampling reproducible


def test_command_line_errors_are_clear(tmp_path, capsys):
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["train", "--data", str(tmp_path / "nope.txt"), "--out",
                     str(tmp_path / "o"), "--no-progress"]) == 1
    assert "nope.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--model", "transformerxl"])


def test_presets_and_flags_combine():
    args = cli.build_parser().parse_args(["train", "--preset", "small", "--steps", "7"])
    config = cli.config_from_arguments(args)
    assert config.steps == 7 and config.n_layer == 6
    assert isinstance(tn.nn.Module, type)


def test_loss_curve_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="plotting needs the optional matplotlib")
    config = _config(tmp_path, steps=10)
    plot = tmp_path / "loss.png"
    assert cli.main(["train", "--data", config.data, "--steps", "10", "--batch-size", "4",
                     "--block-size", "16", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
                     "--eval-interval", "5", "--eval-batches", "1", "--out", config.out,
                     "--no-progress", "--sample-tokens", "0", "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "loss curve" in capsys.readouterr().out


def test_a_crash_while_saving_a_checkpoint_leaves_the_previous_one_loadable(tmp_path,
                                                                           monkeypatch):
    config = _config(tmp_path, steps=10)
    train(config, progress=False, log=lambda message: None)
    before = (tmp_path / "out" / "checkpoint.safetensors").read_bytes()

    def crash(*args):
        raise OSError("simulated crash at the rename")

    monkeypatch.setattr("os.replace", crash)  # every atomic write renames its temporary file
    with pytest.raises(OSError, match="simulated crash"):
        train(_config(tmp_path, steps=20), resume=True, progress=False,
              log=lambda message: None)
    monkeypatch.undo()
    assert (tmp_path / "out" / "checkpoint.safetensors").read_bytes() == before
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "checkpoint.safetensors", "config.json"]  # no temporary file left behind
    model, _, _, checkpoint, _ = load_checkpoint(str(tmp_path / "out"))
    assert int(checkpoint["step"]) == 10


def test_a_corrupt_checkpoint_gives_a_clear_error(tmp_path, capsys):
    config = _config(tmp_path, steps=10)
    train(config, progress=False, log=lambda message: None)
    checkpoint = tmp_path / "out" / "checkpoint.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # truncated, as by a full disk
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "checkpoint.safetensors" in error and "truncated" in error
