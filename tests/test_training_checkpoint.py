"""A whole training checkpoint (model, optimizer, scheduler, step, RNG state) saved with tn.save
and restored with tn.load continues exactly like an uninterrupted run, on the CPU."""

import numpy as np
import pytest

import tinynlm as tn
from tinynlm import nn
from tinynlm.optim import AdamW
from tinynlm.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR


def _setup():
    model = nn.Sequential(nn.Embedding(10, 8), nn.Dropout(0.1), nn.Flatten(), nn.Linear(24, 10))
    optimizer = AdamW(model.parameters(), lr=1e-2)
    scheduler = SequentialLR(optimizer, [LinearLR(optimizer, 0.1, total_iters=3),
                                         CosineAnnealingLR(optimizer, T_max=10)], milestones=[3])
    return model, optimizer, scheduler


def _train(model, optimizer, scheduler, steps):
    losses = []
    for _ in range(steps):
        ids = tn.randint(0, 10, (16, 3))  # drawn from the generator that the checkpoint keeps
        loss = nn.functional.cross_entropy(model(ids), ids[:, 0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def test_resuming_from_a_checkpoint_gives_the_same_losses(tmp_path):
    tn.manual_seed(0)
    reference = _train(*_setup(), steps=10)

    tn.manual_seed(0)
    model, optimizer, scheduler = _setup()
    first_half = _train(model, optimizer, scheduler, steps=5)
    path = tmp_path / "checkpoint.safetensors"
    tn.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "step": 5, "rng": tn.get_rng_state()}, path)

    tn.manual_seed(123)  # a different generator state, and fresh objects
    model, optimizer, scheduler = _setup()
    checkpoint = tn.load(path)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    tn.set_rng_state(checkpoint["rng"])
    assert checkpoint["step"] == 5
    second_half = _train(model, optimizer, scheduler, steps=5)
    assert first_half + second_half == reference  # bit-identical


def test_a_checkpoint_for_another_model_is_refused_clearly(tmp_path):
    path = tmp_path / "weights.safetensors"
    tn.save(nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(RuntimeError, match=r"shape mismatch for weight: the checkpoint has \(2, 3\)"):
        nn.Linear(4, 2).load_state_dict(tn.load(path))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(Exception, match="weights.safetensors"):
        tn.load(path)


def test_set_rng_state_refuses_garbage():
    with pytest.raises(ValueError, match="set_rng_state"):
        tn.set_rng_state({"cpu": "nonsense"})
    np.testing.assert_equal(tn.get_rng_state()["cpu"]["bit_generator"], "PCG64")
