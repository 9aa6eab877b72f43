"""Creation functions: dtype inference, memory sharing, filled tensors, ranges, random draws.

The expected behaviour is PyTorch's (torch itself is not needed to run these tests).
"""

import numpy as np
import pytest

import tinynlm as tn


def host(t):
    """The values of ``t`` as a NumPy array (works for CPU and CUDA tensors)."""
    return np.asarray(t.detach().numpy())


# ----------------------------------------------------------------------------- tn.tensor


class TestTensorDtypeInference:
    def test_python_floats_give_float32(self):
        assert tn.tensor([1.0, 2.5]).dtype == tn.float32
        assert tn.tensor(3.5).dtype == tn.float32

    def test_python_ints_give_int64(self):
        assert tn.tensor([1, 2, 3]).dtype == tn.int64
        assert tn.tensor(7).dtype == tn.int64

    def test_python_bools_give_bool(self):
        assert tn.tensor([True, False]).dtype == tn.bool
        assert tn.tensor(True).dtype == tn.bool

    def test_mixed_int_and_float_gives_float32(self):
        t = tn.tensor([1, 2.5])
        assert t.dtype == tn.float32
        assert t.tolist() == [1.0, 2.5]

    def test_mixed_bool_and_int_gives_int64(self):
        t = tn.tensor([True, 2])
        assert t.dtype == tn.int64
        assert t.tolist() == [1, 2]

    def test_nested_lists_give_the_nested_shape(self):
        t = tn.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        assert t.shape == (2, 3)
        assert t.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]

    def test_scalar_gives_0d(self):
        assert tn.tensor(2.0).shape == ()
        assert tn.tensor(2.0).ndim == 0

    def test_empty_list_gives_empty_float32(self):
        t = tn.tensor([])
        assert t.shape == (0,)
        assert t.dtype == tn.float32

    @pytest.mark.parametrize("np_dtype", [np.float64, np.float32, np.float16, np.int32, np.int64,
                                          np.int16, np.int8, np.uint8, np.bool_])
    def test_numpy_array_keeps_its_dtype(self, np_dtype):
        array = np.array([1, 0, 1], dtype=np_dtype)
        t = tn.tensor(array)
        assert t.dtype == np.dtype(np_dtype)
        np.testing.assert_array_equal(t.numpy(), array)

    def test_numpy_float64_scalar_keeps_float64(self):
        # torch.tensor(np.float64(2.0)).dtype is torch.float64
        assert tn.tensor(np.float64(2.0)).dtype == tn.float64

    @pytest.mark.parametrize("dtype", [tn.float64, tn.float16, tn.int32, tn.int64, tn.bool])
    def test_explicit_dtype_wins(self, dtype):
        t = tn.tensor([1.0, 0.0, 2.0], dtype=dtype)
        assert t.dtype == dtype

    def test_explicit_dtype_converts_numpy_array(self):
        t = tn.tensor(np.array([1.7, -1.7]), dtype=tn.int64)
        assert t.dtype == tn.int64
        assert t.tolist() == [1, -1]  # truncation toward zero, as PyTorch

    def test_explicit_dtype_with_device(self, device):
        t = tn.tensor([1, 2], dtype=tn.float64, device=device)
        assert t.dtype == tn.float64
        assert t.device == device
        assert t.tolist() == [1.0, 2.0]

    def test_python_type_float_as_dtype_means_float64(self):
        # PyTorch maps the Python type ``float`` to torch.float64 (and ``int`` to int64,
        # ``bool`` to bool); tn.float (the dtype object) is float32, as torch.float.
        assert tn.tensor([1, 2], dtype=float).dtype == tn.float64
        assert tn.zeros(2, dtype=float).dtype == tn.float64
        assert tn.ones(2).to(float).dtype == tn.float64

    def test_python_types_int_bool_and_tn_float_as_dtype(self):
        assert tn.tensor([1.5], dtype=int).dtype == tn.int64
        assert tn.tensor([1], dtype=bool).dtype == tn.bool
        assert tn.tensor([1], dtype=tn.float).dtype == tn.float32
        assert tn.tensor([1], dtype=tn.double).dtype == tn.float64
        assert tn.tensor([1.0], dtype=tn.long).dtype == tn.int64

    def test_tensor_copies_numpy_data(self):
        array = np.array([1.0, 2.0, 3.0], dtype=np.float32)
        t = tn.tensor(array)
        array[0] = 100.0
        assert t.tolist() == [1.0, 2.0, 3.0]

    def test_tensor_copies_a_tensor(self):
        source = tn.tensor([1.0, 2.0])
        copy = tn.tensor(source)
        with tn.no_grad():
            source.fill_(9.0)
        assert copy.tolist() == [1.0, 2.0]

    def test_requires_grad_flag(self):
        t = tn.tensor([1.0, 2.0], requires_grad=True)
        assert t.requires_grad is True
        assert t.is_leaf
        assert tn.tensor([1.0, 2.0]).requires_grad is False


# ----------------------------------------------------------------------------- from_numpy


class TestFromNumpy:
    def test_shares_memory_both_ways(self):
        array = np.zeros(3, dtype=np.float32)
        t = tn.from_numpy(array)
        array[1] = 5.0
        assert t.tolist() == [0.0, 5.0, 0.0]
        t.fill_(2.0)
        np.testing.assert_array_equal(array, [2.0, 2.0, 2.0])
        assert np.shares_memory(t.numpy(), array)

    @pytest.mark.parametrize("np_dtype", [np.float64, np.float32, np.int32, np.int64, np.bool_])
    def test_keeps_dtype_and_shape(self, np_dtype):
        array = np.ones((2, 3), dtype=np_dtype)
        t = tn.from_numpy(array)
        assert t.dtype == np.dtype(np_dtype)
        assert t.shape == (2, 3)
        assert t.device == "cpu"
        assert t.requires_grad is False

    def test_rejects_non_arrays(self):
        with pytest.raises(TypeError, match="from_numpy"):
            tn.from_numpy([1.0, 2.0])


# ----------------------------------------------------------------------------- filled tensors


class TestFilled:
    @pytest.mark.parametrize("make, value", [(tn.zeros, 0.0), (tn.ones, 1.0)])
    def test_zeros_ones_values_default_dtype(self, make, value, device):
        t = make(2, 3, device=device)
        assert t.shape == (2, 3)
        assert t.dtype == tn.float32
        assert t.device == device
        assert (host(t) == value).all()

    @pytest.mark.parametrize("make", [tn.zeros, tn.ones, tn.empty, tn.rand, tn.randn])
    def test_shape_varargs_tuple_and_list(self, make):
        assert make(2, 3).shape == (2, 3)
        assert make((2, 3)).shape == (2, 3)
        assert make([2, 3]).shape == (2, 3)
        assert make(4).shape == (4,)
        assert make(()).shape == ()

    @pytest.mark.parametrize("make", [tn.zeros, tn.ones, tn.empty])
    def test_explicit_dtype(self, make):
        assert make(2, dtype=tn.int64).dtype == tn.int64
        assert make(2, dtype=tn.float64).dtype == tn.float64
        assert make(2, dtype=tn.bool).dtype == tn.bool

    @pytest.mark.parametrize("make", [tn.zeros, tn.ones, tn.empty, tn.rand, tn.randn])
    def test_requires_grad_flag(self, make):
        t = make(2, 2, requires_grad=True)
        assert t.requires_grad is True
        assert t.is_leaf
        assert t.grad is None
        assert make(2, 2).requires_grad is False

    def test_empty_has_shape_dtype_and_device(self, device):
        t = tn.empty(3, 0, device=device)
        assert t.shape == (3, 0)
        assert t.numel() == 0
        assert t.dtype == tn.float32
        assert t.device == device

    def test_full_float_fill_gives_float32(self, device):
        t = tn.full((2, 2), 1.5, device=device)
        assert t.dtype == tn.float32
        assert t.device == device
        assert t.tolist() == [[1.5, 1.5], [1.5, 1.5]]

    def test_full_int_fill_gives_int64(self):
        t = tn.full((3,), 7)
        assert t.dtype == tn.int64
        assert t.tolist() == [7, 7, 7]

    def test_full_bool_fill_gives_bool(self):
        t = tn.full((2,), True)
        assert t.dtype == tn.bool
        assert t.tolist() == [True, True]

    def test_full_explicit_dtype_and_requires_grad(self):
        t = tn.full((2,), 3, dtype=tn.float64, requires_grad=True)
        assert t.dtype == tn.float64
        assert t.requires_grad
        assert t.tolist() == [3.0, 3.0]


class TestLike:
    def test_zeros_like_keeps_shape_dtype_device(self, device):
        template = tn.tensor([[1, 2, 3]], dtype=tn.int32, device=device)
        t = tn.zeros_like(template)
        assert t.shape == (1, 3)
        assert t.dtype == tn.int32
        assert t.device == device
        assert t.tolist() == [[0, 0, 0]]

    def test_ones_like_keeps_shape_dtype_device(self, device):
        template = tn.zeros(2, 2, dtype=tn.float64, device=device)
        t = tn.ones_like(template)
        assert t.dtype == tn.float64
        assert t.device == device
        assert t.tolist() == [[1.0, 1.0], [1.0, 1.0]]

    def test_full_like_keeps_template_dtype(self):
        t = tn.full_like(tn.zeros(2), 7)
        assert t.dtype == tn.float32
        assert t.tolist() == [7.0, 7.0]
        t = tn.full_like(tn.zeros(2, dtype=tn.int64), 3)
        assert t.dtype == tn.int64
        assert t.tolist() == [3, 3]

    @pytest.mark.parametrize("make", [tn.zeros_like, tn.ones_like])
    def test_like_dtype_override(self, make):
        assert make(tn.zeros(3), dtype=tn.int64).dtype == tn.int64

    def test_full_like_dtype_override(self):
        t = tn.full_like(tn.zeros(2), 2.5, dtype=tn.float64)
        assert t.dtype == tn.float64
        assert t.tolist() == [2.5, 2.5]

    def test_like_does_not_inherit_requires_grad(self):
        template = tn.ones(2, requires_grad=True)
        assert tn.zeros_like(template).requires_grad is False
        assert tn.ones_like(template).requires_grad is False
        assert tn.zeros_like(template, requires_grad=True).requires_grad is True

    def test_rand_like_randn_like(self):
        template = tn.zeros(3, 4, dtype=tn.float64)
        for make in (tn.rand_like, tn.randn_like):
            t = make(template)
            assert t.shape == (3, 4)
            assert t.dtype == tn.float64


# ----------------------------------------------------------------------------- ranges


class TestRanges:
    def test_arange_int_args_give_int64(self, device):
        t = tn.arange(5, device=device)
        assert t.dtype == tn.int64
        assert t.device == device
        assert t.tolist() == [0, 1, 2, 3, 4]

    def test_arange_start_end_step(self):
        assert tn.arange(2, 11, 3).tolist() == [2, 5, 8]
        assert tn.arange(5, 0, -2).tolist() == [5, 3, 1]

    def test_arange_numpy_int_args_give_int64(self):
        assert tn.arange(np.int64(3)).dtype == tn.int64

    @pytest.mark.parametrize("args", [(4.0,), (0, 1.0), (0, 1, 0.25), (0.0, 2)])
    def test_arange_float_args_give_float32(self, args):
        assert tn.arange(*args).dtype == tn.float32

    def test_arange_float_values(self):
        np.testing.assert_allclose(tn.arange(0, 1, 0.25).numpy(), [0.0, 0.25, 0.5, 0.75])
        assert len(tn.arange(0, 1, 0.1)) == 10

    def test_arange_explicit_dtype(self):
        t = tn.arange(3, dtype=tn.float64)
        assert t.dtype == tn.float64
        assert t.tolist() == [0.0, 1.0, 2.0]

    def test_arange_requires_grad(self):
        t = tn.arange(3.0, requires_grad=True)
        assert t.requires_grad and t.is_leaf

    def test_linspace(self, device):
        t = tn.linspace(0, 1, 5, device=device)
        assert t.dtype == tn.float32
        assert t.device == device
        np.testing.assert_allclose(host(t), [0.0, 0.25, 0.5, 0.75, 1.0])
        assert tn.linspace(-1, 1, 1).tolist() == [-1.0]

    def test_linspace_dtype_and_requires_grad(self):
        t = tn.linspace(0, 1, 3, dtype=tn.float64, requires_grad=True)
        assert t.dtype == tn.float64
        assert t.requires_grad

    def test_eye(self, device):
        t = tn.eye(3, device=device)
        assert t.dtype == tn.float32
        assert t.device == device
        np.testing.assert_array_equal(host(t), np.eye(3))

    def test_eye_rectangular_and_dtype(self):
        t = tn.eye(2, 3, dtype=tn.int64)
        assert t.shape == (2, 3)
        assert t.dtype == tn.int64
        assert t.tolist() == [[1, 0, 0], [0, 1, 0]]


# ----------------------------------------------------------------------------- random


class TestRandom:
    @pytest.mark.parametrize("make", [tn.rand, tn.randn])
    def test_reproducible_under_manual_seed(self, make, device):
        tn.manual_seed(42)
        first = host(make(4, 5, device=device))
        tn.manual_seed(42)
        second = host(make(4, 5, device=device))
        np.testing.assert_array_equal(first, second)

    @pytest.mark.parametrize("make", [tn.rand, tn.randn])
    def test_different_across_seeds(self, make, device):
        tn.manual_seed(1)
        first = host(make(100, device=device))
        tn.manual_seed(2)
        second = host(make(100, device=device))
        assert not np.array_equal(first, second)

    @pytest.mark.parametrize("make", [tn.rand, tn.randn])
    def test_successive_draws_differ(self, make):
        tn.manual_seed(0)
        assert not np.array_equal(make(50).numpy(), make(50).numpy())

    def test_rand_range_and_dtype(self):
        t = tn.rand(10000)
        assert t.dtype == tn.float32
        values = t.numpy()
        assert values.min() >= 0.0 and values.max() < 1.0
        assert abs(values.mean() - 0.5) < 0.02

    def test_randn_statistics_and_dtype(self):
        t = tn.randn(20000)
        assert t.dtype == tn.float32
        values = t.numpy()
        assert abs(values.mean()) < 0.05
        assert abs(values.std() - 1.0) < 0.05
        assert values.min() < -2.0  # a normal, not a uniform, distribution

    @pytest.mark.parametrize("make", [tn.rand, tn.randn])
    def test_float64_draws(self, make):
        assert make(3, dtype=tn.float64).dtype == tn.float64

    def test_randint_low_high_size(self, device):
        t = tn.randint(3, 7, (1000,), device=device)
        assert t.dtype == tn.int64
        assert t.shape == (1000,)
        assert t.device == device
        values = host(t)
        assert values.min() >= 3 and values.max() <= 6
        assert set(values.tolist()) == {3, 4, 5, 6}

    def test_randint_high_and_size_only(self):
        # torch.randint(high, size): low defaults to 0
        t = tn.randint(10, (50,))
        assert t.shape == (50,)
        assert t.dtype == tn.int64
        values = t.numpy()
        assert values.min() >= 0 and values.max() < 10

    def test_randint_2d_size_and_dtype(self):
        t = tn.randint(0, 5, (2, 3), dtype=tn.int32)
        assert t.shape == (2, 3)
        assert t.dtype == tn.int32

    def test_randint_reproducible_and_seed_dependent(self):
        tn.manual_seed(7)
        first = tn.randint(0, 1000, (50,)).tolist()
        tn.manual_seed(7)
        assert tn.randint(0, 1000, (50,)).tolist() == first
        tn.manual_seed(8)
        assert tn.randint(0, 1000, (50,)).tolist() != first
