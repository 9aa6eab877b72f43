"""The public gradient checker: it must catch wrong gradients and say where."""

import numpy as np
import pytest

import tinynlm as tn
from tinynlm.autograd import Function


class WrongSquare(Function):
    """x**2 whose backward forgets the factor 2 on element 1."""

    save_inputs = (0,)

    def forward(self, x):
        return x * x

    def backward(self, grad):
        (x,) = self.saved_tensors
        factor = np.full(x.shape, 2.0)
        factor[1] = 1.0
        return grad * x * tn.tensor(factor, dtype=x.dtype)


class FrozenSquare(Function):
    """x**2 with a correct first derivative that is cut from the graph (wrong second one)."""

    save_inputs = (0,)

    def forward(self, x):
        return x * x

    def backward(self, grad):
        (x,) = self.saved_tensors
        return grad * x.detach() * 2


def _x():
    return tn.tensor([0.5, -1.5, 2.0], dtype=tn.float64, requires_grad=True)


def test_gradcheck_accepts_correct_gradients():
    assert tn.gradcheck(lambda t: (t * t).exp(), (_x(),))


def test_gradcheck_names_input_element_and_values():
    w = tn.tensor([1.0, 2.0, 3.0], dtype=tn.float64, requires_grad=True)
    with pytest.raises(tn.GradcheckError) as error:
        tn.gradcheck(lambda a, b: WrongSquare()(a) * b, (w, _x()))
    message = str(error.value)
    assert "input 0" in message and "element (1,)" in message
    assert "analytic" in message and "numeric" in message and "difference" in message


def test_gradcheck_can_return_false():
    assert tn.gradcheck(lambda t: WrongSquare()(t), (_x(),), raise_exception=False) is False


def test_gradcheck_refuses_float32():
    with pytest.raises(TypeError, match="input 0 has dtype float32.*float64"):
        tn.gradcheck(lambda t: t * 2, (tn.ones(3, requires_grad=True),))


def test_gradcheck_leaves_inputs_untouched():
    x = _x()
    before = x.detach().numpy().copy()
    tn.gradcheck(lambda t: t.sin(), (x,))
    np.testing.assert_array_equal(x.detach().numpy(), before)
    assert x.grad is None


def test_gradgradcheck_catches_a_wrong_second_derivative():
    assert tn.gradcheck(lambda t: FrozenSquare()(t), (_x(),))
    with pytest.raises(tn.GradcheckError):
        tn.gradgradcheck(lambda t: FrozenSquare()(t), (_x(),))
    assert tn.gradgradcheck(lambda t: t * t, (_x(),))


def test_gradcheck_on_device(device):
    x = tn.tensor([0.3, 0.7], dtype=tn.float64, device=device, requires_grad=True)
    assert tn.gradcheck(lambda t: t.tanh() * t, (x,))
