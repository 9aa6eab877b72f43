"""Bad input gives clear errors that name the op and the offending shapes, dtypes or devices.

Where PyTorch and tinynlm's own conventions differ only in the exception class (PyTorch raises
RuntimeError for most shape errors, tinynlm ValueError), both are accepted; the message is what
these tests pin down.
"""

import re

import numpy as np
import pytest

import tinynlm as tn

SHAPE_ERRORS = (ValueError, RuntimeError)


def names(op, *shapes):
    """A regex: the op name, then each shape (in order) somewhere in the message."""
    return re.escape(op) + "".join(".*" + re.escape(str(tuple(s))) for s in shapes)


# ----------------------------------------------------------------------------- broadcasting


class TestBroadcastErrors:
    @pytest.mark.parametrize("op, name", [
        (lambda a, b: a + b, "add"),
        (lambda a, b: a - b, "sub"),
        (lambda a, b: a * b, "mul"),
        (lambda a, b: a / b, "div"),
        (lambda a, b: a ** b, "pow"),
        (tn.maximum, "maximum"),
        (tn.minimum, "minimum"),
        (lambda a, b: a < b, "lt"),
        (lambda a, b: a == b, "eq"),
    ])
    def test_binary_op_names_op_and_both_shapes(self, op, name, device):
        a = tn.ones(2, 3, device=device)
        b = tn.ones(4, device=device)
        with pytest.raises(SHAPE_ERRORS, match=names(name, (2, 3), (4,))):
            op(a, b)

    def test_add_function_form(self):
        with pytest.raises(SHAPE_ERRORS, match=names("add", (3, 1, 5), (2, 4))):
            tn.add(tn.ones(3, 1, 5), tn.ones(2, 4))

    def test_reflected_operand_order(self):
        # The shapes are reported in operand order.
        with pytest.raises(SHAPE_ERRORS, match=names("mul", (4,), (2, 3))):
            tn.ones(4) * tn.ones(2, 3)

    def test_mismatch_with_numpy_array_operand(self):
        with pytest.raises(SHAPE_ERRORS, match=names("add", (2, 3), (4,))):
            tn.ones(2, 3) + np.ones(4, dtype=np.float32)

    def test_where_names_op_and_shapes(self, device):
        cond = tn.ones(2, 3, device=device) > 0
        with pytest.raises(SHAPE_ERRORS, match=names("where", (2, 3), (4,))):
            tn.where(cond, tn.ones(2, 3, device=device), tn.ones(4, device=device))

    def test_where_condition_shape(self):
        cond = tn.ones(5) > 0
        with pytest.raises(SHAPE_ERRORS, match=names("where", (5,), (2, 3))):
            tn.where(cond, tn.ones(2, 3), 0.0)

    def test_masked_fill_mask_shape(self):
        mask = tn.ones(4) > 0
        with pytest.raises(SHAPE_ERRORS, match=r"masked_fill.*\(4,\).*\(2, 3\)"):
            tn.ones(2, 3).masked_fill(mask, 0.0)

    def test_masked_fill_mask_must_not_grow_the_input(self):
        mask = tn.ones(2, 3) > 0
        with pytest.raises(SHAPE_ERRORS, match=r"masked_fill.*\(2, 3\).*\(3,\)"):
            tn.ones(3).masked_fill(mask, 0.0)

    def test_expand(self):
        with pytest.raises(SHAPE_ERRORS, match=r"expand.*\(2, 3\)"):
            tn.ones(2, 3).expand(4, 3)


# ----------------------------------------------------------------------------- matmul


class TestMatmulErrors:
    def test_inner_dim_mismatch(self, device):
        a = tn.ones(2, 3, device=device)
        b = tn.ones(4, 5, device=device)
        with pytest.raises(SHAPE_ERRORS, match=names("matmul", (2, 3), (4, 5))):
            a @ b

    def test_vector_mismatch(self):
        with pytest.raises(SHAPE_ERRORS, match=names("matmul", (3,), (4,))):
            tn.matmul(tn.ones(3), tn.ones(4))

    def test_matrix_vector_mismatch(self):
        with pytest.raises(SHAPE_ERRORS, match=names("matmul", (2, 3), (2,))):
            tn.ones(2, 3) @ tn.ones(2)

    def test_batch_dims_mismatch(self):
        with pytest.raises(SHAPE_ERRORS, match=names("matmul", (2, 3, 4), (5, 4, 6))):
            tn.ones(2, 3, 4) @ tn.ones(5, 4, 6)

    def test_zero_dim_operand(self):
        with pytest.raises(RuntimeError, match=r"matmul.*1"):
            tn.tensor(2.0) @ tn.ones(2)


# ----------------------------------------------------------------------------- shapes


class TestShapeErrors:
    @pytest.mark.parametrize("target", [(4,), (5, 2), (-1, 4), (2, -1, -1), (0, -1)])
    def test_reshape_to_wrong_size(self, target):
        x = tn.ones(2, 3)
        with pytest.raises(RuntimeError, match=r"reshape.*\(2, 3\).*" + re.escape(str(target))):
            x.reshape(*target)

    def test_view_to_wrong_size(self):
        with pytest.raises(RuntimeError, match=r"\(2, 3\).*\(7,\)"):
            tn.ones(2, 3).view(7)

    def test_cat_mismatched_shapes(self, device):
        a = tn.ones(2, 3, device=device)
        b = tn.ones(2, 4, device=device)
        with pytest.raises(SHAPE_ERRORS, match=r"cat.*\(2, 3\).*\(2, 4\)"):
            tn.cat([a, b])

    def test_cat_mismatched_ndim(self):
        with pytest.raises(SHAPE_ERRORS, match=r"cat.*\(2, 3\).*\(3,\)"):
            tn.cat([tn.ones(2, 3), tn.ones(3)])

    def test_cat_along_dim1_checks_dim0(self):
        with pytest.raises(SHAPE_ERRORS, match=r"cat.*\(2, 3\).*\(3, 3\)"):
            tn.cat([tn.ones(2, 3), tn.ones(3, 3)], dim=1)

    def test_cat_empty_list(self):
        with pytest.raises(SHAPE_ERRORS, match="cat"):
            tn.cat([])

    def test_stack_mismatched_shapes(self):
        with pytest.raises(SHAPE_ERRORS, match=r"stack.*\(2,\).*\(3,\)"):
            tn.stack([tn.ones(2), tn.ones(3)])

    def test_split_sizes_do_not_add_up(self):
        with pytest.raises(SHAPE_ERRORS, match="split"):
            tn.ones(5).split([2, 2])

    def test_permute_not_a_permutation(self):
        with pytest.raises(SHAPE_ERRORS, match="permute"):
            tn.ones(2, 3).permute(0, 0)

    def test_t_on_3d(self):
        with pytest.raises(RuntimeError, match=r"t.*\(2, 3, 4\)"):
            tn.ones(2, 3, 4).t()

    def test_negative_size(self):
        with pytest.raises(SHAPE_ERRORS, match="zeros"):
            tn.zeros(2, -1)


# ----------------------------------------------------------------------------- dims


class TestDimErrors:
    @pytest.mark.parametrize("call, name", [
        (lambda x: x.sum(dim=2), "sum"),
        (lambda x: x.sum(dim=-3), "sum"),
        (lambda x: x.mean(dim=5), "mean"),
        (lambda x: x.var(dim=2), "var"),
        (lambda x: x.amax(dim=2), "amax"),
        (lambda x: x.max(dim=2), "max"),
        (lambda x: x.argmax(dim=2), "argmax"),
        (lambda x: x.softmax(dim=2), "softmax"),
        (lambda x: x.log_softmax(dim=-3), "log_softmax"),
        (lambda x: x.logsumexp(dim=2), "logsumexp"),
        (lambda x: x.transpose(0, 2), "transpose"),
        (lambda x: x.unsqueeze(3), "unsqueeze"),
        (lambda x: x.squeeze(2), "squeeze"),
        (lambda x: x.flatten(0, 2), "flatten"),
        (lambda x: x.size(2), "size"),
        (lambda x: x.size(-3), "size"),
        (lambda x: tn.cat([x, x], dim=2), "cat"),
        (lambda x: tn.stack([x, x], dim=4), "stack"),
        (lambda x: x.split(1, dim=2), "split"),
        (lambda x: x.gather(2, tn.zeros(2, 3, dtype=tn.int64)), "gather"),
    ])
    def test_out_of_range_dim_is_index_error_naming_the_op(self, call, name, device):
        x = tn.ones(2, 3, device=device)
        with pytest.raises(IndexError, match=rf"^{name}\b.*out of range"):
            call(x)

    def test_repeated_dim(self):
        with pytest.raises((ValueError, RuntimeError), match=r"sum.*repeat|sum.*multiple"):
            tn.ones(2, 3).sum(dim=(0, 0))

    def test_non_int_dim(self):
        with pytest.raises(TypeError, match="softmax"):
            tn.ones(2, 3).softmax(dim=1.0)


# ----------------------------------------------------------------------------- dtypes


class TestDtypeErrors:
    @pytest.mark.parametrize("call, name", [
        (lambda x: x.softmax(dim=-1), "softmax"),
        (lambda x: x.log_softmax(dim=-1), "log_softmax"),
        (lambda x: x.mean(), "mean"),
        (lambda x: x.mean(dim=0), "mean"),
        (lambda x: x.var(), "var"),
        (lambda x: x.std(), "var|std"),
        (lambda x: x.logsumexp(dim=0), "logsumexp"),
    ])
    @pytest.mark.parametrize("dtype", [tn.int64, tn.int32, tn.bool])
    def test_float_only_ops_refuse_int_and_bool(self, call, name, dtype, device):
        x = tn.ones(2, 3, dtype=dtype, device=device)
        with pytest.raises(TypeError, match=rf"({name}).*{dtype}"):
            call(x)

    @pytest.mark.parametrize("dtype", [tn.int64, tn.int32, tn.bool])
    def test_requires_grad_on_non_float(self, dtype):
        with pytest.raises(RuntimeError, match=rf"floating point.*{dtype}"):
            tn.tensor([1, 0], dtype=dtype, requires_grad=True)
        with pytest.raises(RuntimeError, match=rf"floating point.*{dtype}"):
            tn.zeros(2, dtype=dtype, requires_grad=True)
        with pytest.raises(RuntimeError, match=rf"floating point.*{dtype}"):
            tn.zeros(2, dtype=dtype).requires_grad_()

    def test_arange_int_requires_grad(self):
        with pytest.raises(RuntimeError, match="floating point.*int64"):
            tn.arange(3, requires_grad=True)

    def test_float_tensor_as_index(self, device):
        x = tn.ones(3, 2, device=device)
        with pytest.raises(IndexError, match=r"getitem.*float32"):
            x[tn.tensor([0.0, 1.0], device=device)]

    def test_float_list_as_index(self):
        with pytest.raises(IndexError, match=r"getitem.*float"):
            tn.ones(3)[[0.0, 1.0]]

    def test_float_tensor_as_python_index(self):
        with pytest.raises(TypeError, match="index"):
            [1, 2, 3][tn.tensor(1.0)]

    def test_float_index_in_setitem(self):
        x = tn.ones(3)
        with pytest.raises(IndexError, match=r"__setitem__.*float32"):
            x[tn.tensor([0.0])] = 2.0

    @pytest.mark.parametrize("mask_dtype", [tn.int64, tn.float32, tn.uint8])
    def test_masked_fill_non_bool_mask(self, mask_dtype, device):
        x = tn.ones(2, 3, device=device)
        mask = tn.zeros(2, 3, dtype=mask_dtype, device=device)
        with pytest.raises((TypeError, RuntimeError), match=rf"masked_fill.*bool.*{mask_dtype}"):
            x.masked_fill(mask, 0.0)

    def test_where_non_bool_condition(self):
        with pytest.raises((TypeError, RuntimeError), match=r"where.*bool.*float32"):
            tn.where(tn.ones(2), tn.ones(2), tn.zeros(2))

    def test_gather_float_index(self):
        with pytest.raises((TypeError, RuntimeError), match=r"gather.*float32"):
            tn.ones(2, 3).gather(1, tn.zeros(2, 1))

    def test_index_select_float_index(self):
        with pytest.raises((TypeError, IndexError), match="index_select"):
            tn.ones(2, 3).index_select(0, tn.zeros(1))

    def test_operand_of_wrong_type(self):
        with pytest.raises(TypeError, match=r"add.*str"):
            tn.ones(2) + "a"
        with pytest.raises(TypeError, match=r"mul.*NoneType"):
            tn.ones(2) * None

    def test_unsupported_dtype(self):
        with pytest.raises(TypeError, match=r"dtype.*uint16"):
            tn.tensor(np.zeros(2, dtype=np.uint16))
        with pytest.raises(TypeError, match="dtype"):
            tn.zeros(2, dtype="not a dtype")


# ----------------------------------------------------------------------------- gather


class TestGatherErrors:
    def test_index_too_large(self, device):
        x = tn.ones(2, 3, device=device)
        index = tn.tensor([[0], [5]], device=device)
        with pytest.raises((IndexError, RuntimeError), match=r"gather.*(out of range|out of bounds).*3"):
            x.gather(1, index)

    def test_negative_index_is_out_of_range(self):
        # torch.gather does not wrap negative indices: "index -1 is out of bounds for
        # dimension 1 with size 3".
        x = tn.arange(6.0).reshape(2, 3)
        with pytest.raises((IndexError, RuntimeError), match=r"gather"):
            x.gather(1, tn.tensor([[-1], [0]]))

    def test_index_shape_does_not_fit(self):
        with pytest.raises(SHAPE_ERRORS, match=r"gather.*\(3, 1\).*\(2, 3\)"):
            tn.ones(2, 3).gather(1, tn.zeros(3, 1, dtype=tn.int64))

    def test_index_ndim_differs(self):
        with pytest.raises(SHAPE_ERRORS, match=r"gather.*\(2,\).*\(2, 3\)"):
            tn.ones(2, 3).gather(1, tn.zeros(2, dtype=tn.int64))

    def test_getitem_out_of_range(self):
        with pytest.raises(IndexError, match=r"getitem.*\(2, 3\)"):
            tn.ones(2, 3)[5]


# ----------------------------------------------------------------------------- autograd


class TestBackwardErrors:
    def test_non_scalar_without_gradient(self):
        x = tn.ones(2, 3, requires_grad=True)
        with pytest.raises(RuntimeError, match=r"scalar outputs.*\(2, 3\)"):
            (x * 2).backward()

    def test_gradient_of_wrong_shape(self):
        x = tn.ones(3, requires_grad=True)
        with pytest.raises(RuntimeError, match=r"backward.*\(2,\).*\(3,\)"):
            (x * 2).backward(tn.ones(2))

    def test_tensor_without_grad(self):
        x = tn.ones(2)
        with pytest.raises(RuntimeError, match="does not require grad"):
            x.sum().backward()

    def test_tensor_made_under_no_grad(self):
        x = tn.ones(2, requires_grad=True)
        with tn.no_grad():
            y = (x * 2).sum()
        with pytest.raises(RuntimeError, match="does not require grad"):
            y.backward()

    def test_detached_tensor(self):
        x = tn.ones(2, requires_grad=True)
        with pytest.raises(RuntimeError, match="does not require grad"):
            (x * 2).sum().detach().backward()

    def test_second_backward_through_freed_graph(self):
        x = tn.tensor([1.0, 2.0], requires_grad=True)
        y = (x * x).sum()
        y.backward()
        with pytest.raises(RuntimeError, match="retain_graph"):
            y.backward()
        assert x.grad.tolist() == [2.0, 4.0]  # the failed call added nothing

    def test_second_backward_through_shared_freed_subgraph(self):
        x = tn.tensor([1.0, 2.0], requires_grad=True)
        h = x.exp()
        h.sum().backward()
        with pytest.raises(RuntimeError, match="retain_graph"):
            (h * 2).sum().backward()

    def test_grad_input_without_requires_grad(self):
        x = tn.ones(2)
        with pytest.raises(RuntimeError, match=r"grad.*does not require grad"):
            tn.grad((x * 2).sum(), x)

    def test_grad_unused_input(self):
        x = tn.ones(2, requires_grad=True)
        unused = tn.ones(2, requires_grad=True)
        with pytest.raises(RuntimeError, match="allow_unused"):
            tn.grad((x * 2).sum(), [x, unused])
        gx, gu = tn.grad((x * 2).sum(), [x, unused], allow_unused=True)
        assert gx.tolist() == [2.0, 2.0]
        assert gu is None

    def test_turning_off_requires_grad_on_non_leaf(self):
        y = tn.ones(2, requires_grad=True) * 2
        with pytest.raises(RuntimeError, match=r"requires_grad.*detach"):
            y.requires_grad_(False)


class TestGradcheckErrors:
    def test_refuses_float32(self):
        x = tn.randn(3, requires_grad=True)
        with pytest.raises(TypeError, match=r"gradcheck.*float32.*float64"):
            tn.gradcheck(lambda t: t * 2, (x,))

    def test_gradgradcheck_refuses_float32(self):
        x = tn.randn(3, requires_grad=True)
        with pytest.raises(TypeError, match=r"gradgradcheck.*float32"):
            tn.gradgradcheck(lambda t: t * t, (x,))

    def test_nothing_requires_grad(self):
        x = tn.randn(3, dtype=tn.float64)
        with pytest.raises(ValueError, match=r"gradcheck.*requires grad"):
            tn.gradcheck(lambda t: t * 2, (x,))

    def test_wrong_gradient_is_reported(self):
        class Wrong(tn.autograd.Function):
            def forward(self, x):
                return x * 2

            def backward(self, grad):
                return grad * 3

        x = tn.randn(3, dtype=tn.float64, requires_grad=True)
        with pytest.raises(tn.GradcheckError, match=r"gradcheck.*analytic.*numeric"):
            tn.gradcheck(lambda t: Wrong()(t), (x,))
        assert tn.gradcheck(lambda t: Wrong()(t), (x,), raise_exception=False) is False


# ----------------------------------------------------------------------------- construction


class TestConstructionErrors:
    @pytest.mark.parametrize("data", [
        [[1, 2], [3]],
        [[1.0], 2.0],
        [[[1, 2]], [[3, 4], [5, 6]]],
    ])
    def test_ragged_lists(self, data):
        with pytest.raises(ValueError, match=r"tensor.*ragged"):
            tn.tensor(data)

    @pytest.mark.parametrize("data", ["abc", [1 + 2j], {"a": 1}, object()])
    def test_non_numeric_data(self, data):
        with pytest.raises((TypeError, ValueError), match="tensor"):
            tn.tensor(data)

    @pytest.mark.parametrize("spec", ["tpu", "gpu", "cuda:x", "cpu:3"])
    def test_unknown_device_strings(self, spec):
        with pytest.raises((ValueError, RuntimeError), match=re.escape(repr(spec))):
            tn.zeros(2, device=spec)
        with pytest.raises((ValueError, RuntimeError), match=re.escape(repr(spec))):
            tn.tensor([1.0], device=spec)
        with pytest.raises((ValueError, RuntimeError), match=re.escape(repr(spec))):
            tn.ones(2).to(spec)

    @pytest.mark.skipif(tn.cuda.is_available(), reason="CUDA is available here")
    def test_cuda_without_cupy_or_gpu(self):
        with pytest.raises(RuntimeError, match=r"CuPy|GPU"):
            tn.zeros(2, device="cuda")
        with pytest.raises(RuntimeError, match=r"CuPy|GPU"):
            tn.tensor([1.0]).to("cuda")

    def test_cuda_is_available_is_a_bool(self):
        assert isinstance(tn.cuda.is_available(), bool)

    def test_item_on_many_elements(self):
        with pytest.raises((RuntimeError, ValueError), match=r"item.*(2 elements|\(2,\))"):
            tn.tensor([1.0, 2.0]).item()

    def test_bool_of_many_elements(self):
        with pytest.raises(RuntimeError, match="ambiguous"):
            bool(tn.tensor([1.0, 2.0]))

    def test_randint_empty_range(self):
        with pytest.raises((ValueError, RuntimeError), match="randint"):
            tn.randint(5, 5, (2,))

    def test_arange_zero_step(self):
        with pytest.raises((ValueError, RuntimeError), match="arange"):
            tn.arange(0, 5, 0)

    @pytest.mark.parametrize("make", [tn.rand, tn.randn])
    def test_random_float_draw_with_int_dtype(self, make):
        with pytest.raises((TypeError, RuntimeError), match=r"int64"):
            make(2, dtype=tn.int64)


class TestInPlaceErrors:
    @pytest.mark.parametrize("call, name", [
        (lambda x: x.zero_(), "zero_"),
        (lambda x: x.fill_(1.0), "fill_"),
        (lambda x: x.copy_(tn.ones(2)), "copy_"),
    ])
    def test_requires_grad_in_grad_mode(self, call, name):
        x = tn.zeros(2, requires_grad=True)
        with pytest.raises(RuntimeError, match=rf"{name}.*no_grad"):
            call(x)
        with tn.no_grad():
            call(x)

    def test_copy_shape_that_does_not_broadcast(self):
        x = tn.zeros(2, 3)
        with pytest.raises(RuntimeError, match=r"copy_.*\(4,\).*\(2, 3\)"):
            x.copy_(tn.ones(4))
