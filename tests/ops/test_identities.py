"""Identities the ops must satisfy, property-tested: normalisation, stability at large
magnitudes, and gradients of broadcasts summing back correctly."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import tinynlm as tn
from tests.strategies import arrays, broadcast_pairs, dim_of, shapes


@given(data=st.data())
def test_softmax_rows_sum_to_one(data):
    shape = data.draw(shapes(min_dims=1))
    dim = data.draw(dim_of(len(shape)))
    (values,) = arrays(data.draw, [shape])
    probabilities = tn.tensor(values * 30).softmax(dim)  # float32, spread-out logits
    np.testing.assert_allclose(probabilities.sum(dim).numpy(), 1.0, rtol=1e-6)
    assert (probabilities.numpy() >= 0).all()


@given(data=st.data(), magnitude=st.sampled_from([1e4, -1e4, 3e4]))
def test_log_softmax_and_logsumexp_stay_finite_for_huge_logits(data, magnitude):
    shape = data.draw(shapes(min_dims=1))
    dim = data.draw(dim_of(len(shape)))
    (values,) = arrays(data.draw, [shape])
    logits = tn.tensor(values + magnitude, requires_grad=True)
    log_probabilities = logits.log_softmax(dim)
    total = logits.logsumexp(dim)
    (log_probabilities.sum() + total.sum()).backward()
    for result in (log_probabilities, total, logits.grad):
        assert np.isfinite(result.detach().numpy()).all()
    expected = np.log(np.exp(values - values.max(dim, keepdims=True)).sum(dim)) \
        + values.max(dim) + magnitude
    np.testing.assert_allclose(total.detach().numpy(), expected, rtol=1e-6)


def test_logsumexp_of_an_all_masked_row_is_minus_infinity_without_nan():
    logits = tn.tensor([[-np.inf, -np.inf], [0.0, -np.inf]])
    assert logits.logsumexp(1).tolist() == [-np.inf, 0.0]
    assert logits[1:].softmax(1).tolist() == [[1.0, 0.0]]


@given(pair=broadcast_pairs())
def test_broadcast_gradients_sum_back_to_each_input(pair):
    shape_a, shape_b = pair
    a = tn.ones(shape_a, dtype=tn.float64, requires_grad=True)
    b = tn.ones(shape_b, dtype=tn.float64, requires_grad=True)
    out = a * 2 + b
    out.sum().backward()
    out_size = int(np.prod(out.shape))
    # Each element of an input is used out_size / its own size times.
    assert a.grad.shape == shape_a and b.grad.shape == shape_b
    np.testing.assert_array_equal(a.grad.numpy(), 2 * out_size / max(int(np.prod(shape_a)), 1))
    np.testing.assert_array_equal(b.grad.numpy(), out_size / max(int(np.prod(shape_b)), 1))


def test_repeated_indices_accumulate():
    weights = tn.zeros(4, 2, requires_grad=True)
    rows = tn.tensor([[0, 2], [2, 2]])
    weights[rows].sum().backward()
    assert weights.grad[:, 0].tolist() == [1.0, 0.0, 3.0, 0.0]


def test_float32_stays_float32_with_scalars_and_integer_tensors():
    x = tn.ones(3)
    integers = tn.tensor([1, 2, 3])
    for result in (x * np.float64(2.0), x / integers, x / 3, 2.5 * x, x ** 2.0, x + integers,
                   tn.where(integers > 1, x, 0.5), x.mean(), x.var(), x.softmax(0)):
        assert result.dtype == tn.float32
