"""The backward engine: accumulation, ordering, graph release, grad mode and higher-order grads."""

import gc
import weakref

import numpy as np
import pytest

import tinynlm as tn
from tinynlm.autograd import Function


def test_gradients_accumulate_until_cleared(device):
    x = tn.tensor([1.0, 2.0], device=device, requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    assert x.grad.tolist() == [6.0, 6.0]
    x.grad = None
    (x * x).sum().backward()
    assert x.grad.tolist() == [2.0, 4.0]


def test_non_scalar_backward_takes_a_gradient():
    x = tn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * x
    y.backward(tn.tensor([1.0, 0.0, 2.0]))
    assert x.grad.tolist() == [2.0, 0.0, 12.0]
    with pytest.raises(RuntimeError, match="only for scalar outputs; got shape \\(3,\\)"):
        (x * 2).backward()


def test_gradient_with_the_wrong_shape_is_refused():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="gradient has shape \\(3,\\) but the output has shape \\(2,\\)"):
        (x * 2).backward(tn.ones(3))


def test_chain_of_100000_ops_backpropagates_without_recursion():
    x = tn.tensor(1.0, dtype=tn.float64, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.backward()
    assert x.grad.item() == 1.0
    del y  # freeing a deep graph must not overflow the C stack either


def test_deep_graph_is_freed_without_backward():
    x = tn.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y + 1.0
    del y
    gc.collect()


class CountingIdentity(Function):
    calls = 0

    def forward(self, x):
        return x.copy()

    def backward(self, grad):
        CountingIdentity.calls += 1
        return grad


def test_each_node_runs_once_in_a_diamond():
    CountingIdentity.calls = 0
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    shared = CountingIdentity()(x)
    left, right = shared * 2, shared * 3
    total = shared
    for _ in range(10):  # many paths through the shared node
        total = total + left + right
    total.sum().backward()
    assert CountingIdentity.calls == 1
    assert x.grad.tolist() == [51.0, 51.0]


def test_second_backward_through_freed_graph_raises():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_retain_graph_allows_a_second_backward():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.tolist() == [4.0, 8.0]


def test_intermediates_are_freed_after_backward():
    x = tn.tensor(np.ones(1000), requires_grad=True)
    y = x.exp()
    alive = weakref.ref(y)
    loss = (y * y).sum()  # Mul saves y for its backward
    del y
    assert alive() is not None
    loss.backward()
    assert alive() is None


def test_graph_frees_itself_without_the_garbage_collector():
    gc.disable()
    try:
        x = tn.tensor([1.0, 2.0], requires_grad=True)
        y = x.tanh()
        z = (y.sigmoid() * y).softmax(0)
        alive = weakref.ref(y)
        node = weakref.ref(z.grad_fn)
        del y, z
        assert alive() is None and node() is None
    finally:
        gc.enable()


def test_no_grad_records_nothing():
    x = tn.tensor([1.0], requires_grad=True)
    with tn.no_grad():
        assert not tn.is_grad_enabled()
        y = x * 2
        with tn.enable_grad():
            z = x * 2
    assert tn.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad and z.grad_fn is not None


def test_no_grad_and_set_grad_enabled_as_decorators():
    @tn.no_grad()
    def double(t):
        return t * 2

    x = tn.tensor([1.0], requires_grad=True)
    assert not double(x).requires_grad
    with tn.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad


def test_leaf_gradients_never_share_memory():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    y = tn.tensor([3.0, 4.0], requires_grad=True)
    (x + y).sum().backward()
    assert not np.shares_memory(x.grad.data, y.grad.data)
    given = tn.tensor([1.0, 1.0])
    a = tn.tensor([1.0, 2.0], requires_grad=True)
    (a + 0).backward(given)
    assert not np.shares_memory(a.grad.data, given.data)


def test_unused_output_of_a_multi_output_op_gets_zero_gradient():
    x = tn.arange(6.0).requires_grad_()
    first, _, third = x.split(2)
    (first * 2 + third).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0, 0.0, 0.0, 1.0, 1.0]


def test_double_backward_with_create_graph():
    x = tn.tensor([1.0, 2.0], dtype=tn.float64, requires_grad=True)
    y = (x ** 3).sum()
    y.backward(create_graph=True)
    first = x.grad
    assert first.tolist() == [3.0, 12.0] and first.requires_grad
    x.grad = None
    first.sum().backward()
    assert x.grad.tolist() == [6.0, 12.0]


def test_grad_returns_gradients_without_touching_dot_grad():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    w = tn.tensor([3.0, 4.0], requires_grad=True)
    (dx,) = tn.grad((x * w).sum(), x)
    assert dx.tolist() == [3.0, 4.0]
    assert x.grad is None and w.grad is None


def test_grad_of_an_intermediate_tensor():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    hidden = x * 2
    (d_hidden,) = tn.grad((hidden * hidden).sum(), hidden)
    assert d_hidden.tolist() == [4.0, 8.0]


def test_grad_with_grad_outputs_and_unused_inputs():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    unused = tn.tensor([1.0], requires_grad=True)
    y = x * x
    (dx, d_unused) = tn.grad(y, [x, unused], grad_outputs=tn.tensor([1.0, 10.0]),
                             allow_unused=True, retain_graph=True)
    assert dx.tolist() == [2.0, 40.0] and d_unused is None
    with pytest.raises(RuntimeError, match="input 1 was not used"):
        tn.grad(y, [x, unused], grad_outputs=tn.ones(2))


def test_hessian_vector_product_matches_closed_form():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 4))
    a = a + a.T
    x = tn.tensor(rng.standard_normal(4), dtype=tn.float64, requires_grad=True)
    matrix = tn.tensor(a, dtype=tn.float64)
    energy = (x @ (matrix @ x)) * 0.5  # gradient A x, Hessian A
    (gradient,) = tn.grad(energy, x, create_graph=True)
    vector = tn.tensor(rng.standard_normal(4), dtype=tn.float64)
    (hessian_vector,) = tn.grad((gradient * vector).sum(), x)
    np.testing.assert_allclose(hessian_vector.numpy(), a @ vector.numpy(), rtol=1e-12)


def test_backward_on_a_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tn.ones(2).sum().backward()


def test_detach_and_requires_grad_propagation():
    x = tn.tensor([1.0], requires_grad=True)
    constant = tn.tensor([2.0])
    assert (x * constant).requires_grad
    assert not (constant * 2).requires_grad
    assert not x.detach().requires_grad
    y = x * 2
    with pytest.raises(RuntimeError, match="non-leaf"):
        y.requires_grad = False


def test_in_place_change_of_a_saved_tensor_is_caught():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    weight = tn.tensor([3.0, 4.0])
    loss = (x * weight).sum()  # Mul saves weight for x's gradient
    weight.zero_()
    with pytest.raises(RuntimeError, match="mul backward: .* modified in place"):
        loss.backward()


def test_in_place_change_through_a_view_or_detach_is_caught():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    loss = (x * x).sum()
    x.detach().zero_()
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()
    weight = tn.tensor([3.0, 4.0, 5.0])
    loss = (x * weight[:2]).sum()  # Mul saves the view weight[:2]
    with tn.no_grad():
        weight[1:].fill_(0.0)  # another view of the same memory
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


def test_in_place_change_of_a_saved_output_is_caught():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()  # Exp saves its output
    loss = y.sum()
    with tn.no_grad():
        y.zero_()
    with pytest.raises(RuntimeError, match="exp backward: .* modified in place"):
        loss.backward()


def test_grad_runs_only_the_part_of_the_graph_it_needs():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    hidden = x.exp()
    a, b = hidden.sum(), (hidden * 2).sum()
    (d_hidden,) = tn.grad(a, hidden)
    assert d_hidden.tolist() == [1.0, 1.0]
    b.backward()  # the graph below `hidden` was neither run nor freed by tn.grad
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp([1.0, 2.0]), rtol=1e-6)


def test_a_backward_returning_none_still_lets_the_rest_flow():
    class FirstOnly(Function):
        def forward(self, a, b):
            return a + b

        def backward(self, grad):
            return grad, None

    x = tn.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    (FirstOnly()(h, h) + h).sum().backward()
    assert x.grad.tolist() == [4.0, 4.0]


def test_grad_results_are_private_buffers_and_inputs_may_repeat():
    a = tn.tensor([1.0, 2.0], requires_grad=True)
    b = tn.tensor([3.0, 4.0], requires_grad=True)
    grad_a, grad_b = tn.grad(((a + b) * 2).sum(), [a, b])
    assert not np.shares_memory(grad_a.data, grad_b.data)
    grad_a.zero_()  # writable, not a broadcast view
    given = tn.ones(2)
    (same,) = tn.grad(a + 1, a, given)
    assert not np.shares_memory(same.data, given.data)
    first, second = tn.grad((a * a).sum(), [a, a])
    assert first.tolist() == second.tolist() == [2.0, 4.0]


def test_in_place_arithmetic_updates_the_tensor_itself():
    params = [tn.ones(2, requires_grad=True)]
    with tn.no_grad():
        for p in params:
            p -= 0.5 * tn.ones(2)  # must change the tensor in the list, not rebind a name
            p *= 4
    assert params[0].tolist() == [2.0, 2.0]
    with pytest.raises(RuntimeError, match="requires grad cannot be changed in place"):
        params[0] += 1
    counts = tn.tensor([1, 2])
    with pytest.raises(RuntimeError, match="cannot be stored in place in a int64 tensor"):
        counts += 0.5
    with pytest.raises(RuntimeError, match="does not fit the tensor's shape"):
        tn.ones(2).add_(tn.ones(3, 2))


def test_set_grad_enabled_called_plainly_switches_the_mode():
    try:
        tn.set_grad_enabled(False)
        assert not tn.is_grad_enabled()
    finally:
        tn.set_grad_enabled(True)
    assert tn.is_grad_enabled()

    @tn.set_grad_enabled(False)
    def doubled(t):
        return t * 2

    assert tn.is_grad_enabled()  # decorating changes nothing by itself
    assert not doubled(tn.ones(1, requires_grad=True)).requires_grad
