"""Checkpoints: :func:`save` and :func:`load` in the safetensors format.

A file is what https://huggingface.co/docs/safetensors describes: an 8-byte little-endian header
size N, N bytes of UTF-8 JSON (padded with spaces to a multiple of 8), then the tensor data,
little-endian, C order, packed. Each array in the saved object becomes one tensor, named by its
key path joined with dots (``"model.layer.weight"``, ``"optimizer.state.0.exp_avg"``), so a flat
``state_dict()`` gives a file whose tensor names are exactly its keys and any safetensors reader
(``safetensors.torch.load_file``) gets the weights. Tensors are laid out widest dtype first, so
each starts on a multiple of its item size.

Everything else goes as JSON in the header's ``__metadata__`` under the key ``"tinynlm"``::

    {"format_version": 1, "structure": NODE}

where a NODE is one of

- a JSON null, true/false, number or string: that Python scalar (ints stay ints);
- ``{"float": "nan" | "inf" | "-inf"}``: a non-finite float (JSON has none);
- ``{"list": [NODE, ...]}`` or ``{"tuple": [NODE, ...]}``;
- ``{"dict": [[KEY, NODE], ...]}`` with KEY a JSON string or integer, in insertion order;
- ``{"tensor": NAME, "kind": KIND}``: the tensor NAME of the file, loaded as KIND, one of
  ``"numpy.ndarray"``, ``"numpy.generic"`` (a NumPy scalar) or ``"tinynlm.Tensor"`` (which also
  has ``"requires_grad": true|false``).

The structure says where each tensor goes, so names need only be unique: a name that is taken
(``{"a.b": x, "a": {"b": y}}``) or is ``"__metadata__"`` gets a suffix ``~1``, ``~2``, ...
A file without the ``"tinynlm"`` metadata (written by another tool) loads as a flat dict of
tensor name -> NumPy array. Subclasses of dict, list and tuple (``OrderedDict``, named tuples)
load as the plain type, and an array stored in two places loads as two separate arrays.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import struct

import numpy as np

from . import backend
from .creation import from_numpy
from .tensor import Tensor

FORMAT_VERSION = 1
METADATA_KEY = "tinynlm"  # the key of __metadata__ that holds the structure

# safetensors dtype name -> the little-endian NumPy dtype of its data
SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
# bfloat16 tensors (read only) are loaded as float32; this marks their 2-byte storage.
BFLOAT16_BITS = np.dtype([("bfloat16", "<u2")])
_SAFETENSORS_NAME_OF = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
_SIZE_FIELD_BYTES = 8  # the little-endian uint64 at the start that gives the header's length


def save(obj, path) -> None:
    """Write ``obj`` to ``path`` as a safetensors file, atomically.

    ``obj`` is nested dicts (str or int keys), lists and tuples of Python scalars (int, float,
    bool, str, None), tinynlm Tensors and NumPy arrays or scalars (CuPy arrays are copied to the
    host and load as NumPy arrays): a ``state_dict()``, an optimizer's state or a whole training
    checkpoint. The file is written beside ``path`` under a temporary name, synced, and renamed
    over ``path``, so a failure leaves any previous file untouched.

    >>> import os, tempfile, numpy as np, tinynlm as tn
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "checkpoint.safetensors")
    >>> tn.save({"model": {"weight": np.ones((2, 3), np.float32)}, "step": 1200}, path)
    >>> checkpoint = tn.load(path)
    >>> checkpoint["step"], checkpoint["model"]["weight"].dtype
    (1200, dtype('float32'))
    >>> folder.cleanup()
    """
    path = _as_path(path, "save")
    flattener = _Flattener(f"save: cannot write {path!r}")
    structure = flattener.encode(obj, ())
    metadata = json.dumps({"format_version": FORMAT_VERSION, "structure": structure},
                          allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    # widest item size first, so that every tensor starts aligned to its item size
    names = sorted(flattener.arrays, key=lambda name: -flattener.arrays[name].dtype.itemsize)
    header = {"__metadata__": {METADATA_KEY: metadata}}
    offset = 0
    for name in names:
        array = flattener.arrays[name]
        header[name] = {"dtype": _SAFETENSORS_NAME_OF[array.dtype.newbyteorder("<")],
                        "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    header_bytes = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    _write_atomically(path, header_bytes, [flattener.arrays[name] for name in names])


def load(path, map_location=None):
    """Read a file written by :func:`save` back into the same structure.

    NumPy arrays and scalars come back as NumPy arrays and scalars, and tinynlm Tensors as leaf
    Tensors (with their ``requires_grad``) on the CPU, or on ``map_location`` (``"cuda"``,
    ``"cuda:1"``) when given; ``map_location`` moves Tensors only.
    A safetensors file from another tool loads as a dict of tensor name -> NumPy array.

    >>> import os, tempfile, tinynlm as tn
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "weights.safetensors")
    >>> tn.save({"bias": tn.zeros(2, requires_grad=True), "layers": (1, 2.5)}, path)
    >>> tn.load(path)
    {'bias': tensor([0., 0.], requires_grad=True), 'layers': (1, 2.5)}
    >>> folder.cleanup()
    """
    path = _as_path(path, "load")
    device = backend.CPU if map_location is None else backend.as_device(map_location)
    try:
        file = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"load: no such file {path!r}") from None
    with file:
        data_start, entries, metadata = _read_header(file, path)
        arrays = {name: _read_array(file, path, name, data_start, entry)
                  for name, entry in entries.items()}
    if METADATA_KEY not in metadata:
        return arrays
    return _unflatten(metadata[METADATA_KEY], arrays, device, path)


def _as_path(path, function_name) -> str:
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(f"{function_name}: path must be a str or os.PathLike, "
                        f"got {type(path).__name__}") from None


# ----------------------------------------------------------------------------- saving


class _Flattener:
    """Splits an object into its arrays, named by key path, and a JSON structure naming them."""

    def __init__(self, error_prefix):
        self.arrays = {}  # tensor name -> NumPy or CuPy array, in the order met
        self._error_prefix = error_prefix
        self._open_containers = set()  # ids of the containers on the current key path

    def encode(self, obj, key_path):
        """The structure NODE of ``obj`` (see the module docstring); its arrays go to
        ``self.arrays``."""
        if isinstance(obj, Tensor):
            return {"tensor": self._add(obj.data, key_path), "kind": "tinynlm.Tensor",
                    "requires_grad": obj.requires_grad}
        if isinstance(obj, np.generic):  # before float: np.float64 is a float
            return {"tensor": self._add(np.asarray(obj), key_path), "kind": "numpy.generic"}
        if backend.is_array(obj):
            return {"tensor": self._add(obj, key_path), "kind": "numpy.ndarray"}
        if obj is None or isinstance(obj, (bool, int, str)):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {"float": repr(obj)}
        if isinstance(obj, (dict, list, tuple)):
            if id(obj) in self._open_containers:
                raise ValueError(f"{self._error_prefix}: the {type(obj).__name__} at key path "
                                 f"{_describe(key_path)} contains itself (a reference cycle)")
            self._open_containers.add(id(obj))
            node = self._encode_container(obj, key_path)
            self._open_containers.discard(id(obj))
            return node
        raise TypeError(f"{self._error_prefix}: the object at key path {_describe(key_path)} is "
                        f"a {type(obj).__module__}.{type(obj).__qualname__}, which cannot be "
                        "saved; supported are dict, list, tuple, int, float, bool, str, None, "
                        "tinynlm.Tensor and NumPy/CuPy arrays and scalars")

    def _encode_container(self, obj, key_path):
        if not isinstance(obj, dict):
            kind = "list" if isinstance(obj, list) else "tuple"
            return {kind: [self.encode(item, key_path + (index,))
                           for index, item in enumerate(obj)]}
        items = []
        for key, value in obj.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"{self._error_prefix}: the dict at key path {_describe(key_path)} "
                                f"has key {key!r} of type {type(key).__name__}; keys must be str "
                                "or int")
            items.append([key, self.encode(value, key_path + (key,))])
        return {"dict": items}

    def _add(self, array, key_path) -> str:
        """Record ``array`` under a tensor name not yet used, and return the name."""
        if array.dtype.newbyteorder("<") not in _SAFETENSORS_NAME_OF:
            raise TypeError(f"{self._error_prefix}: the array at key path {_describe(key_path)} "
                            f"has dtype {array.dtype}; safetensors holds "
                            + ", ".join(str(dtype) for dtype in _SAFETENSORS_NAME_OF))
        natural = ".".join(str(key) for key in key_path) if key_path else "tensor"
        name, suffix = natural, 0
        while name in self.arrays or name == "__metadata__":
            suffix += 1
            name = f"{natural}~{suffix}"
        self.arrays[name] = array
        return name


def _describe(key_path) -> str:
    return repr(".".join(str(key) for key in key_path)) if key_path else "<top level>"


def _write_atomically(path, header_bytes, arrays):
    """Write header and data to a temporary file beside ``path``, sync it and rename it over
    ``path``; on any failure remove the temporary file and leave ``path`` as it was."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save: cannot write {path!r}: directory {directory!r} does not "
                                "exist")
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    # os.open with mode 0o666 so the file's permissions follow the umask, as open() would
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with open(descriptor, "wb") as file:
            file.write(struct.pack("<Q", len(header_bytes)))
            file.write(header_bytes)
            for array in arrays:
                file.write(_little_endian_host(array).data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    if os.name == "posix":  # make the rename itself durable
        directory_descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_descriptor)
        finally:
            os.close(directory_descriptor)


def _little_endian_host(array) -> np.ndarray:
    """``array`` as a C-contiguous little-endian NumPy array (copied only when it must be)."""
    host = backend.to_host(array)
    return np.ascontiguousarray(host, dtype=host.dtype.newbyteorder("<"))


# ----------------------------------------------------------------------------- loading


def _file_error(path, problem) -> ValueError:
    return ValueError(f"load: {path!r}: {problem}")


def _read_header(file, path):
    """Read and check the header: returns (where the data starts, {name: (dtype, shape, begin,
    end)}, the __metadata__ map)."""
    file_size = os.fstat(file.fileno()).st_size
    if file_size < _SIZE_FIELD_BYTES:
        raise _file_error(path, f"the file is {file_size} bytes long, shorter than the 8-byte "
                                "header size of a safetensors file")
    (header_size,) = struct.unpack("<Q", file.read(_SIZE_FIELD_BYTES))
    if header_size > file_size - _SIZE_FIELD_BYTES:
        raise _file_error(path, f"the header size {header_size} runs past the end of the file "
                                f"({file_size} bytes); the file is truncated or not safetensors")
    try:
        header = json.loads(file.read(header_size).decode("utf-8"))
    except ValueError as error:  # bad UTF-8 or bad JSON
        raise _file_error(path, f"the header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise _file_error(path, f"the header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(value, str)
                                                 for value in metadata.values()):
        raise _file_error(path, "__metadata__ must map strings to strings")
    entries = {name: _check_entry(path, name, info) for name, info in header.items()}
    _check_data_layout(path, entries, file_size - _SIZE_FIELD_BYTES - header_size)
    return _SIZE_FIELD_BYTES + header_size, entries, metadata


def _check_entry(path, name, info):
    """One header entry as (dtype, shape, begin, end), or a clear error."""
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise _file_error(path, f"the entry of tensor {name!r} needs dtype, shape and "
                                f"data_offsets, got {info!r}")
    dtype = BFLOAT16_BITS if info["dtype"] == "BF16" else SAFETENSORS_DTYPES.get(info["dtype"])
    if dtype is None:
        raise _file_error(path, f"tensor {name!r} has dtype {info['dtype']!r}, which tinynlm "
                                f"cannot load; it reads {', '.join(SAFETENSORS_DTYPES)}")
    shape, offsets = info["shape"], info["data_offsets"]
    if not (isinstance(shape, list) and all(_is_count(size) for size in shape)):
        raise _file_error(path, f"tensor {name!r} has shape {shape!r}, not a list of "
                                "non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
            and offsets[0] <= offsets[1]):
        raise _file_error(path, f"tensor {name!r} has data_offsets {offsets!r}, not [begin, end] "
                                "with 0 <= begin <= end")
    needed = math.prod(shape) * dtype.itemsize
    if offsets[1] - offsets[0] != needed:
        raise _file_error(path, f"tensor {name!r} has data_offsets {offsets} "
                                f"({offsets[1] - offsets[0]} bytes) but dtype {info['dtype']} "
                                f"with shape {shape} needs {needed} bytes")
    return dtype, tuple(shape), offsets[0], offsets[1]


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_data_layout(path, entries, buffer_size):
    """The tensors must tile the data buffer: no overlap, no gap, nothing past its end."""
    position, previous = 0, None
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda item: item[1][2:]):
        if begin < position:
            raise _file_error(path, f"the data of tensors {previous!r} and {name!r} overlap")
        if begin > position:
            raise _file_error(path, f"bytes {position} to {begin} of the data buffer belong to "
                                    "no tensor")
        if end > buffer_size:
            raise _file_error(path, f"tensor {name!r} ends at byte {end} of the data buffer but "
                                    f"only {buffer_size} bytes follow the header; the file is "
                                    "truncated")
        position, previous = end, name
    if position != buffer_size:
        raise _file_error(path, f"{buffer_size - position} bytes after the last tensor belong to "
                                "no tensor")


def _read_array(file, path, name, data_start, entry) -> np.ndarray:
    """Read one tensor into a fresh, writable, aligned array of the native byte order."""
    dtype, shape, begin, end = entry
    raw = np.empty(end - begin, np.uint8)
    file.seek(data_start + begin)
    if file.readinto(raw) != raw.size:
        raise _file_error(path, f"the file ended inside tensor {name!r}; it is truncated")
    if dtype is BFLOAT16_BITS:
        # bfloat16 is the top half of a float32: widen exactly (the format most LM weights use).
        bits = raw.view("<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return raw.view(dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def _unflatten(metadata_json, arrays, device, path):
    """Rebuild the saved object from the structure in the metadata and the file's arrays."""
    try:
        document = json.loads(metadata_json)
        version, structure = document["format_version"], document["structure"]
    except (ValueError, TypeError, KeyError) as error:
        raise _file_error(path, f"the tinynlm metadata is malformed "
                                f"({type(error).__name__}: {error})") from None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise _file_error(path, f"it was written in tinynlm checkpoint format {version!r}; this "
                                f"tinynlm reads format {FORMAT_VERSION} and older")
    referenced = []

    def decode(node):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if "tensor" in node:
            referenced.append(node["tensor"])
            array = arrays.get(node["tensor"])
            return None if array is None else _as_kind(array, node, device)
        if "dict" in node:
            return {key: decode(value) for key, value in node["dict"]}
        if "list" in node:
            return [decode(item) for item in node["list"]]
        if "tuple" in node:
            return tuple(decode(item) for item in node["tuple"])
        if "float" in node:
            return float(node["float"])
        raise ValueError(f"unknown node {node!r}")

    try:
        result = decode(structure)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise _file_error(path, f"the tinynlm metadata is malformed "
                                f"({type(error).__name__}: {error})") from None
    missing = [name for name in referenced if name not in arrays]
    if missing:
        raise _file_error(path, f"the tinynlm metadata refers to tensors {missing}, which are not "
                                "in the file")
    referenced_names = set(referenced)
    unused = [name for name in arrays if name not in referenced_names]
    if unused:
        raise _file_error(path, f"tensors {unused} are in the file but not in its tinynlm metadata")
    return result


def _as_kind(array, node, device):
    """A loaded array as the kind it was saved as."""
    kind = node.get("kind")
    if kind == "numpy.ndarray":
        return array
    if kind == "numpy.generic":
        return array[()]
    if kind == "tinynlm.Tensor":
        return from_numpy(array).to(device).requires_grad_(node.get("requires_grad", False))
    raise ValueError(f"unknown tensor kind {kind!r}")
