"""tn.save / tn.load: round trips, the safetensors byte layout, atomic writes, every error, and
(where the packages are installed) files exchanged with the safetensors and PyTorch readers."""

import json
import math
import os
import stat
import struct

import numpy as np
import pytest

import tinynlm as tn
from tinynlm import serialization

from .conftest import GPU_REASON


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "checkpoint.safetensors")


def write_raw_file(path, header, data=b"", header_size=None):
    """A safetensors file made by hand, without tinynlm: header dict, data bytes."""
    header_bytes = json.dumps(header).encode("utf-8")
    size = len(header_bytes) if header_size is None else header_size
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", size) + header_bytes + data)


def read_header(path):
    with open(path, "rb") as file:
        (size,) = struct.unpack("<Q", file.read(8))
        return size, json.loads(file.read(size))


def assert_same(loaded, original):
    """Equal structure, container types, key types, scalar types, array types, dtypes and values."""
    assert type(loaded) is type(original)
    if isinstance(original, dict):
        assert list(loaded) == list(original)
        assert [type(key) for key in loaded] == [type(key) for key in original]
        for key in original:
            assert_same(loaded[key], original[key])
    elif isinstance(original, (list, tuple)):
        assert len(loaded) == len(original)
        for loaded_item, original_item in zip(loaded, original):
            assert_same(loaded_item, original_item)
    elif isinstance(original, tn.Tensor):
        assert loaded.device == "cpu" and loaded.is_leaf
        assert loaded.requires_grad == original.requires_grad
        assert loaded.dtype == original.dtype and loaded.shape == original.shape
        np.testing.assert_array_equal(loaded.detach().numpy(), original.detach().numpy())
    elif isinstance(original, (np.ndarray, np.generic)):
        assert loaded.dtype == original.dtype and loaded.shape == original.shape
        np.testing.assert_array_equal(loaded, original)
    elif isinstance(original, float) and math.isnan(original):
        assert math.isnan(loaded)
    else:
        assert loaded == original


def round_trip(obj, path):
    tn.save(obj, path)
    loaded = tn.load(path)
    assert_same(loaded, obj)
    return loaded


# ----------------------------------------------------------------------------- round trips


def test_module_state_dict_tensor_names_are_its_keys(path):
    state_dict = {"embedding.weight": np.arange(12, dtype=np.float32).reshape(4, 3),
                  "blocks.0.attention.bias": np.zeros(3, np.float32),
                  "__metadata__": np.ones(2, np.float32)}  # the one reserved name
    loaded = round_trip(state_dict, path)
    assert loaded["embedding.weight"].dtype == np.float32
    _, header = read_header(path)
    assert set(header) - {"__metadata__"} == {"embedding.weight", "blocks.0.attention.bias",
                                              "__metadata__~1"}


def test_optimizer_state_dict_keeps_int_keys_and_tuples(path):
    optimizer_state = {
        "state": {0: {"step": 3, "exp_avg": np.full((2, 2), 0.5, np.float32),
                      "exp_avg_sq": np.full((2, 2), 0.25, np.float32)},
                  1: {"step": 3, "exp_avg": np.zeros(5, np.float32),
                      "exp_avg_sq": np.zeros(5, np.float32)}},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                          "amsgrad": False, "foreach": None, "params": [0, 1]}],
    }
    loaded = round_trip(optimizer_state, path)
    assert list(loaded["state"]) == [0, 1]
    _, header = read_header(path)
    assert "optimizer" not in header and "state.0.exp_avg" in header


def test_training_checkpoint_with_tensors_scalars_and_rng(path):
    generator = np.random.default_rng(7)
    generator.random(3)
    checkpoint = {
        "model": {"weight": tn.randn(3, 4, requires_grad=True), "scale": tn.ones(4),
                  "counts": tn.tensor([1, 2, 3])},
        "optimizer": {"state": {0: {"step": 1200, "momentum": np.ones(3, np.float64)}},
                      "param_groups": [{"lr": 0.1, "params": [0]}]},
        "scheduler": {"last_epoch": 1199, "base_lrs": [0.1], "_last_lr": [0.0999]},
        "step": 1200, "best_loss": float("inf"), "worst_loss": float("-inf"),
        "nan": float("nan"), "name": "run-α", "notes": None, "finished": True,
        "rng": {"numpy": generator.bit_generator.state, "seed": 1234},
        "numpy_scalars": [np.float32(1.5), np.int64(-3), np.bool_(True), np.float64(0.1)],
        "empty": {"list": [], "tuple": (), "dict": {}},
    }
    loaded = round_trip(checkpoint, path)
    restored = np.random.default_rng()
    restored.bit_generator.state = loaded["rng"]["numpy"]  # 128-bit ints survive
    np.testing.assert_array_equal(restored.random(4), generator.random(4))


DTYPES = ["float16", "float32", "float64", "int8", "uint8", "int16", "int32", "int64", "bool"]
SHAPES = [(), (0,), (2, 0, 3), (5,), (3, 4)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_dtype_and_shape_round_trips(path, dtype, shape):
    values = (np.arange(math.prod(shape)) % 7 - 3).reshape(shape).astype(dtype)
    loaded = round_trip({"array": values, "tensor": tn.from_numpy(values.copy())}, path)
    assert loaded["array"].flags.writeable and loaded["array"].flags.c_contiguous
    loaded["array"][...] = 0  # loaded arrays are ordinary, writable arrays


def test_non_contiguous_and_big_endian_arrays_are_packed_little_endian(path):
    transposed = np.arange(6, dtype=np.float32).reshape(2, 3).T
    big_endian = np.array([1, 256], dtype=">i4")
    tn.save({"transposed": transposed, "big_endian": big_endian}, path)
    loaded = tn.load(path)
    np.testing.assert_array_equal(loaded["transposed"], transposed)
    assert loaded["big_endian"].dtype == np.int32 and loaded["big_endian"].dtype.isnative
    np.testing.assert_array_equal(loaded["big_endian"], [1, 256])


def test_bare_array_and_bare_scalar(path):
    round_trip(np.eye(2), path)
    round_trip(tn.tensor(2.5), path)
    round_trip(42, path)


def test_keys_with_dots_do_not_collide(path):
    obj = {"a.b": np.zeros(1), "a": {"b": np.ones(1), "b~1": np.full(1, 2.0)}, "": np.full(1, 3.0)}
    round_trip(obj, path)
    _, header = read_header(path)
    assert set(header) == {"__metadata__", "a.b", "a.b~1", "a.b~1~1", ""}


def test_tensors_keep_requires_grad_and_move_with_map_location(path):
    weight = tn.randn(2, 2, requires_grad=True)
    tn.save({"weight": weight, "grad_free": weight.detach() * 2}, path)
    loaded = tn.load(path, map_location="cpu")
    assert loaded["weight"].requires_grad and loaded["weight"].is_leaf
    assert not loaded["grad_free"].requires_grad
    (loaded["weight"] * 3).sum().backward()
    assert loaded["weight"].grad.tolist() == [[3.0, 3.0], [3.0, 3.0]]


@pytest.mark.skipif(not tn.cuda.is_available(), reason=GPU_REASON)
def test_cuda_tensors_are_saved_from_and_loaded_to_the_gpu(path):
    import cupy

    weight = tn.randn(3, requires_grad=True, device="cuda")
    tn.save({"weight": weight, "raw": cupy.arange(4)}, path)
    on_host = tn.load(path)
    assert on_host["weight"].device == "cpu" and isinstance(on_host["raw"], np.ndarray)
    on_gpu = tn.load(path, map_location="cuda")
    assert on_gpu["weight"].device == "cuda:0" and on_gpu["weight"].requires_grad
    np.testing.assert_array_equal(on_gpu["weight"].detach().numpy(), weight.detach().numpy())
    np.testing.assert_array_equal(on_gpu["raw"], np.arange(4))


def test_unknown_map_location_is_refused_before_reading(path):
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        tn.load(path, map_location="tpu")


def test_path_may_be_a_pathlike(tmp_path):
    tn.save({"x": np.ones(2)}, tmp_path / "x.safetensors")
    assert list(tn.load(tmp_path / "x.safetensors")) == ["x"]


# ----------------------------------------------------------------------------- file layout


def test_header_bytes_of_a_tiny_file(path):
    tn.save({"w": np.array([1, 2], np.int32), "b": np.array([True])}, path)
    with open(path, "rb") as file:
        content = file.read()
    header_size = struct.unpack("<Q", content[:8])[0]
    header_text = content[8:8 + header_size].decode("utf-8")
    assert header_size % 8 == 0 and (8 + header_size) % 8 == 0
    assert header_text.startswith("{") and header_text == header_text.rstrip(" ") + " " * (
        len(header_text) - len(header_text.rstrip(" ")))
    header = json.loads(header_text)
    assert list(header) == ["__metadata__", "w", "b"]
    assert header["w"] == {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}
    assert header["b"] == {"dtype": "BOOL", "shape": [1], "data_offsets": [8, 9]}
    assert json.loads(header["__metadata__"]["tinynlm"]) == {
        "format_version": 1,
        "structure": {"dict": [["w", {"tensor": "w", "kind": "numpy.ndarray"}],
                               ["b", {"tensor": "b", "kind": "numpy.ndarray"}]]}}
    assert content[8 + header_size:] == b"\x01\x00\x00\x00\x02\x00\x00\x00\x01"


def test_tensors_are_aligned_to_their_item_size(path):
    obj = {"byte": np.ones(3, np.uint8), "half": np.ones(3, np.float16),
           "single": np.ones(3, np.float32), "double": np.ones(1, np.float64)}
    tn.save(obj, path)
    header_size, header = read_header(path)
    for name, array in obj.items():
        assert (8 + header_size + header[name]["data_offsets"][0]) % array.itemsize == 0, name
    assert list(tn.load(path)) == list(obj)  # the layout order does not change key order


def test_a_file_written_by_another_tool_loads_as_a_flat_dict(path):
    data = np.array([1.5, -2.0], "<f4").tobytes() + np.array([7], "<i8").tobytes()
    write_raw_file(path, {"__metadata__": {"format": "pt"},
                          "z.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                          "a.step": {"dtype": "I64", "shape": [], "data_offsets": [8, 16]}}, data)
    loaded = tn.load(path)
    assert list(loaded) == ["z.weight", "a.step"]
    assert loaded["z.weight"].dtype == np.float32 and loaded["z.weight"].tolist() == [1.5, -2.0]
    assert loaded["a.step"].shape == () and loaded["a.step"] == 7


def test_saving_over_a_file_replaces_it_with_umask_permissions(path):
    tn.save({"old": np.zeros(1000)}, path)
    tn.save({"new": np.ones(1)}, path)
    assert list(tn.load(path)) == ["new"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
    assert os.listdir(os.path.dirname(path)) == ["checkpoint.safetensors"]


# ----------------------------------------------------------------------------- atomic writes


@pytest.fixture
def old_file(path):
    """An existing checkpoint that a failed save must leave byte for byte as it was."""
    tn.save({"weights": np.arange(10.0)}, path)
    with open(path, "rb") as file:
        content = file.read()
    yield content
    with open(path, "rb") as file:
        assert file.read() == content, "a failed save changed the previous file"
    assert os.listdir(os.path.dirname(path)) == ["checkpoint.safetensors"], "temporary file left"


def test_unsaveable_object_after_arrays_leaves_the_old_file(path, old_file):
    with pytest.raises(TypeError, match=r"'model.layers.1.cache'.*builtins.set"):
        tn.save({"model": {"layers": [{"w": np.ones(100)}, {"w": np.ones(100), "cache": {1, 2}}]}},
                path)


def test_failure_while_writing_data_removes_the_temporary_file(path, old_file, monkeypatch):
    original = serialization._little_endian_host
    calls = []

    def fail_on_second_array(array):
        calls.append(array)
        if len(calls) == 2:
            assert [name for name in os.listdir(os.path.dirname(path)) if name.endswith(".tmp")]
            raise OSError(28, "No space left on device")
        return original(array)

    monkeypatch.setattr(serialization, "_little_endian_host", fail_on_second_array)
    with pytest.raises(OSError, match="No space left"):
        tn.save({"first": np.ones(100), "second": np.ones(100), "third": np.ones(100)}, path)


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failure_to_sync_or_rename_leaves_the_old_file(path, old_file, monkeypatch, failing):
    def fail(*args):
        raise OSError(5, f"simulated {failing} failure")

    monkeypatch.setattr(serialization.os, failing, fail)
    with pytest.raises(OSError, match=f"simulated {failing} failure"):
        tn.save({"new": np.ones(3)}, path)


def test_keyboard_interrupt_mid_write_also_cleans_up(path, old_file, monkeypatch):
    def interrupt(array):
        raise KeyboardInterrupt

    monkeypatch.setattr(serialization, "_little_endian_host", interrupt)
    with pytest.raises(KeyboardInterrupt):
        tn.save({"new": np.ones(3)}, path)


# ----------------------------------------------------------------------------- save errors


@pytest.mark.parametrize("obj, message", [
    ({"a": [1, object()]}, r"'a.1'.*builtins.object"),
    ({"a": {1.5: np.ones(1)}}, r"'a'.*key 1.5 of type float"),
    ({("x", 1): 2}, r"<top level>.*key \('x', 1\) of type tuple"),
    ({True: 2}, r"key True of type bool"),
    ({"opt": {"lr": np.ones(2, np.complex64)}}, r"'opt.lr'.*dtype complex64"),
    ({"x": np.array(["text"])}, r"'x'.*dtype <U4"),
    ({"x": np.uint32(3)}, r"'x'.*dtype uint32"),
], ids=["object", "float key", "tuple key", "bool key", "complex", "strings", "uint32"])
def test_unsupported_objects_name_the_file_key_path_and_type(path, obj, message):
    with pytest.raises(TypeError, match="save: cannot write .*checkpoint.safetensors.*" + message):
        tn.save(obj, path)
    assert not os.path.exists(path)


def test_a_structure_that_contains_itself_is_refused(path):
    looped = {"a": []}
    looped["a"].append(looped)
    with pytest.raises(ValueError, match=r"the dict at key path 'a.0' contains itself"):
        tn.save(looped, path)
    shared = [1]
    round_trip({"x": shared, "y": shared}, path)  # shared but not circular is fine


def test_saving_into_a_missing_directory(tmp_path):
    target = tmp_path / "no_such_dir" / "x.safetensors"
    with pytest.raises(FileNotFoundError, match="no_such_dir.*does not exist"):
        tn.save({}, target)


def test_path_of_the_wrong_type():
    with pytest.raises(TypeError, match="save: path must be a str or os.PathLike, got int"):
        tn.save({}, 3)
    with pytest.raises(TypeError, match="load: path must be a str or os.PathLike, got NoneType"):
        tn.load(None)


# ----------------------------------------------------------------------------- load errors


def test_missing_file(path):
    with pytest.raises(FileNotFoundError, match="load: no such file .*checkpoint.safetensors"):
        tn.load(path)


def test_file_shorter_than_the_header_size(path):
    with open(path, "wb") as file:
        file.write(b"\x01\x02\x03")
    with pytest.raises(ValueError, match="checkpoint.safetensors.*3 bytes long, shorter than"):
        tn.load(path)


def test_header_size_beyond_the_file(path):
    write_raw_file(path, {}, header_size=1000)
    with pytest.raises(ValueError, match="header size 1000 runs past the end of the file"):
        tn.load(path)


@pytest.mark.parametrize("header_bytes, message", [
    (b"{not json", "not valid JSON"), (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "a JSON list, not an object"),
])
def test_header_that_is_not_a_json_object(path, header_bytes, message):
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(header_bytes)) + header_bytes)
    with pytest.raises(ValueError, match="checkpoint.safetensors.*" + message):
        tn.load(path)


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize("header, data, message", [
    ({"x": entry(offsets=(0, 8))}, b"\0" * 4, r"'x' ends at byte 8 .* only 4 bytes .* truncated"),
    ({"x": entry(), "y": entry(offsets=(4, 12))}, b"\0" * 12, r"'x' and 'y' overlap"),
    ({"x": entry(offsets=(0, 12))}, b"\0" * 12, r"\(12 bytes\) but dtype F32 with shape \[2\] "
                                                r"needs 8"),
    ({"x": entry(dtype="U32", offsets=(0, 8))}, b"\0" * 8, r"dtype 'U32', which tinynlm cannot"),
    ({"x": entry(offsets=(4, 12))}, b"\0" * 12, r"bytes 0 to 4 of the data buffer belong to no"),
    ({"x": entry()}, b"\0" * 10, r"2 bytes after the last tensor"),
    ({"x": entry(shape=(-2,))}, b"", r"shape \[-2\], not a list of non-negative integers"),
    ({"x": entry(offsets=(8, 0))}, b"", r"data_offsets \[8, 0\], not \[begin, end\]"),
    ({"x": {"dtype": "F32"}}, b"", r"'x' needs dtype, shape and data_offsets"),
    ({"__metadata__": {"format": 1}}, b"", r"__metadata__ must map strings to strings"),
], ids=["past end", "overlap", "size mismatch", "unknown dtype", "gap", "trailing bytes",
        "negative shape", "reversed offsets", "missing fields", "metadata not strings"])
def test_bad_header_entries(path, header, data, message):
    write_raw_file(path, header, data)
    with pytest.raises(ValueError, match="load: .*checkpoint.safetensors': .*" + message):
        tn.load(path)


@pytest.mark.parametrize("cut_bytes", [1, 100])
def test_truncated_file(path, cut_bytes):
    tn.save({"model": {"w": np.ones(16, np.float64)}}, path)
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) - cut_bytes)
    with pytest.raises(ValueError, match="checkpoint.safetensors.*truncated"):
        tn.load(path)


def tinynlm_file(path, document, tensors=("x",)):
    """A file whose tinynlm metadata is ``document`` (a dict, dumped to JSON, or a raw string)."""
    metadata = document if isinstance(document, str) else json.dumps(document)
    header = {"__metadata__": {"tinynlm": metadata}}
    for index, name in enumerate(tensors):
        header[name] = entry(offsets=(8 * index, 8 * index + 8))
    write_raw_file(path, header, b"\0" * 8 * len(tensors))


def reference(name):
    return {"tensor": name, "kind": "numpy.ndarray"}


@pytest.mark.parametrize("document, message", [
    ({"format_version": 2, "structure": None}, "format 2; this tinynlm reads format 1"),
    ("{broken", "tinynlm metadata is malformed"),
    ({"structure": None}, "tinynlm metadata is malformed"),
    ({"format_version": 1, "structure": {"set": [1]}}, "malformed .*unknown node"),
    ({"format_version": 1, "structure": {"dict": 5}}, "malformed"),
    ({"format_version": 1, "structure": {"tensor": "x", "kind": "torch"}}, "unknown tensor kind"),
    ({"format_version": 1, "structure": {"list": [reference("x"), reference("gone")]}},
     r"refers to tensors \['gone'\], which are not in the file"),
    ({"format_version": 1, "structure": {"list": []}},
     r"tensors \['x'\] are in the file but not in its tinynlm metadata"),
], ids=["newer version", "not json", "no version", "unknown node", "bad dict", "bad kind",
        "missing tensor", "unreferenced tensor"])
def test_bad_tinynlm_metadata(path, document, message):
    tinynlm_file(path, document)
    with pytest.raises(ValueError, match="load: .*checkpoint.safetensors': .*" + message):
        tn.load(path)


# ----------------------------------------------------------------------------- other readers


def test_safetensors_reads_what_tinynlm_writes(path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    obj = {"model": {"w": np.arange(6, dtype=np.float16).reshape(2, 3), "mask": np.array([True])},
           "optimizer": {"state": {0: {"exp_avg": np.ones(0, np.float32), "step": np.int64(3)}}},
           "scale": tn.tensor(0.5), "step": 10}
    tn.save(obj, path)
    arrays = safetensors_numpy.load_file(path)
    assert set(arrays) == {"model.w", "model.mask", "optimizer.state.0.exp_avg",
                           "optimizer.state.0.step", "scale"}
    np.testing.assert_array_equal(arrays["model.w"], obj["model"]["w"])
    assert arrays["model.w"].dtype == np.float16 and arrays["optimizer.state.0.step"] == 3
    assert arrays["scale"].shape == () and arrays["scale"] == np.float32(0.5)


def test_tinynlm_reads_what_safetensors_writes(path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    arrays = {name: (np.arange(6) % 3).astype(name).reshape(2, 3) for name in DTYPES}
    arrays["empty"] = np.zeros((0, 4), np.float32)
    arrays["scalar"] = np.array(3.25)
    safetensors_numpy.save_file(arrays, path, metadata={"format": "np"})
    loaded = tn.load(path)
    assert set(loaded) == set(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)


def test_pytorch_reads_a_tinynlm_state_dict(path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    state_dict = {"linear.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
                  "linear.bias": np.array([0.5, -0.5], np.float32),
                  "steps": np.array(7, np.int64)}
    tn.save(state_dict, path)
    weights = safetensors_torch.load_file(path)
    assert set(weights) == set(state_dict)
    for name, array in state_dict.items():
        np.testing.assert_array_equal(weights[name].numpy(), array)
        assert weights[name].numpy().dtype == array.dtype


def test_bfloat16_tensors_load_as_float32(tmp_path):
    import json
    import struct

    values = np.array([1.0, -2.5, 0.15625], np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2").tobytes()  # exact in bfloat16
    header = json.dumps({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bits)
    loaded = tn.load(path)
    assert loaded["w"].dtype == np.float32
    np.testing.assert_array_equal(loaded["w"], values)
