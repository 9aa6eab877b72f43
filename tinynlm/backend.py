"""Devices and the NumPy/CuPy switch.

A tensor's array lives in NumPy on ``"cpu"`` and in CuPy on ``"cuda"``/``"cuda:N"``.
CuPy is imported here and nowhere else, lazily, the first time a CUDA device is asked for.
Ops are written once against an array module ``xp`` that :func:`array_module` returns.
"""

from __future__ import annotations

import numpy as np

from . import dispatch

_cupy = None          # the cupy module once imported
_cupy_error = None    # why CuPy or a GPU is unavailable, once known


class Device:
    """Where a tensor's memory lives: ``Device("cpu")``, ``Device("cuda")``, ``Device("cuda:1")``.

    Compares equal to its string form, so ``x.device == "cpu"`` works.

    >>> Device("cuda:1").index
    1
    >>> str(Device("cpu"))
    'cpu'
    """

    __slots__ = ("type", "index")

    def __init__(self, spec="cpu", index=None):
        if isinstance(spec, Device):
            self.type, self.index = spec.type, spec.index
            return
        if not isinstance(spec, str):
            raise TypeError(f"device: expected a string such as 'cpu' or 'cuda:0', got {spec!r}")
        kind, _, number = spec.partition(":")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"device: unknown device {spec!r}; expected 'cpu', 'cuda' or 'cuda:N'")
        if number:
            if not number.isdigit():
                raise ValueError(f"device: bad device index in {spec!r}")
            index = int(number)
        if kind == "cpu" and index not in (None, 0):
            raise ValueError(f"device: the CPU has no index, got {spec!r}")
        self.type = kind
        self.index = None if kind == "cpu" else (0 if index is None else index)

    def __str__(self):
        return "cpu" if self.type == "cpu" else f"cuda:{self.index}"

    def __repr__(self):
        return f"device({str(self)!r})"

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = Device(other)
            except (TypeError, ValueError):
                return False
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))

    def __reduce__(self):
        # Copies and unpickled tensors must get the one shared Device object back, because ops
        # compare devices by identity.
        return (as_device, (str(self),))

    def __deepcopy__(self, memo):
        return as_device(str(self))


CPU = Device("cpu")


_interned = {("cpu", None): CPU}


def as_device(spec) -> Device:
    """Turn ``"cpu"``, ``"cuda:0"`` or a :class:`Device` into the one shared Device object for
    that device (so ops compare devices with ``is``), checking that CUDA exists."""
    device = spec if isinstance(spec, Device) else Device(spec)
    key = (device.type, device.index)
    if key in _interned:
        return _interned[key]
    if device.type == "cuda":
        cupy = cupy_module()
        count = cupy.cuda.runtime.getDeviceCount()
        if device.index >= count:
            raise RuntimeError(f"device: {device} requested but only {count} CUDA device(s) are visible")
    return _interned.setdefault(key, device)


def cupy_module():
    """Import CuPy on first use; raise a clear error saying whether CuPy or a GPU is missing."""
    global _cupy_error
    if _cupy is not None:
        return _cupy
    if _cupy_error is None:
        _cupy_error = _probe_cupy()
    if _cupy_error:
        raise RuntimeError(_cupy_error)
    return _cupy


def _probe_cupy():
    """Return '' when CuPy and a GPU work, else the reason they do not."""
    global _cupy
    try:
        import cupy
    except ImportError as error:
        return ("CUDA device requested but CuPy is not installed "
                f"({error}); install it with: pip install 'tinynlm[gpu]'")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDA driver missing or broken
        return f"CUDA device requested; CuPy is installed but no CUDA GPU is usable ({error})"
    if count == 0:
        return "CUDA device requested; CuPy is installed but no CUDA GPU was found"
    _cupy = cupy
    return ""


def cuda_is_available() -> bool:
    """True when CuPy imports and sees at least one GPU; never raises."""
    global _cupy_error
    if _cupy is None and _cupy_error is None:
        _cupy_error = _probe_cupy()
    return _cupy is not None


def array_module(device: Device):
    """NumPy for the CPU, CuPy for CUDA."""
    return np if device.type == "cpu" else cupy_module()


def device_of_array(array) -> Device:
    """The device that holds ``array`` (a NumPy or CuPy array)."""
    if isinstance(array, np.ndarray):
        return CPU
    return as_device(f"cuda:{array.device.id}")


def is_array(obj) -> bool:
    """True for a NumPy or a CuPy array (CuPy is loaded when a CuPy array is seen first)."""
    if isinstance(obj, np.ndarray):
        return True
    if _cupy is None and type(obj).__module__.startswith("cupy"):
        cupy_module()
    return _cupy is not None and isinstance(obj, _cupy.ndarray)


def to_host(array) -> np.ndarray:
    """A NumPy copy (or the array itself when already on the host)."""
    return array if isinstance(array, np.ndarray) else array.get()


def move_array(array, device: Device):
    """Copy ``array`` to ``device``; an array already there is returned as is."""
    if device.type == "cpu":
        return to_host(array)
    cupy = cupy_module()
    if isinstance(array, cupy.ndarray) and array.device.id == device.index:
        return array
    with cupy.cuda.Device(device.index):
        return cupy.asarray(array)


def index_add(xp, target, index, values):
    """``target[index] += values`` with repeated indices adding up (NumPy's ``add.at``).

    >>> target = np.zeros((3, 2))
    >>> index_add(np, target, np.array([[2, 0], [2, 2]]), np.ones((2, 2, 2)))
    >>> target.tolist()
    [[1.0, 1.0], [0.0, 0.0], [3.0, 3.0]]
    """
    if xp is np:
        if (isinstance(index, np.ndarray) and index.dtype.kind in "iu" and index.size > 64
                and target.dtype in (np.float32, np.float64) and values.dtype == target.dtype
                and values.shape == index.shape + target.shape[1:]
                and target.flags.c_contiguous and index.min() >= 0
                and index.max() < target.shape[0]):
            # Whole rows by integer ids (an embedding's gradient): a compiled loop adds each
            # row once; np.add.at adds element by element and is ten times slower.
            dispatch.kernel("index_add_rows", np)(target, index, values)
            return
        np.add.at(target, index, values)
    else:
        import cupyx  # ships with CuPy, which is loaded whenever xp is not NumPy

        cupyx.scatter_add(target, index, values)


# ----------------------------------------------------------------------------- random numbers

_seed = None
_generators = {}  # Device -> numpy.random.Generator or cupy.random.Generator


def manual_seed(seed: int):
    """Seed the random generator of every device (CUDA generators are seeded when first used).

    >>> import tinynlm as tn
    >>> _ = tn.manual_seed(0); a = tn.rand(3)
    >>> _ = tn.manual_seed(0); bool((a == tn.rand(3)).all())
    True
    """
    global _seed
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: expected a non-negative integer, got {seed!r}")
    _seed = int(seed)
    _generators.clear()
    return _seed


def get_rng_state() -> dict:
    """The state of the CPU random generator, as plain Python data (for checkpoints).

    >>> import tinynlm as tn
    >>> _ = tn.manual_seed(3); state = tn.get_rng_state(); first = tn.rand(2).tolist()
    >>> tn.set_rng_state(state); tn.rand(2).tolist() == first
    True
    """
    return {"seed": _seed, "cpu": generator(CPU).bit_generator.state}


def set_rng_state(state: dict):
    """Restore the CPU random generator from :func:`get_rng_state` output."""
    global _seed
    try:
        cpu_state = state["cpu"]
        gen = np.random.Generator(getattr(np.random, cpu_state["bit_generator"])())
        gen.bit_generator.state = cpu_state
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ValueError(f"set_rng_state: not a state from get_rng_state ({error})") from None
    _seed = state.get("seed")
    _generators.clear()
    _generators[CPU] = gen


def generator(device: Device):
    """The random generator of ``device`` (created on first use from the last manual seed)."""
    gen = _generators.get(device)
    if gen is None:
        if device.type == "cpu":
            gen = np.random.default_rng(_seed)
        else:
            cupy = cupy_module()
            with cupy.cuda.Device(device.index):
                gen = cupy.random.default_rng(_seed)
        _generators[device] = gen
    return gen
