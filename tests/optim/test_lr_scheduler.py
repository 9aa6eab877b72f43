"""Learning-rate schedulers: PyTorch's values step by step, state dicts, resuming and errors.

Tests that take the ``torch`` fixture compare with ``torch.optim.lr_scheduler`` and are skipped
when PyTorch is not installed; every other test needs only tinynlm.
"""

import math

import numpy as np
import pytest

import tinynlm as tn
from tinynlm import optim
from tinynlm.optim import lr_scheduler

BASE_LRS = [0.1, 0.05]  # two parameter groups


def decay(epoch):
    return 0.95 ** epoch


def warmup(epoch):
    return min(1.0, (epoch + 1) / 4)


# Each maker builds a scheduler from a scheduler module (tinynlm's or torch's) and an optimizer.
SCHEDULES = {
    "StepLR": lambda m, o: m.StepLR(o, step_size=7, gamma=0.3),
    "LambdaLR": lambda m, o: m.LambdaLR(o, decay),
    "LambdaLR-per-group": lambda m, o: m.LambdaLR(o, [decay, warmup]),
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, T_max=10, eta_min=0.01),
    "CosineAnnealingLR-odd-period": lambda m, o: m.CosineAnnealingLR(o, T_max=7),
    "LinearLR": lambda m, o: m.LinearLR(o),
    "LinearLR-down": lambda m, o: m.LinearLR(o, start_factor=0.9, end_factor=0.1,
                                              total_iters=12),
    "SequentialLR-warmup-cosine": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=5),
            m.CosineAnnealingLR(o, T_max=20, eta_min=1e-4)], milestones=[5]),
    "SequentialLR-three": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.5, total_iters=3), m.StepLR(o, step_size=4, gamma=0.5),
            m.LambdaLR(o, decay)], milestones=[4, 15]),
    "SequentialLR-nested": lambda m, o: m.SequentialLR(
        o, [m.SequentialLR(o, [m.LinearLR(o, start_factor=0.2, total_iters=4),
                               m.StepLR(o, step_size=3, gamma=0.8)], milestones=[4]),
            m.CosineAnnealingLR(o, T_max=6)], milestones=[12]),
}


def resumed_cosine(m, o):
    """A CosineAnnealingLR resumed at epoch 5 (its first value comes from the closed form)."""
    for group in o.param_groups:
        group["initial_lr"] = group["lr"]
    return m.CosineAnnealingLR(o, T_max=9, eta_min=0.001, last_epoch=5)


SCHEDULES["CosineAnnealingLR-resumed"] = resumed_cosine


def lr_history(optimizer, scheduler, steps=30):
    """The learning rates of every group, before each of ``steps`` epochs."""
    history = []
    for _ in range(steps):
        history.append([group["lr"] for group in optimizer.param_groups])
        assert scheduler.get_last_lr() == history[-1]
        optimizer.step()
        scheduler.step()
    return history


def our_optimizer():
    return optim.SGD([{"params": [tn.zeros(1, requires_grad=True)], "lr": lr}
                      for lr in BASE_LRS])


# PyTorch warns (wrongly) about the step order for a SequentialLR inside another.
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_matches_torch_for_thirty_steps(torch, name):
    ours = our_optimizer()
    theirs = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": lr}
                              for lr in BASE_LRS])
    expected = lr_history(theirs, SCHEDULES[name](torch.optim.lr_scheduler, theirs))
    actual = lr_history(ours, SCHEDULES[name](lr_scheduler, ours))
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_state_dict_round_trip_continues_the_same_schedule(name):
    optimizer = our_optimizer()
    scheduler = SCHEDULES[name](lr_scheduler, optimizer)
    lr_history(optimizer, scheduler, steps=8)
    saved_optimizer, saved_scheduler = optimizer.state_dict(), scheduler.state_dict()
    expected = lr_history(optimizer, scheduler, steps=12)

    resumed_optimizer = our_optimizer()
    resumed_scheduler = SCHEDULES[name](lr_scheduler, resumed_optimizer)
    resumed_optimizer.load_state_dict(saved_optimizer)
    resumed_scheduler.load_state_dict(saved_scheduler)
    assert lr_history(resumed_optimizer, resumed_scheduler, steps=12) == expected


def test_closed_forms_agree_with_the_recursions():
    """Each scheduler's closed form (used when SequentialLR restarts it) matches its own
    step-by-step values."""
    for make in (SCHEDULES["StepLR"], SCHEDULES["CosineAnnealingLR"], SCHEDULES["LinearLR-down"]):
        optimizer = our_optimizer()
        scheduler = make(lr_scheduler, optimizer)
        for _ in range(25):
            scheduler.step()
            np.testing.assert_allclose(scheduler._closed_form_lr(), scheduler.get_last_lr(),
                                       rtol=1e-12, atol=1e-15)


def test_cosine_annealing_follows_the_cosine():
    optimizer = our_optimizer()
    scheduler = lr_scheduler.CosineAnnealingLR(optimizer, T_max=10, eta_min=0.01)
    history = lr_history(optimizer, scheduler, steps=21)
    for epoch, lrs in enumerate(history):
        expected = [0.01 + (base - 0.01) * (1 + math.cos(math.pi * epoch / 10)) / 2
                    for base in BASE_LRS]
        np.testing.assert_allclose(lrs, expected, rtol=1e-12)


def test_schedulers_record_initial_lr_and_keep_python_floats():
    optimizer = our_optimizer()
    lr_scheduler.StepLR(optimizer, step_size=2)
    assert [group["initial_lr"] for group in optimizer.param_groups] == BASE_LRS
    assert all(type(group["lr"]) is float for group in optimizer.param_groups)


def test_scheduler_errors():
    optimizer = our_optimizer()
    with pytest.raises(TypeError, match="StepLR: list is not an Optimizer"):
        lr_scheduler.StepLR([], step_size=1)
    with pytest.raises(KeyError, match="no 'initial_lr'"):
        lr_scheduler.CosineAnnealingLR(optimizer, T_max=5, last_epoch=3)
    with pytest.raises(ValueError, match="start_factor must be in"):
        lr_scheduler.LinearLR(optimizer, start_factor=0.0)
    with pytest.raises(ValueError, match="end_factor must be in"):
        lr_scheduler.LinearLR(optimizer, end_factor=1.5)
    with pytest.raises(ValueError, match="expected 2 lr_lambdas"):
        lr_scheduler.LambdaLR(optimizer, [decay])
    first = lr_scheduler.StepLR(optimizer, step_size=1)
    second = lr_scheduler.StepLR(optimizer, step_size=2)
    with pytest.raises(ValueError, match="expected 1 milestones"):
        lr_scheduler.SequentialLR(optimizer, [first, second], milestones=[])
    with pytest.raises(ValueError, match="at least one scheduler"):
        lr_scheduler.SequentialLR(optimizer, [], milestones=[])
    other = lr_scheduler.StepLR(our_optimizer(), step_size=1)
    with pytest.raises(ValueError, match="scheduler 1 .StepLR. belongs to another optimizer"):
        lr_scheduler.SequentialLR(optimizer, [first, other], milestones=[3])
