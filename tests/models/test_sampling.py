"""Sampler: temperature, top-k, top-p, reproducibility, and the distribution actually drawn."""

import numpy as np
import pytest

import tinynlm as tn
from tinynlm.models import Sampler

PROBABILITIES = np.array([0.5, 0.3, 0.15, 0.05])


def random_logits(seed, batch=8, vocab=20):
    return np.random.default_rng(seed).normal(size=(batch, vocab)) * 3


@pytest.mark.parametrize("seed", range(3))
def test_greedy_limits_agree_with_argmax(seed):
    logits = random_logits(seed)
    greedy = logits.argmax(1)
    generator = np.random.default_rng(seed)
    assert Sampler(temperature=0)(logits).tolist() == greedy.tolist()
    assert Sampler(top_k=1, generator=generator)(logits).tolist() == greedy.tolist()
    assert Sampler(top_p=1e-9, generator=generator)(logits).tolist() == greedy.tolist()
    # As the temperature goes to 0 the distribution piles onto the argmax.
    assert Sampler(temperature=1e-4, generator=generator)(logits).tolist() == greedy.tolist()


def test_temperature_zero_draws_no_random_numbers():
    generator = np.random.default_rng(0)
    Sampler(temperature=0, generator=generator)(random_logits(0))
    assert generator.random() == np.random.default_rng(0).random()


def test_seeded_generators_reproduce_the_draws():
    logits = random_logits(1, batch=64)

    def draws(seed):
        sampler = Sampler(temperature=0.8, top_k=10, top_p=0.9,
                          generator=np.random.default_rng(seed))
        return [sampler(logits).tolist() for _ in range(3)]

    assert draws(5) == draws(5)
    assert draws(5) != draws(6)


def test_without_a_generator_manual_seed_reproduces_the_draws():
    logits = random_logits(2, batch=64)
    tn.manual_seed(11)
    first = Sampler()(logits)
    tn.manual_seed(11)
    assert Sampler()(logits).tolist() == first.tolist()


def test_temperature_top_k_and_top_p_distributions():
    logits = np.log(PROBABILITIES)[None, :]
    np.testing.assert_allclose(Sampler().probabilities(logits)[0], PROBABILITIES)
    sharpened = PROBABILITIES ** 2 / (PROBABILITIES ** 2).sum()
    np.testing.assert_allclose(Sampler(temperature=0.5).probabilities(logits)[0], sharpened)
    np.testing.assert_allclose(Sampler(top_k=2).probabilities(logits)[0],
                               [0.5 / 0.8, 0.3 / 0.8, 0, 0])
    # 0.5 + 0.3 reaches 0.7, so the nucleus is the two most likely tokens.
    np.testing.assert_allclose(Sampler(top_p=0.7).probabilities(logits)[0],
                               [0.5 / 0.8, 0.3 / 0.8, 0, 0])
    np.testing.assert_allclose(Sampler(top_p=0.85).probabilities(logits)[0],
                               [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0])
    np.testing.assert_allclose(Sampler(top_p=1.0).probabilities(logits)[0], PROBABILITIES)
    # top-k first, then the nucleus of what is left: after top_k=2 the most likely token holds
    # 0.625 >= 0.6 on its own, while over all four tokens it would need the second one too.
    np.testing.assert_allclose(Sampler(top_p=0.6).probabilities(logits)[0],
                               [0.5 / 0.8, 0.3 / 0.8, 0, 0])
    np.testing.assert_allclose(Sampler(top_k=2, top_p=0.6).probabilities(logits)[0],
                               [1, 0, 0, 0])


def test_top_p_filters_each_row_on_its_own():
    logits = np.log(np.array([PROBABILITIES, PROBABILITIES[::-1]]))
    np.testing.assert_allclose(Sampler(top_p=0.6).probabilities(logits),
                               [[0.625, 0.375, 0, 0], [0, 0, 0.375, 0.625]])


@pytest.mark.parametrize("options", [{}, {"temperature": 1.5}, {"top_k": 3}, {"top_p": 0.75}])
def test_draws_follow_the_probabilities(options):
    draws = 40_000
    sampler = Sampler(**options, generator=np.random.default_rng(3))
    logits = np.repeat(np.log(PROBABILITIES)[None, :], draws, axis=0)        # (draws, vocab)
    expected = sampler.probabilities(logits[:1])[0]
    frequencies = np.bincount(sampler(logits), minlength=len(PROBABILITIES)) / draws
    tolerance = 5 * np.sqrt(expected * (1 - expected) / draws) + 1e-12   # 5 standard errors
    assert np.all(np.abs(frequencies - expected) <= tolerance), (frequencies, expected)


def test_sampler_returns_int64_ids_in_range():
    ids = Sampler(generator=np.random.default_rng(0))(random_logits(4, batch=50).astype(np.float32))
    assert ids.shape == (50,) and ids.dtype == np.int64
    assert ids.min() >= 0 and ids.max() < 20


@pytest.mark.parametrize("options, message", [
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        Sampler(**options)


def test_bad_generator_and_logits_are_refused():
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        Sampler(generator=np.random.RandomState(0))
    with pytest.raises(ValueError, match=r"\(B, vocab\).*shape \(5,\)"):
        Sampler()(np.zeros(5))
    with pytest.raises(ValueError, match="dtype int64"):
        Sampler()(np.zeros((2, 5), dtype=np.int64))
