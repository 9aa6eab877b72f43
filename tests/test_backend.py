"""Devices, the NumPy/CuPy switch, tn.cuda and the random seed.

CUDA-only checks skip with a reason where there is no usable GPU.
"""

import numpy as np
import pytest

import tinynlm as tn
from tinynlm import backend

needs_gpu = pytest.mark.skipif(not tn.cuda.is_available(),
                               reason="needs CuPy and a CUDA GPU (tn.cuda.is_available() is False)")
needs_no_gpu = pytest.mark.skipif(tn.cuda.is_available(),
                                  reason="checks the error raised when CUDA is unavailable")


# ----------------------------------------------------------------------------- Device


class TestDevice:
    def test_cpu(self):
        d = tn.device("cpu")
        assert d.type == "cpu"
        assert d.index is None
        assert str(d) == "cpu"
        assert d == "cpu"
        assert d == tn.device("cpu")
        assert d != "cuda"

    def test_cuda_spec_parses_without_a_gpu(self):
        # Like torch.device("cuda:1"): naming a device does not need the device.
        d = tn.device("cuda:1")
        assert d.type == "cuda"
        assert d.index == 1
        assert str(d) == "cuda:1"
        assert tn.device("cuda").index == 0
        assert tn.device("cuda") == "cuda:0"
        assert tn.device("cuda:1") != "cuda:0"

    def test_device_from_device(self):
        d = tn.device("cuda:2")
        assert tn.device(d) == d

    def test_hashable_and_consistent_with_eq(self):
        assert len({tn.device("cpu"), tn.device("cpu"), tn.device("cuda:0"),
                    tn.device("cuda")}) == 2

    def test_comparison_with_junk_is_false(self):
        assert (tn.device("cpu") == "not a device") is False
        assert (tn.device("cpu") == 3) is False

    def test_repr_names_the_device(self):
        assert "cpu" in repr(tn.device("cpu"))
        assert "cuda:1" in repr(tn.device("cuda:1"))

    @pytest.mark.parametrize("spec", ["tpu", "gpu", "cuda:x", "cuda:-1", "cpu:1", "", "CUDA"])
    def test_bad_strings_raise(self, spec):
        with pytest.raises((ValueError, RuntimeError), match="device"):
            tn.device(spec)

    def test_non_string_raises_type_error(self):
        with pytest.raises(TypeError, match="device"):
            tn.device(0.5)


class TestAsDevice:
    def test_cpu(self):
        assert backend.as_device("cpu") == tn.device("cpu")
        assert backend.as_device(tn.device("cpu")) == "cpu"

    @needs_no_gpu
    def test_cuda_without_gpu_says_why(self):
        with pytest.raises(RuntimeError, match=r"CuPy|GPU"):
            backend.as_device("cuda")

    @needs_gpu
    def test_cuda_index_past_the_last_gpu(self):
        count = tn.cuda.device_count()
        with pytest.raises(RuntimeError, match=rf"cuda:{count}"):
            backend.as_device(f"cuda:{count}")


class TestArrayModule:
    def test_cpu_is_numpy(self):
        assert backend.array_module(tn.device("cpu")) is np
        assert tn.ones(2).xp is np

    @needs_gpu
    def test_cuda_is_cupy(self):
        import cupy

        assert backend.array_module(tn.device("cuda")) is cupy
        t = tn.ones(2, device="cuda")
        assert t.xp is cupy
        assert isinstance(t.data, cupy.ndarray)


# ----------------------------------------------------------------------------- tn.cuda


class TestCudaModule:
    def test_is_available_returns_bool_without_raising(self):
        first = tn.cuda.is_available()
        assert type(first) is bool
        assert tn.cuda.is_available() is first  # stable across calls

    def test_device_count(self):
        count = tn.cuda.device_count()
        assert isinstance(count, int)
        if tn.cuda.is_available():
            assert count >= 1
        else:
            assert count == 0

    @needs_no_gpu
    def test_synchronize_without_gpu_raises_clearly(self):
        with pytest.raises(RuntimeError, match=r"CuPy|GPU"):
            tn.cuda.synchronize()

    @needs_gpu
    def test_synchronize_with_gpu(self):
        tn.cuda.synchronize()


# ----------------------------------------------------------------------------- placement


class TestPlacement:
    @pytest.mark.parametrize("make", [
        lambda d: tn.tensor([1.0, 2.0], device=d),
        lambda d: tn.zeros(2, device=d),
        lambda d: tn.ones(2, device=d),
        lambda d: tn.empty(2, device=d),
        lambda d: tn.full((2,), 1.5, device=d),
        lambda d: tn.arange(2, device=d),
        lambda d: tn.linspace(0, 1, 2, device=d),
        lambda d: tn.eye(2, device=d),
        lambda d: tn.rand(2, device=d),
        lambda d: tn.randn(2, device=d),
        lambda d: tn.randint(0, 3, (2,), device=d),
        lambda d: tn.zeros_like(tn.ones(2, device=d)),
        lambda d: tn.ones_like(tn.ones(2), device=d),
    ])
    def test_creation_on_device(self, make, device):
        t = make(device)
        assert t.device == device
        assert t.is_cuda is (device == "cuda")

    def test_ops_keep_device(self, device):
        x = tn.ones(2, 3, device=device)
        for result in (x + 1, x * x, x.sum(), x @ x.T, x.exp(), x[0], x.reshape(6),
                       tn.cat([x, x]), x.softmax(-1), x > 0):
            assert result.device == device

    def test_cpu_and_cuda_methods(self, device):
        x = tn.tensor([1.0, 2.0], device=device)
        back = x.cpu()
        assert back.device == "cpu"
        assert back.tolist() == [1.0, 2.0]
        assert isinstance(back.data, np.ndarray)
        if device == "cuda":
            assert back.cpu() is back
            assert back.cuda().device == "cuda:0"

    def test_tensor_from_array_on_another_device(self, device):
        t = tn.tensor(np.array([1, 2], dtype=np.int32), device=device)
        assert t.device == device
        assert t.dtype == tn.int32
        assert t.tolist() == [1, 2]

    def test_backward_on_device(self, device):
        x = tn.tensor([1.0, 2.0], requires_grad=True, device=device)
        (x * x).sum().backward()
        assert x.grad.device == device
        assert x.grad.tolist() == [2.0, 4.0]


@needs_no_gpu
class TestCudaUnavailable:
    @pytest.mark.parametrize("make", [
        lambda: tn.zeros(2, device="cuda"),
        lambda: tn.tensor([1.0], device="cuda"),
        lambda: tn.randn(2, device="cuda"),
        lambda: tn.arange(3, device="cuda:0"),
        lambda: tn.ones(2).to("cuda"),
        lambda: tn.ones(2).cuda(),
        lambda: tn.ones(2).to(device="cuda"),
    ])
    def test_asking_for_cuda_says_cupy_or_gpu_is_missing(self, make):
        with pytest.raises(RuntimeError, match=r"(CuPy|GPU)"):
            make()

    def test_is_available_still_false_after_failed_request(self):
        with pytest.raises(RuntimeError):
            tn.zeros(1, device="cuda")
        assert tn.cuda.is_available() is False


@needs_gpu
class TestMixedDevices:
    """Operands on different devices: a RuntimeError naming the op and both devices."""

    @pytest.mark.parametrize("op, name", [
        (lambda a, b: a + b, "add"),
        (lambda a, b: a * b, "mul"),
        (lambda a, b: a @ b.T, "matmul"),
        (lambda a, b: a > b, "gt"),
    ])
    def test_binary_ops(self, op, name):
        a = tn.ones(2, 2)
        b = tn.ones(2, 2, device="cuda")
        with pytest.raises(RuntimeError, match=rf"{name}.*(cpu.*cuda:0|cuda:0.*cpu)"):
            op(a, b)

    def test_where_condition_on_other_device(self):
        with pytest.raises(RuntimeError, match=r"where.*(cpu.*cuda:0|cuda:0.*cpu)"):
            tn.where(tn.ones(2) > 0, tn.ones(2, device="cuda"), 0.0)

    def test_cat(self):
        with pytest.raises(RuntimeError, match=r"cat.*(cpu.*cuda:0|cuda:0.*cpu)"):
            tn.cat([tn.ones(2), tn.ones(2, device="cuda")])

    def test_gather_index(self):
        with pytest.raises(RuntimeError, match=r"gather.*(cpu.*cuda:0|cuda:0.*cpu)"):
            tn.ones(2, 2, device="cuda").gather(1, tn.tensor([[0], [1]]))

    def test_getitem_index(self):
        with pytest.raises(RuntimeError, match=r"getitem.*(cpu.*cuda:0|cuda:0.*cpu)"):
            tn.ones(3, device="cuda")[tn.tensor([0, 1])]


# ----------------------------------------------------------------------------- seeding


class TestManualSeed:
    def test_same_seed_same_stream(self):
        tn.manual_seed(123)
        a = [tn.rand(3).tolist(), tn.randn(3).tolist(), tn.randint(0, 100, (3,)).tolist()]
        tn.manual_seed(123)
        b = [tn.rand(3).tolist(), tn.randn(3).tolist(), tn.randint(0, 100, (3,)).tolist()]
        assert a == b

    def test_cuda_manual_seed_is_shared(self):
        tn.cuda.manual_seed(5)
        a = tn.rand(4).tolist()
        tn.manual_seed(5)
        assert tn.rand(4).tolist() == a

    def test_dropout_follows_seed(self):
        tn.manual_seed(3)
        a = tn.dropout(tn.ones(100), p=0.5).tolist()
        tn.manual_seed(3)
        assert tn.dropout(tn.ones(100), p=0.5).tolist() == a

    @pytest.mark.parametrize("seed", [1.5, "1", None])
    def test_non_integer_seed_raises(self, seed):
        with pytest.raises((TypeError, ValueError), match="manual_seed"):
            tn.manual_seed(seed)
