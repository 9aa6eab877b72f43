"""The Tensor API: attributes, conversion, graph handling, display, dtype promotion, in-place helpers.

The expected behaviour is PyTorch's (torch itself is not needed to run these tests).
"""

import numpy as np
import pytest

import tinynlm as tn


def host(t):
    return np.asarray(t.detach().numpy())


# ----------------------------------------------------------------------------- attributes


class TestAttributes:
    def test_shape_ndim_dtype(self):
        t = tn.zeros(2, 3, 4)
        assert t.shape == (2, 3, 4)
        assert isinstance(t.shape, tuple)
        assert t.ndim == 3
        assert t.dim() == 3
        assert t.dtype == tn.float32
        assert tn.tensor(1.0).ndim == 0

    def test_device_is_cpu_by_default(self):
        t = tn.ones(2)
        assert t.device == "cpu"
        assert t.device == tn.device("cpu")
        assert str(t.device) == "cpu"
        assert t.is_cuda is False

    def test_device_follows_request(self, device):
        t = tn.ones(2, device=device)
        assert t.device == device
        assert t.device != ("cpu" if device == "cuda" else "cuda:0")
        assert t.is_cuda is (device == "cuda")

    def test_requires_grad_and_grad_initially(self):
        t = tn.ones(2, requires_grad=True)
        assert t.requires_grad is True
        assert t.grad is None
        assert t.grad_fn is None
        assert t.is_leaf
        u = tn.ones(2)
        assert u.requires_grad is False
        assert u.grad is None

    def test_data_is_the_numpy_array(self):
        array = np.arange(6, dtype=np.float32).reshape(2, 3)
        t = tn.from_numpy(array)
        assert isinstance(t.data, np.ndarray)
        assert t.data is array
        assert isinstance(tn.ones(3).data, np.ndarray)

    def test_grad_after_backward(self):
        x = tn.tensor([1.0, 2.0, 3.0], requires_grad=True)
        (x * x).sum().backward()
        assert isinstance(x.grad, tn.Tensor)
        assert x.grad.shape == x.shape
        assert x.grad.dtype == x.dtype
        assert x.grad.requires_grad is False
        assert x.grad.tolist() == [2.0, 4.0, 6.0]

    def test_grad_accumulates(self):
        x = tn.tensor([1.0, 2.0], requires_grad=True)
        (x * 3).sum().backward()
        (x * 3).sum().backward()
        assert x.grad.tolist() == [6.0, 6.0]

    def test_non_leaf_attributes(self):
        x = tn.ones(2, requires_grad=True)
        y = x * 2
        assert y.requires_grad is True
        assert y.grad_fn is not None
        assert y.is_leaf is False

    def test_no_grad_records_nothing(self):
        x = tn.ones(2, requires_grad=True)
        with tn.no_grad():
            y = x * 2
        assert y.requires_grad is False
        assert y.grad_fn is None


# ----------------------------------------------------------------------------- conversion


class TestConversion:
    def test_numpy_shares_memory_on_cpu(self):
        t = tn.tensor([1.0, 2.0])
        array = t.numpy()
        assert isinstance(array, np.ndarray)
        array[0] = 10.0
        assert t.tolist() == [10.0, 2.0]

    def test_numpy_raises_for_requires_grad(self):
        t = tn.ones(2, requires_grad=True)
        with pytest.raises(RuntimeError, match=r"numpy.*requires grad.*detach"):
            t.numpy()
        with pytest.raises(RuntimeError, match="requires grad"):
            (t * 2).numpy()

    def test_detach_numpy_works(self, device):
        t = tn.tensor([1.0, 2.0], requires_grad=True, device=device)
        array = t.detach().numpy()
        assert isinstance(array, np.ndarray)
        np.testing.assert_array_equal(array, [1.0, 2.0])

    def test_item(self, device):
        value = tn.tensor([2.5], device=device).item()
        assert type(value) is float and value == 2.5
        value = tn.tensor(3, device=device).item()
        assert type(value) is int and value == 3
        value = tn.tensor([[True]], device=device).item()
        assert type(value) is bool and value is True

    def test_item_on_requires_grad_tensor(self):
        assert tn.tensor(1.5, requires_grad=True).item() == 1.5

    def test_tolist(self, device):
        assert tn.tensor([[1, 2], [3, 4]], device=device).tolist() == [[1, 2], [3, 4]]
        assert tn.tensor(2.0, device=device).tolist() == 2.0
        assert tn.tensor([1.0], requires_grad=True, device=device).tolist() == [1.0]

    def test_python_number_conversions(self):
        assert float(tn.tensor(1.5)) == 1.5
        assert int(tn.tensor([7])) == 7
        assert bool(tn.tensor([1.0])) is True
        assert bool(tn.tensor(0)) is False

    def test_integer_tensor_as_python_index(self):
        assert [10, 20, 30][tn.tensor(2)] == 30

    def test_to_dtype(self, device):
        t = tn.tensor([1.5, -2.5], device=device)
        d = t.to(tn.float64)
        assert d.dtype == tn.float64
        assert d.device == device
        assert d.tolist() == [1.5, -2.5]
        assert t.dtype == tn.float32  # not in place
        assert t.to(dtype=tn.float16).dtype == tn.float16

    def test_to_same_dtype_and_device_returns_self(self, device):
        t = tn.ones(2, device=device)
        assert t.to(tn.float32) is t
        assert t.to(device) is t
        assert t.float() is t

    def test_to_device(self, device):
        t = tn.tensor([1.0, 2.0])
        moved = t.to(device)
        assert moved.device == device
        assert moved.tolist() == [1.0, 2.0]
        back = moved.to("cpu")
        assert back.device == "cpu"
        assert back.tolist() == [1.0, 2.0]
        assert moved.to(device=device).device == device

    def test_to_device_and_dtype_together(self, device):
        t = tn.tensor([1, 2]).to(device, tn.float64)
        assert t.device == device
        assert t.dtype == tn.float64

    def test_float_double_long(self):
        i = tn.tensor([1, 2])
        assert i.float().dtype == tn.float32
        assert i.double().dtype == tn.float64
        f = tn.tensor([1.7, -1.7, 2.2])
        long = f.long()
        assert long.dtype == tn.int64
        assert long.tolist() == [1, -1, 2]  # truncation toward zero
        assert f.int().dtype == tn.int32
        assert f.half().dtype == tn.float16
        assert tn.tensor([0.0, 2.0]).bool().tolist() == [False, True]

    def test_to_dtype_is_differentiable(self):
        x = tn.tensor([1.0, 2.0], requires_grad=True)
        y = x.to(tn.float64)
        assert y.requires_grad
        (y * y).sum().backward()
        assert x.grad.dtype == tn.float32
        assert x.grad.tolist() == [2.0, 4.0]

    def test_cast_to_int_leaves_the_graph(self):
        x = tn.tensor([1.5, 2.5], requires_grad=True)
        assert x.long().requires_grad is False

    def test_to_device_is_differentiable(self, device):
        x = tn.tensor([1.0, 2.0], requires_grad=True)
        (x.to(device) * 3).sum().backward()
        assert x.grad.device == "cpu"
        assert x.grad.tolist() == [3.0, 3.0]


# ----------------------------------------------------------------------------- graph handling


class TestGraph:
    def test_detach_cuts_the_graph(self):
        x = tn.tensor([1.0, 2.0], requires_grad=True)
        d = x.detach()
        assert d.requires_grad is False
        assert d.grad_fn is None
        y = (x * d).sum()  # d is a constant: dy/dx = d
        y.backward()
        assert x.grad.tolist() == [1.0, 2.0]

    def test_detach_of_intermediate(self):
        x = tn.tensor([3.0], requires_grad=True)
        y = x * x
        z = y.detach() * x
        z.sum().backward()
        assert x.grad.tolist() == [9.0]  # not 27 (which would flow through y)

    def test_detach_shares_data(self):
        x = tn.tensor([1.0, 2.0], requires_grad=True)
        d = x.detach()
        d.zero_()
        assert x.tolist() == [0.0, 0.0]

    def test_requires_grad_(self):
        t = tn.tensor([1.0, 2.0])
        assert t.requires_grad_() is t
        assert t.requires_grad is True
        (t * 2).sum().backward()
        assert t.grad.tolist() == [2.0, 2.0]
        assert t.requires_grad_(False) is t
        assert t.requires_grad is False

    def test_requires_grad_setter(self):
        t = tn.zeros(2)
        t.requires_grad = True
        assert t.requires_grad

    def test_clone_stays_in_graph(self):
        x = tn.tensor([1.0, 2.0], requires_grad=True)
        c = x.clone()
        assert c.requires_grad
        assert c.grad_fn is not None
        (c * tn.tensor([3.0, 4.0])).sum().backward()
        assert x.grad.tolist() == [3.0, 4.0]

    def test_clone_copies_memory(self):
        x = tn.tensor([1.0, 2.0])
        c = x.clone()
        c.fill_(5.0)
        assert x.tolist() == [1.0, 2.0]
        assert c.tolist() == [5.0, 5.0]
        assert c.dtype == x.dtype

    def test_contiguous(self):
        x = tn.arange(6.0).reshape(2, 3)
        assert x.is_contiguous()
        assert x.contiguous() is x
        t = x.T
        assert t.shape == (3, 2)
        assert not t.is_contiguous()
        c = t.contiguous()
        assert c.is_contiguous()
        assert c.data.flags.c_contiguous
        assert c.tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]

    def test_contiguous_is_differentiable(self):
        x = tn.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
        y = x.T.contiguous()
        (y * tn.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
        assert x.grad.tolist() == [[1.0, 3.0], [2.0, 4.0]]

    def test_leaf_backward(self):
        x = tn.tensor(2.0, requires_grad=True)
        x.backward()
        assert x.grad.tolist() == 1.0

    def test_backward_with_explicit_gradient(self):
        x = tn.tensor([1.0, 2.0], requires_grad=True)
        (x * 2).backward(tn.tensor([1.0, 10.0]))
        assert x.grad.tolist() == [2.0, 20.0]

    def test_retain_graph_allows_second_backward(self):
        x = tn.tensor([1.0, 2.0], requires_grad=True)
        y = (x * x).sum()
        y.backward(retain_graph=True)
        y.backward()
        assert x.grad.tolist() == [4.0, 8.0]


# ----------------------------------------------------------------------------- sizes


class TestSizes:
    def test_size(self):
        t = tn.zeros(2, 3, 4)
        assert t.size() == (2, 3, 4)
        assert t.size(0) == 2
        assert t.size(2) == 4
        assert t.size(-1) == 4
        assert t.size(-3) == 2

    def test_numel(self):
        assert tn.zeros(2, 3, 4).numel() == 24
        assert tn.tensor(5.0).numel() == 1
        assert tn.zeros(3, 0).numel() == 0

    def test_len(self):
        assert len(tn.zeros(5, 2)) == 5
        assert len(tn.zeros(0)) == 0

    def test_len_of_0d_raises(self):
        with pytest.raises(TypeError, match="0-d"):
            len(tn.tensor(1.0))


# ----------------------------------------------------------------------------- repr


class TestRepr:
    def test_shows_values(self):
        text = repr(tn.tensor([1.5, 2.25, -3.0]))
        assert text.startswith("tensor(")
        assert "1.5" in text and "2.25" in text and "-3." in text
        assert repr(tn.tensor([7, 8])) == "tensor([7, 8])"

    def test_default_dtypes_not_shown(self):
        assert "dtype" not in repr(tn.tensor([1.0]))
        assert "dtype" not in repr(tn.tensor([1]))
        assert "dtype" not in repr(tn.tensor([True]))

    @pytest.mark.parametrize("dtype, name", [(tn.float64, "float64"), (tn.int32, "int32"),
                                             (tn.float16, "float16")])
    def test_non_default_dtype_shown(self, dtype, name):
        text = repr(tn.tensor([1, 2], dtype=dtype))
        assert "dtype=" in text and name in text

    def test_requires_grad_shown(self):
        assert "requires_grad=True" in repr(tn.tensor([1.0], requires_grad=True))
        assert "requires_grad" not in repr(tn.tensor([1.0]))

    def test_grad_fn_shown(self):
        x = tn.tensor([1.0], requires_grad=True)
        assert "grad_fn=<MulBackward" in repr(x * 2)
        assert "grad_fn=<AddBackward" in repr(x + 2)
        assert "grad_fn" not in repr(x)

    def test_device_shown_only_for_cuda(self, device):
        text = repr(tn.tensor([1.0], device=device))
        if device == "cuda":
            assert "device='cuda:0'" in text
        else:
            assert "device" not in text

    def test_large_tensor_is_summarized(self):
        text = repr(tn.arange(10000))
        assert "..." in text
        assert len(text) < 500


# ----------------------------------------------------------------------------- promotion


class TestPromotion:
    def test_float32_op_int64_tensor(self):
        f = tn.tensor([1.0, 2.0])
        i = tn.tensor([1, 2])
        for result in (f + i, i + f, f * i, f - i, i - f):
            assert result.dtype == tn.float32

    def test_float32_times_python_float(self):
        assert (tn.tensor([1.0]) * 2.5).dtype == tn.float32
        assert (2.5 * tn.tensor([1.0])).dtype == tn.float32
        assert (tn.tensor([1.0]) + 0.1).dtype == tn.float32
        assert (tn.tensor([1.0]) - 3).dtype == tn.float32

    def test_float32_times_numpy_float64_scalar_stays_float32(self):
        t = tn.tensor([1.0, 2.0])
        for result in (t * np.float64(2.0), np.float64(2.0) * t, t + np.float64(1.0),
                       t / np.float64(2.0), np.float64(1.0) - t):
            assert isinstance(result, tn.Tensor)
            assert result.dtype == tn.float32
        assert (t * np.float64(2.0)).tolist() == [2.0, 4.0]

    def test_float32_times_numpy_int_scalar(self):
        assert (tn.tensor([1.0]) * np.int64(3)).dtype == tn.float32

    def test_float32_div_int64_tensor(self):
        r = tn.tensor([1.0, 3.0]) / tn.tensor([2, 2])
        assert r.dtype == tn.float32
        assert r.tolist() == [0.5, 1.5]

    def test_int_div_int_gives_float32(self):
        r = tn.tensor([1, 3]) / tn.tensor([2, 2])
        assert r.dtype == tn.float32
        assert r.tolist() == [0.5, 1.5]
        assert (tn.tensor([1, 2]) / 2).dtype == tn.float32
        assert (1 / tn.tensor([1, 2])).dtype == tn.float32

    def test_int_tensor_times_python_float(self):
        r = tn.tensor([1, 2]) * 2.5
        assert r.dtype == tn.float32
        assert r.tolist() == [2.5, 5.0]

    def test_int_tensor_with_python_int_keeps_int(self):
        assert (tn.tensor([1, 2]) + 2).dtype == tn.int64
        assert (tn.tensor([1, 2], dtype=tn.int32) * 2).dtype == tn.int32

    def test_int32_with_int64_tensor(self):
        assert (tn.tensor([1], dtype=tn.int32) + tn.tensor([1])).dtype == tn.int64

    def test_float32_plus_float64_tensor(self):
        r = tn.tensor([1.0]) + tn.tensor([2.0], dtype=tn.float64)
        assert r.dtype == tn.float64
        assert (tn.tensor([1.0], dtype=tn.float64) * tn.tensor([2.0])).dtype == tn.float64

    def test_float64_with_python_float_stays_float64(self):
        assert (tn.tensor([1.0], dtype=tn.float64) * 0.5).dtype == tn.float64

    def test_float16_with_python_scalars(self):
        assert (tn.tensor([1.0], dtype=tn.float16) * 2.5).dtype == tn.float16
        assert (tn.tensor([1.0], dtype=tn.float16) + 1).dtype == tn.float16

    def test_bool_tensor_with_numbers(self):
        b = tn.tensor([True, False])
        assert (b + 1).dtype == tn.int64
        assert (b * 1.5).dtype == tn.float32

    def test_zero_dim_tensor_does_not_promote_within_category(self):
        # PyTorch: a 0-d tensor of the same category acts like a scalar, so
        # float32[n] + float64[] -> float32 and int32[n] + int64[] -> int32.
        assert (tn.ones(3) + tn.tensor(2.0, dtype=tn.float64)).dtype == tn.float32
        assert (tn.ones(3, dtype=tn.int32) + tn.tensor(2)).dtype == tn.int32

    def test_zero_dim_tensor_of_higher_category_wins(self):
        assert (tn.tensor([1, 2]) + tn.tensor(0.5)).dtype == tn.float32
        assert (tn.tensor([1, 2]) + tn.tensor(0.5, dtype=tn.float64)).dtype == tn.float64

    def test_comparisons_give_bool(self):
        f = tn.tensor([1.0, 2.0, 3.0])
        i = tn.tensor([3, 2, 1])
        for result in (f > 2.0, f >= i, f < i, f <= 1, f == i, f != i, i == 2.0):
            assert result.dtype == tn.bool
        assert (f > i).tolist() == [False, False, True]
        assert (i == 2.0).tolist() == [False, True, False]

    def test_comparison_with_none_is_not_an_error(self):
        # PyTorch turns the TypeError of ``t == None`` into NotImplemented, so Python
        # falls back to identity: False for ==, True for !=.
        t = tn.ones(2)
        assert (t == None) is False  # noqa: E711
        assert (t != None) is True  # noqa: E711

    def test_where_promotes(self):
        cond = tn.tensor([True, False])
        assert tn.where(cond, tn.tensor([1.0, 2.0]), 0).dtype == tn.float32
        assert tn.where(cond, tn.tensor([1, 2]), 0.5).dtype == tn.float32
        assert tn.where(cond, tn.tensor([1.0, 2.0]),
                        tn.tensor([1.0, 2.0], dtype=tn.float64)).dtype == tn.float64

    def test_promotion_keeps_gradients_in_input_dtype(self):
        x = tn.tensor([1.0, 2.0], requires_grad=True)
        y = x * tn.tensor([3.0, 4.0], dtype=tn.float64)
        assert y.dtype == tn.float64
        y.sum().backward()
        assert x.grad.dtype == tn.float32
        assert x.grad.tolist() == [3.0, 4.0]


# ----------------------------------------------------------------------------- in-place helpers


class TestInPlace:
    @pytest.mark.parametrize("name, args", [("zero_", ()), ("fill_", (3.0,)),
                                            ("copy_", (np.ones(2, dtype=np.float32),))])
    def test_raise_on_requires_grad_in_grad_mode(self, name, args):
        x = tn.tensor([1.0, 2.0], requires_grad=True)
        with pytest.raises(RuntimeError, match=rf"{name}.*requires grad"):
            getattr(x, name)(*args)
        assert x.tolist() == [1.0, 2.0]  # unchanged

    def test_copy_from_tensor_raises_on_requires_grad(self):
        x = tn.tensor([1.0, 2.0], requires_grad=True)
        with pytest.raises(RuntimeError, match="copy_"):
            x.copy_(tn.tensor([5.0, 6.0]))

    def test_work_under_no_grad(self, device):
        x = tn.tensor([1.0, 2.0], requires_grad=True, device=device)
        with tn.no_grad():
            assert x.zero_() is x
            assert x.tolist() == [0.0, 0.0]
            assert x.fill_(3.0) is x
            assert x.tolist() == [3.0, 3.0]
            assert x.copy_(tn.tensor([5.0, 6.0], device=device)) is x
            assert x.tolist() == [5.0, 6.0]
        assert x.requires_grad is True

    def test_work_on_plain_tensor_in_grad_mode(self):
        x = tn.tensor([1.0, 2.0])
        x.fill_(4.0)
        assert x.tolist() == [4.0, 4.0]
        x.zero_()
        assert x.tolist() == [0.0, 0.0]
        x.copy_(tn.tensor([7.0, 8.0]))
        assert x.tolist() == [7.0, 8.0]

    def test_grad_zero_(self):
        x = tn.tensor([1.0, 2.0], requires_grad=True)
        (x * 2).sum().backward()
        x.grad.zero_()
        assert x.grad.tolist() == [0.0, 0.0]

    def test_copy_converts_dtype(self):
        x = tn.zeros(2)
        x.copy_(tn.tensor([1, 2]))
        assert x.dtype == tn.float32
        assert x.tolist() == [1.0, 2.0]

    def test_copy_across_devices(self, device):
        x = tn.zeros(2, device=device)
        x.copy_(tn.tensor([1.0, 2.0]))
        assert x.device == device
        assert x.tolist() == [1.0, 2.0]

    def test_copy_broadcasts_source(self):
        # torch: "The src tensor must be broadcastable with the self tensor."
        x = tn.zeros(2, 3)
        x.copy_(tn.tensor([1.0, 2.0, 3.0]))
        assert x.tolist() == [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]

    def test_setitem_raises_on_requires_grad_and_works_under_no_grad(self):
        x = tn.tensor([1.0, 2.0], requires_grad=True)
        with pytest.raises(RuntimeError, match="requires grad"):
            x[0] = 5.0
        with tn.no_grad():
            x[0] = 5.0
        assert x.tolist() == [5.0, 2.0]

    def test_no_grad_restores_grad_mode(self):
        assert tn.is_grad_enabled()
        with tn.no_grad():
            assert not tn.is_grad_enabled()
        assert tn.is_grad_enabled()
        x = tn.ones(2, requires_grad=True)
        with pytest.raises(RuntimeError):
            x.zero_()


def test_bitwise_operators_follow_pytorch():
    assert (~tn.tensor([1, 2])).tolist() == [-2, -3]
    assert (~tn.tensor([True, False])).tolist() == [False, True]
    assert (tn.tensor([6]) & tn.tensor([3])).tolist() == [2]
    assert (tn.tensor([True, False]) | tn.tensor([False, False])).tolist() == [True, False]
    assert (tn.tensor([5]) ^ 1).tolist() == [4]
    with pytest.raises(TypeError, match="bitwise_not: needs an integer or bool tensor"):
        ~tn.ones(2)
