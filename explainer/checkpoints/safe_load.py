"""Reading untrusted checkpoint files within stated limits: a restricted pickle machine and torch zip checks.

A module of its own, and longer than most, because it is one piece with one job: turn a file that may be hostile
(a ``__reduce__`` payload, a memory or time bomb) or broken into either containers of numbers, strings and
numpy arrays, or a short ``ValueError`` -- and nothing else. :mod:`explainer.checkpoints` builds its
loading on it.

* :class:`RestrictedUnpickler` is a pickle interpreter written here (protocols 0 to 5). It resolves only a short
  list of globals (builtin containers and numbers, ``collections.OrderedDict``, ``_codecs.encode`` with latin-1,
  and numpy's array, dtype and scalar reconstructors), each through a wrapper of its own that checks its
  arguments, and it checks every declared size before anything is allocated. A numpy array is built only
  from bytes that the file holds for it: the declared shape must match the data exactly, and an array whose
  data never arrives is refused (the ``_reconstruct`` + missing ``BUILD`` trick that leaves uninitialised
  memory).
* :func:`check_structure` walks what was loaded once per distinct container, counting shared references each
  time they are reached, so a structure that would explode when printed or walked is refused.
* :func:`check_torch_zip` reads a torch ``.pth`` archive's directory and its ``data.pkl`` (with the same
  interpreter, storages recorded instead of loaded), and compares every declared storage with the archive's
  members before ``torch.load`` reads anything.
* :func:`open_untrusted` refuses what is not a regular file (a directory, a FIFO, a device such as
  ``/dev/zero``) before opening it, and opens with ``O_NONBLOCK`` so that a path swapped for a FIFO cannot
  hang the reader.

Limits (the fields of :class:`Limits`; the defaults are these module constants, defined with every other
reader's bounds in :mod:`explainer._bounds`):

* ``MAX_FILE_BYTES`` = 8 GiB: larger files are refused before anything is read.
* ``MAX_ARRAY_BYTES`` = 4 GiB: the most one array, string or torch storage may declare.
* ``MAX_TOTAL_BYTES`` = 8 GiB, and at most ``EXPANSION`` (4) times the file's size plus ``SLACK_BYTES`` (64 KiB):
  the most that arrays, copies made by the allowed functions and a zip archive's uncompressed members may add
  up to. A ``.pkl``'s arrays must come from its own bytes, so a real checkpoint needs about 1x (2x for a
  Python 3 protocol-2 pickle, whose data passes through ``_codecs.encode``).
* ``MAX_OPS`` = 2,000,000 pickle opcodes (a real checkpoint uses about 30 per array), which bounds the time.
* ``MAX_DEPTH`` = 100 levels of nested containers.
* ``MAX_EXPANDED`` = 10,000,000: containers and items reached when the result is walked with shared references
  counted each time (a string counts 1 per 64 characters). This is the limit on memo reuse.
* Dictionary keys and set items: names (``str``, ``bytes``), ``None``, booleans and integers below 2**60 in
  magnitude, whose hashes never collide, are unlimited; at most ``MAX_OTHER_KEYS`` (4096) others (floats, large
  integers, tuples), each tuple at most ``MAX_KEY_ITEMS`` (64) items and 4 levels deep, counting shared items each
  time. So hashing a key is cheap and colliding keys cannot make a dictionary quadratic.
* ``MAX_INT_BYTES`` = 1024 bytes for one integer; ``MAX_LINE_BYTES`` = 64 MiB for one protocol-0 text line;
  ``MAX_ZIP_MEMBERS`` = 100,000 members in a ``.pth`` archive.

Nothing here imports matplotlib or ipywidgets.
"""

from __future__ import annotations

import codecs
import io
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

__all__ = [
    "MAX_FILE_BYTES", "MAX_ARRAY_BYTES", "MAX_TOTAL_BYTES", "EXPANSION", "SLACK_BYTES", "MAX_OPS", "MAX_DEPTH",
    "MAX_EXPANDED", "MAX_OTHER_KEYS", "MAX_KEY_ITEMS", "MAX_INT_BYTES", "MAX_LINE_BYTES", "MAX_ZIP_MEMBERS",
    "Limits", "DEFAULT_LIMITS", "Refused", "RestrictedUnpickler", "check_structure", "check_torch_zip",
    "open_untrusted", "short_repr", "format_bytes", "NOTHING_RAN", "check_torch_legacy", "check_npz",
    "TORCH_LEGACY_MAGIC", "torch_refusal", "load_torch_zip", "load_torch_legacy", "check_zip_member",
]

from explainer._bounds import (  # the numbers and the opener, stated once for every reader in explainer._bounds
    DEFAULT_LIMITS,
    EXPANSION,
    MAX_ARRAY_BYTES,
    MAX_DEPTH,
    MAX_EXPANDED,
    MAX_FILE_BYTES,
    MAX_INT_BYTES,
    MAX_KEY_DEPTH,
    MAX_KEY_ITEMS,
    MAX_LINE_BYTES,
    MAX_OPS,
    MAX_OTHER_KEYS,
    MAX_TOTAL_BYTES,
    MAX_ZIP_MEMBERS,
    NOTHING_RAN,
    SLACK_BYTES,
    Limits,
    MiB,
    Refused,
    format_bytes,
    open_untrusted,
    short_repr,
)

_BIG = 1 * MiB  # strings at least this long are released from the memo once an array has consumed them

_NoneType = type(None)

# --------------------------------------------------------------------------------------------
# The allowed globals: each one a wrapper that checks its arguments
# --------------------------------------------------------------------------------------------
class _Global:
    """A resolved global: its name, and the checked function that stands for it."""

    __slots__ = ("module", "name", "fn")

    def __init__(self, module: str, name: str, fn: Callable[["RestrictedUnpickler", tuple], Any]) -> None:
        self.module, self.name, self.fn = module, name, fn

    def __repr__(self) -> str:
        return f"{self.module}.{self.name}"


class _ArrayBuilder:
    """What numpy's ``_reconstruct`` returns here: an empty placeholder that only its BUILD turns into an array."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: Optional[np.ndarray] = None


class _DTypeBuilder:
    """What ``numpy.dtype(spec, ...)`` returns here: a numeric dtype awaiting its byte order from BUILD."""

    __slots__ = ("base", "dtype")

    def __init__(self, base: np.dtype) -> None:
        self.base = base
        self.dtype: Optional[np.dtype] = None


class _Released:
    """A memo slot whose large string was consumed by an array (legitimate pickles never fetch it again)."""


_RELEASED = _Released()
_STOP = object()
_DTYPE_SPEC = re.compile(r"^(b1|[iu][1248]|f[248]|c8|c16)$")
_SMALL_INT = 1 << 60
_MAX_DIM = 1 << 48


def _is_int(x: Any) -> bool:
    return type(x) is int


def _shape(x: Any, what: str) -> Tuple[int, ...]:
    if _is_int(x):
        x = (x,)
    if type(x) is not tuple or len(x) > 64 or not all(_is_int(d) and 0 <= d < _MAX_DIM for d in x):
        raise Refused(f"{what}: the shape {short_repr(x)} is not a tuple of at most 64 integers from 0 to 2**48; {NOTHING_RAN}")
    return x


def _numel(shape: Tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _as_dtype(x: Any, what: str) -> np.dtype:
    if isinstance(x, _DTypeBuilder):
        return x.dtype if x.dtype is not None else x.base
    if isinstance(x, np.dtype) and x.kind in "biufc" and not x.fields and not x.subdtype and not x.metadata:
        return x
    raise Refused(f"{what}: the dtype is {short_repr(x)}, expected a numeric numpy dtype; {NOTHING_RAN}")


def _text(x: Any) -> Optional[str]:
    if isinstance(x, str):
        return x
    if isinstance(x, bytes):
        return x.decode("latin1")
    return None


def _g_container(kind: type) -> Callable[["RestrictedUnpickler", tuple], Any]:
    def call(vm: "RestrictedUnpickler", args: tuple) -> Any:
        if not args:
            return kind()
        if len(args) != 1 or type(args[0]) not in (list, tuple, set, frozenset, dict, OrderedDict):
            raise Refused(f"{kind.__name__}() called with {short_repr(args)}; {NOTHING_RAN}")
        src = args[0]
        vm.charge(64 * len(src), f"{kind.__name__}()")
        if kind in (dict, OrderedDict):
            if isinstance(src, dict):
                return kind(src)
            pairs = []
            for item in src:
                if type(item) not in (list, tuple) or len(item) != 2:
                    raise Refused(f"{kind.__name__}() given {short_repr(item)} where a (key, value) pair belongs; {NOTHING_RAN}")
                vm.check_key(item[0])
                pairs.append((item[0], item[1]))
            return kind(pairs)
        if kind in (set, frozenset):
            for item in src:
                vm.check_key(item)
        return kind(src)
    return call


def _g_number(kind: type) -> Callable[["RestrictedUnpickler", tuple], Any]:
    def call(vm: "RestrictedUnpickler", args: tuple) -> Any:
        ok = (int, float, bool, str, bytes) if kind in (int, float) else (int, float, bool)
        if len(args) > 2 or not all(type(a) in ok for a in args) or (len(args) == 2 and kind is not complex):
            raise Refused(f"{kind.__name__}() called with {short_repr(args)}; {NOTHING_RAN}")
        if any(isinstance(a, (str, bytes)) and len(a) > 4 * MAX_INT_BYTES for a in args):
            raise Refused(f"{kind.__name__}() given a number written with more than {4 * MAX_INT_BYTES} digits; {NOTHING_RAN}")
        return kind(*args)
    return call


def _g_str(vm: "RestrictedUnpickler", args: tuple) -> str:
    if len(args) == 0:
        return ""
    if len(args) == 1 and type(args[0]) is str:
        return args[0]
    raise Refused(f"str() called with {short_repr(args)}; {NOTHING_RAN}")


def _g_bytes(kind: type) -> Callable[["RestrictedUnpickler", tuple], Any]:
    def call(vm: "RestrictedUnpickler", args: tuple) -> Any:
        if not args:
            return kind()
        src = args[0]
        if len(args) == 1 and type(src) in (bytes, bytearray):
            vm.charge(len(src), f"{kind.__name__}()")
            return kind(src)
        if len(args) == 1 and type(src) is list and all(_is_int(b) and 0 <= b < 256 for b in src):
            vm.charge(len(src), f"{kind.__name__}()")
            return kind(src)
        if len(args) == 2 and type(src) is str and args[1] in ("latin1", "latin-1", "ascii", "utf-8", "utf8"):
            vm.charge(len(src), f"{kind.__name__}()")
            return kind(src, args[1])
        raise Refused(f"{kind.__name__}() called with {short_repr(args)}; {NOTHING_RAN}")
    return call


def _g_slice(vm: "RestrictedUnpickler", args: tuple) -> slice:
    if len(args) > 3 or not all(a is None or _is_int(a) for a in args):
        raise Refused(f"slice() called with {short_repr(args)}; {NOTHING_RAN}")
    return slice(*args)


def _g_encode(vm: "RestrictedUnpickler", args: tuple) -> bytes:
    """``_codecs.encode(text, 'latin1')``: how Python 3 writes ``bytes`` at protocols 0 to 2. No other codec."""
    if len(args) == 2 and type(args[0]) is str and args[1] in ("latin1", "latin-1", "iso-8859-1", "iso8859-1"):
        vm.charge(len(args[0]), "_codecs.encode")
        out = args[0].encode("latin1")
        vm.release(args[0])
        vm.release(args)
        return out
    raise Refused(f"_codecs.encode called with {short_repr(args[1:] if len(args) > 1 else args)} (only latin-1 text "
                  f"is accepted); {NOTHING_RAN}")


def _g_ndarray(vm: "RestrictedUnpickler", args: tuple) -> Any:
    raise Refused(f"calls numpy.ndarray(...) directly, which allocates an array of a declared shape without data; {NOTHING_RAN}")


def _g_reconstruct(vm: "RestrictedUnpickler", args: tuple) -> _ArrayBuilder:
    """numpy's ``_reconstruct(ndarray, (0,), b'b')``: an empty placeholder; the array comes with BUILD."""
    if len(args) != 3 or not (isinstance(args[0], _Global) and args[0].fn is _g_ndarray):
        raise Refused(f"numpy _reconstruct called with {short_repr(args)} (only numpy.ndarray is rebuilt); {NOTHING_RAN}")
    n = _numel(_shape(args[1], "numpy _reconstruct"))
    if n:
        raise Refused(f"numpy _reconstruct declares an array of {n:,} elements before any of its data (numpy writes "
                      f"an empty one and fills it from the file); {NOTHING_RAN}")
    return _ArrayBuilder()


def _g_dtype(vm: "RestrictedUnpickler", args: tuple) -> _DTypeBuilder:
    spec = _text(args[0]) if args else None
    if spec is None or not 1 <= len(args) <= 3 or not _DTYPE_SPEC.match(spec) or \
            not all(type(a) in (bool, int) for a in args[1:]):
        raise Refused(f"numpy.dtype{short_repr(args)} is not a numeric dtype (bool, integer, float or complex); "
                      f"only numeric arrays are read from checkpoints; {NOTHING_RAN}")
    return _DTypeBuilder(np.dtype(spec))


def _g_scalar(vm: "RestrictedUnpickler", args: tuple) -> Any:
    """numpy's ``scalar(dtype, data)``: one number from ``itemsize`` bytes of the file."""
    if len(args) != 2:
        raise Refused(f"numpy scalar called with {short_repr(args)}; {NOTHING_RAN}")
    dt = _as_dtype(args[0], "numpy scalar")
    raw = args[1].encode("latin1") if type(args[1]) is str else args[1]
    if type(raw) is not bytes or len(raw) != dt.itemsize:
        raise Refused(f"a numpy {dt} scalar needs {dt.itemsize} bytes, the file gives {short_repr(args[1])}; {NOTHING_RAN}")
    return np.frombuffer(raw, dtype=dt)[0]


def _g_frombuffer(vm: "RestrictedUnpickler", args: tuple) -> np.ndarray:
    """numpy's protocol-5 ``_frombuffer(buffer, dtype, shape, order)``, with the buffer in the file (in-band)."""
    if len(args) != 4 or type(args[0]) not in (bytes, bytearray) or args[3] not in ("C", "F", "A", "K"):
        raise Refused(f"numpy _frombuffer called with {short_repr(args)}; {NOTHING_RAN}")
    buf, dt, shape = args[0], _as_dtype(args[1], "numpy _frombuffer"), _shape(args[2], "numpy _frombuffer")
    nbytes = _numel(shape) * dt.itemsize
    vm.charge_array(nbytes, shape, dt)
    if nbytes != len(buf):
        raise Refused(f"an array of shape {shape} {dt} needs {format_bytes(nbytes)}, the file holds "
                      f"{format_bytes(len(buf))} for it; {NOTHING_RAN}")
    if type(buf) is bytearray:  # the array will share its memory: one buffer, one array
        if id(buf) in vm._shared:
            raise Refused(f"gives the same buffer to two arrays, which numpy never writes; {NOTHING_RAN}")
        vm._shared[id(buf)] = buf
    arr = np.frombuffer(buf, dtype=dt)
    if type(buf) is bytes:
        arr = arr.copy()  # read-only otherwise
    vm.release(buf)
    return arr.reshape(shape, order="F" if args[3] == "F" else "C")


_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_GLOBALS: Dict[Tuple[str, str], Callable[["RestrictedUnpickler", tuple], Any]] = {
    **{(m, n): _g_container(k) for m in ("builtins", "__builtin__")
       for n, k in (("dict", dict), ("list", list), ("tuple", tuple), ("set", set), ("frozenset", frozenset))},
    **{(m, n): _g_number(k) for m in ("builtins", "__builtin__")
       for n, k in (("int", int), ("long", int), ("float", float), ("complex", complex), ("bool", bool))},
    **{(m, n): _g_str for m in ("builtins", "__builtin__") for n in ("str", "unicode")},
    **{(m, n): _g_bytes(k) for m in ("builtins", "__builtin__") for n, k in (("bytes", bytes), ("bytearray", bytearray))},
    ("builtins", "slice"): _g_slice,
    ("collections", "OrderedDict"): _g_container(OrderedDict),
    ("_codecs", "encode"): _g_encode,
    ("numpy", "ndarray"): _g_ndarray,
    ("numpy", "dtype"): _g_dtype,
    **{(m, "_reconstruct"): _g_reconstruct for m in _NUMPY_MODULES},
    **{(m, "scalar"): _g_scalar for m in _NUMPY_MODULES},
    **{(m, "_frombuffer"): _g_frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
}


# --------------------------------------------------------------------------------------------
# The interpreter
# --------------------------------------------------------------------------------------------
_Op = Callable[["RestrictedUnpickler"], Any]
_OPS: Dict[int, _Op] = {}


class RestrictedUnpickler:
    """A pickle interpreter that builds only containers, numbers, strings and numeric numpy arrays, within limits.

    ``RestrictedUnpickler(file, size=..., encoding="latin1", limits=DEFAULT_LIMITS).load()`` reads one pickle from a
    binary file. ``size`` is how many bytes remain in the file (found by seeking when not given). Python 2 ``str``
    is decoded with ``encoding`` (latin-1, as Detectron's own loader does). Every refusal raises :class:`Refused`
    (a ``ValueError``) before the refused thing runs or is allocated.
    """

    globals_allowed = _GLOBALS

    def __init__(self, file: BinaryIO, *, size: Optional[int] = None, encoding: str = "latin1",
                 limits: Limits = DEFAULT_LIMITS, data_budget: Optional[int] = None) -> None:
        if size is None:
            here = file.tell()
            size = file.seek(0, io.SEEK_END) - here
            file.seek(here)
        self._file = file
        self._left = size
        self._pos = 0
        self.encoding = encoding
        self.limits = limits
        self.budget = limits.data_budget(size) if data_budget is None else data_budget
        self.materialised = 0
        self.stack: List[Any] = []
        self.marks: List[int] = []
        self.memo: Dict[int, Any] = {}
        self._big: Dict[int, int] = {}
        self._shared: Dict[int, bytearray] = {}
        self._other_keys = 0
        self._opcode = 0

    # -- reading ----------------------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        if n > self._left:
            raise Refused(f"not a readable pickle (truncated or corrupted?): {format_bytes(n)} declared at byte {self._pos}, "
                          f"only {format_bytes(self._left)} remain; get a fresh copy of the file")
        data = self._file.read(n)
        if len(data) != n:
            raise Refused(f"not a readable pickle (truncated or corrupted?): the file ended at byte {self._pos + len(data)}")
        self._left -= n
        self._pos += n
        return data

    def _read_sized(self, fmt: str) -> bytes:
        (n,) = struct.unpack(fmt, self._read(struct.calcsize(fmt)))
        if n < 0:
            raise Refused(f"not a readable pickle (truncated or corrupted?): a negative length at byte {self._pos}")
        if n > self.limits.max_array_bytes:
            raise Refused(f"declares a string of {format_bytes(n)} at byte {self._pos}, over the "
                          f"{format_bytes(self.limits.max_array_bytes)} limit per item; {NOTHING_RAN}")
        return self._read(n)

    def _readline(self) -> bytes:
        limit = min(self._left, MAX_LINE_BYTES)
        line = self._file.readline(limit)
        self._left -= len(line)
        self._pos += len(line)
        if not line.endswith(b"\n"):
            raise Refused("not a readable pickle (truncated or corrupted?): a text line "
                          + ("longer than 64 MiB" if len(line) >= MAX_LINE_BYTES else "without its end"))
        return line[:-1]

    # -- the stack ---------------------------------------------------------------------------
    def _base(self) -> int:
        return self.marks[-1] if self.marks else 0

    def pop(self) -> Any:
        if len(self.stack) <= self._base():
            raise Refused("not a readable pickle (truncated or corrupted?): stack underflow")
        return self.stack.pop()

    def top(self) -> Any:
        if len(self.stack) <= self._base():
            raise Refused("not a readable pickle (truncated or corrupted?): stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> List[Any]:
        if not self.marks:
            raise Refused("not a readable pickle (truncated or corrupted?): no MARK on the stack")
        i = self.marks.pop()
        items = self.stack[i:]
        del self.stack[i:]
        return items

    # -- accounting ---------------------------------------------------------------------------
    def charge(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` about to be allocated; refuse past the per-item or the file's budget."""
        if nbytes > self.limits.max_array_bytes:
            raise Refused(f"{what} declares {format_bytes(nbytes)}, over the {format_bytes(self.limits.max_array_bytes)} "
                          f"limit per array; {NOTHING_RAN}")
        self.materialised += nbytes
        if self.materialised > self.budget:
            raise Refused(f"{what} would bring the data built from this file to {format_bytes(self.materialised)}, over "
                          f"its budget of {format_bytes(self.budget)} (at most {self.limits.expansion}x the file's size): "
                          f"data declared that the file does not hold; {NOTHING_RAN}")

    def charge_array(self, nbytes: int, shape: Tuple[int, ...], dt: np.dtype) -> None:
        self.charge(nbytes, f"an array of shape {short_repr(shape, 40)} {dt}")

    def release(self, obj: Any) -> None:
        """Drop the memo's reference to a large string (or a tuple holding one) once an array has consumed it, so
        that the string is freed as the load goes (peak memory about 1x the file instead of 2x)."""
        k = self._big.pop(id(obj), None)
        if k is not None and self.memo.get(k) is obj:
            self.memo[k] = _RELEASED

    def check_key(self, k: Any) -> None:
        """Refuse a dict key or set item whose hashing could be slow or collide (see the module docstring)."""
        t = type(k)
        if t is str or t is bytes or k is None or t is bool or (t is int and -_SMALL_INT < k < _SMALL_INT):
            return
        self._other_keys += 1
        if self._other_keys > self.limits.max_other_keys:
            raise Refused(f"more than {self.limits.max_other_keys} dict keys or set items that are neither names nor "
                          f"small integers; {NOTHING_RAN}")
        if t in (int, float, complex):
            return
        if t is not tuple:
            raise Refused(f"a dict key or set item of type {t.__name__}; checkpoints are keyed by names; {NOTHING_RAN}")
        count, todo = 0, [(k, 1)]
        while todo:
            x, depth = todo.pop()
            count += 1
            if type(x) is tuple:
                if depth > MAX_KEY_DEPTH or count + len(x) > self.limits.max_key_items:
                    raise Refused(f"a dict key that is a tuple of more than {self.limits.max_key_items} items or "
                                  f"{MAX_KEY_DEPTH} levels (counting shared items each time); {NOTHING_RAN}")
                todo.extend((c, depth + 1) for c in x)
            elif type(x) not in (str, bytes, int, float, complex, bool, _NoneType):
                raise Refused(f"a dict key holding a {type(x).__name__}; checkpoints are keyed by names; {NOTHING_RAN}")

    @staticmethod
    def settle(x: Any) -> Any:
        """What an object is once consumed: a placeholder becomes its array or dtype (or is refused)."""
        if isinstance(x, _ArrayBuilder):
            if x.array is None:
                raise Refused(f"declares a numpy array but gives no data for it (it would be uninitialised memory); {NOTHING_RAN}")
            return x.array
        if isinstance(x, _DTypeBuilder):
            return x.dtype if x.dtype is not None else x.base
        return x

    # -- globals, calls and BUILD -------------------------------------------------------------
    def find_class(self, module: str, name: str) -> _Global:
        """The allowed global ``module.name`` (a checked wrapper), or a refusal naming it."""
        fn = self.globals_allowed.get((module, name))
        if fn is None:
            raise Refused(f"refused global '{short_repr(module, 60)[1:-1]}.{short_repr(name, 60)[1:-1]}': this pickle holds "
                          f"something other than arrays and containers, and was not loaded; {NOTHING_RAN}")
        return _Global(module, name, fn)

    def call(self, func: Any, args: Any) -> Any:
        if not isinstance(func, _Global):
            raise Refused(f"calls a {type(func).__name__}, which is not an allowed function; {NOTHING_RAN}")
        if type(args) is not tuple:
            raise Refused(f"calls {func!r} with {short_repr(args)} instead of an argument tuple; {NOTHING_RAN}")
        return func.fn(self, args)

    def persistent_load(self, pid: Any) -> Any:
        raise Refused(f"uses a persistent reference ({short_repr(pid)}), which a .pkl checkpoint never holds; {NOTHING_RAN}")

    def build(self, inst: Any, state: Any) -> None:
        if isinstance(inst, _ArrayBuilder):
            self._build_array(inst, state)
        elif isinstance(inst, _DTypeBuilder):
            self._build_dtype(inst, state)
        elif type(inst) is OrderedDict and type(state) is dict:
            for k, v in state.items():  # torch's state dicts carry `_metadata`
                if type(k) is not str or k.startswith("__") or hasattr(OrderedDict, k) or not k.isidentifier():
                    raise Refused(f"sets the attribute {short_repr(k)} of an OrderedDict; {NOTHING_RAN}")
                inst.__dict__[k] = v
        else:
            raise Refused(f"restores the state of a {type(inst).__name__} (BUILD), which only arrays and dtypes need; {NOTHING_RAN}")

    def _build_array(self, inst: _ArrayBuilder, state: Any) -> None:
        if inst.array is not None or type(state) is not tuple or len(state) not in (4, 5) or (len(state) == 5 and state[0] != 1):
            raise Refused(f"gives a numpy array the state {short_repr(state)}; {NOTHING_RAN}")
        shape, dt_obj, fortran, raw = state[-4:]
        shape = _shape(shape, "numpy array")
        dt = _as_dtype(dt_obj, "numpy array")
        if type(fortran) not in (bool, int) or type(raw) not in (bytes, bytearray, str):
            raise Refused(f"gives a numpy array the state {short_repr(state)}; {NOTHING_RAN}")
        nbytes = _numel(shape) * dt.itemsize
        self.charge_array(nbytes, shape, dt)
        if len(raw) != nbytes:
            raise Refused(f"an array of shape {shape} {dt} needs {format_bytes(nbytes)}, the file holds "
                          f"{format_bytes(len(raw))} for it; {NOTHING_RAN}")
        arr = np.ndarray((0,), np.int8)
        arr.__setstate__((1, shape, dt, bool(fortran), raw))  # arguments checked above; numpy copies the data
        self.release(raw)
        self.release(state)
        inst.array = arr

    def _build_dtype(self, inst: _DTypeBuilder, state: Any) -> None:
        ok = (type(state) is tuple and len(state) in (8, 9) and state[0] in (3, 4) and state[1] in ("<", ">", "|", "=")
              and state[2:5] == (None, None, None) and state[5:8] == (-1, -1, 0) and (len(state) == 8 or state[8] is None))
        if not ok or inst.dtype is not None:
            raise Refused(f"gives a numpy dtype the state {short_repr(state)}; only plain numeric dtypes are read; {NOTHING_RAN}")
        inst.dtype = inst.base.newbyteorder(state[1]) if state[1] in "<>" and inst.base.itemsize > 1 else inst.base

    # -- running ------------------------------------------------------------------------------
    def load(self) -> Any:
        """Run the pickle to its STOP and return the object (placeholders settled)."""
        ops, read, max_ops = _OPS, self._file.read, self.limits.max_ops
        n = at = 0
        try:
            while True:
                at = self._pos
                b = read(1) if self._left > 0 else b""
                if not b:
                    raise Refused(f"not a readable pickle (truncated or corrupted?): the file ended at byte {at}, before STOP")
                self._left -= 1
                self._pos += 1
                n += 1
                if n > max_ops:
                    raise Refused(f"runs more than {max_ops:,} pickle operations; {NOTHING_RAN}")
                self._opcode = code = b[0]
                fn = ops.get(code)
                if fn is None:
                    raise Refused(f"not a readable pickle (truncated or corrupted?): unknown opcode 0x{code:02x} at byte {at}")
                if fn(self) is _STOP:
                    return self.settle(self.pop())
        except Refused:
            raise
        except RecursionError:
            raise Refused(f"nested too deeply; {NOTHING_RAN}") from None
        except MemoryError:
            raise Refused("needs more memory than is available") from None
        except Exception as e:  # whatever a malformed file makes the operations raise
            raise Refused(f"not a readable pickle (truncated or corrupted?): {type(e).__name__} at byte {at}: "
                          f"{short_repr(str(e), 120)[1:-1]}") from None


# -- opcodes: each a function of the machine, registered in _OPS under its byte ----------------
def _stop(vm: RestrictedUnpickler) -> object:
    return _STOP


def _pop(vm: RestrictedUnpickler) -> None:
    if len(vm.stack) > vm._base():
        vm.stack.pop()
    else:
        vm.pop_mark()


def _proto(vm: RestrictedUnpickler) -> None:
    if vm._read(1)[0] > 5:
        raise Refused("not a readable pickle (truncated or corrupted?): a protocol above 5")


def _frame(vm: RestrictedUnpickler) -> None:
    if struct.unpack("<Q", vm._read(8))[0] > vm._left:
        raise Refused("not a readable pickle (truncated or corrupted?): a frame longer than the file")


def _check_digits(line: bytes) -> bytes:
    if len(line) > 4 * MAX_INT_BYTES:
        raise Refused(f"a number written with more than {4 * MAX_INT_BYTES} characters; {NOTHING_RAN}")
    return line


def _int_from_text(line: bytes) -> int:
    _check_digits(line)
    return int(line, 0) if line.lstrip(b"+-")[:2].lower() in (b"0x", b"0o", b"0b") else int(line)


def _int_text(vm: RestrictedUnpickler) -> None:
    line = vm._readline()
    vm.stack.append(line == b"01" if line in (b"00", b"01") else _int_from_text(line))


def _long_text(vm: RestrictedUnpickler) -> None:
    line = vm._readline()
    vm.stack.append(_int_from_text(line[:-1] if line.endswith(b"L") else line))


def _float_text(vm: RestrictedUnpickler) -> None:
    vm.stack.append(float(_check_digits(vm._readline())))


def _string_text(vm: RestrictedUnpickler) -> None:
    line = vm._readline()
    if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
        raise Refused("not a readable pickle (truncated or corrupted?): a STRING without quotes")
    vm.stack.append(codecs.escape_decode(line[1:-1])[0].decode(vm.encoding))


def _out_of_band(vm: RestrictedUnpickler) -> None:
    raise Refused("refers to an out-of-band buffer (pickle protocol 5), which a checkpoint file cannot carry; "
                  f"{NOTHING_RAN}")


def _target(vm: RestrictedUnpickler, kind: Tuple[type, ...], what: str) -> Any:
    t = vm.top()
    if type(t) not in kind:
        raise Refused(f"{what} into a {type(t).__name__}; {NOTHING_RAN}")
    return t


def _setitems(vm: RestrictedUnpickler, d: dict, items: List[Any]) -> None:
    if len(items) % 2:
        raise Refused("not a readable pickle (truncated or corrupted?): an odd number of items for a dict")
    for i in range(0, len(items), 2):
        k = vm.settle(items[i])
        vm.check_key(k)
        d[k] = vm.settle(items[i + 1])


def _dict_op(vm: RestrictedUnpickler) -> None:
    d: dict = {}
    _setitems(vm, d, vm.pop_mark())
    vm.stack.append(d)


def _setitem(vm: RestrictedUnpickler) -> None:
    v = vm.pop()
    k = vm.pop()
    _setitems(vm, _target(vm, (dict, OrderedDict), "SETITEM"), [k, v])


def _setitems_op(vm: RestrictedUnpickler) -> None:
    items = vm.pop_mark()
    _setitems(vm, _target(vm, (dict, OrderedDict), "SETITEMS"), items)


def _append(vm: RestrictedUnpickler) -> None:
    x = vm.settle(vm.pop())
    _target(vm, (list,), "APPEND").append(x)


def _appends(vm: RestrictedUnpickler) -> None:
    items = [vm.settle(x) for x in vm.pop_mark()]
    _target(vm, (list,), "APPENDS").extend(items)


def _additems(vm: RestrictedUnpickler) -> None:
    items = [vm.settle(x) for x in vm.pop_mark()]
    s = _target(vm, (set,), "ADDITEMS")
    for x in items:
        vm.check_key(x)
        s.add(x)


def _frozenset_op(vm: RestrictedUnpickler) -> None:
    items = [vm.settle(x) for x in vm.pop_mark()]
    for x in items:
        vm.check_key(x)
    vm.stack.append(frozenset(items))


def _global(vm: RestrictedUnpickler) -> None:
    module = vm._readline().decode("utf-8")
    vm.stack.append(vm.find_class(module, vm._readline().decode("utf-8")))


def _stack_global(vm: RestrictedUnpickler) -> None:
    name = vm.pop()
    module = vm.pop()
    if type(module) is not str or type(name) is not str:
        raise Refused("not a readable pickle (truncated or corrupted?): STACK_GLOBAL without two strings")
    vm.stack.append(vm.find_class(module, name))


def _reduce(vm: RestrictedUnpickler) -> None:
    args = vm.pop()
    vm.stack.append(vm.call(vm.pop(), args))


def _inst(vm: RestrictedUnpickler) -> None:
    module = vm._readline().decode("utf-8")
    cls = vm.find_class(module, vm._readline().decode("utf-8"))
    vm.stack.append(vm.call(cls, tuple(vm.settle(x) for x in vm.pop_mark())))


def _obj(vm: RestrictedUnpickler) -> None:
    items = vm.pop_mark()
    if not items:
        raise Refused("not a readable pickle (truncated or corrupted?): OBJ without a class")
    vm.stack.append(vm.call(items[0], tuple(vm.settle(x) for x in items[1:])))


def _newobj(vm: RestrictedUnpickler) -> None:
    """NEWOBJ / NEWOBJ_EX: ``cls.__new__(cls, *args)``; only builtin containers, which come out empty."""
    kwargs = vm.pop() if vm._opcode == 0x92 else {}
    args = vm.pop()
    cls = vm.pop()
    if not (isinstance(cls, _Global) and cls.name in ("dict", "list", "set", "OrderedDict") and args == () and kwargs == {}):
        raise Refused(f"creates an object of {short_repr(cls)} with NEWOBJ; only arrays and containers are read; {NOTHING_RAN}")
    vm.stack.append(vm.call(cls, ()))


def _build(vm: RestrictedUnpickler) -> None:
    state = vm.settle(vm.pop())
    vm.build(vm.top(), state)


def _ext(vm: RestrictedUnpickler) -> None:
    raise Refused(f"names a global through the copyreg extension registry (EXT), which checkpoints never use; {NOTHING_RAN}")


def _persid(vm: RestrictedUnpickler) -> None:
    vm.stack.append(vm.persistent_load(vm._readline().decode("ascii")))


def _binpersid(vm: RestrictedUnpickler) -> None:
    vm.stack.append(vm.persistent_load(vm.settle(vm.pop())))


def _memo_get(vm: RestrictedUnpickler, i: int) -> None:
    if i not in vm.memo:
        raise Refused(f"not a readable pickle (truncated or corrupted?): memo entry {i} fetched before it was stored")
    x = vm.memo[i]
    if x is _RELEASED:
        raise Refused(f"fetches an array's raw data a second time (memo {i}), which numpy and torch never write; {NOTHING_RAN}")
    vm.stack.append(x)


def _memo_put(vm: RestrictedUnpickler, i: int) -> None:
    x = vm.top()
    vm.memo[i] = x
    if _holds_big(x) or (type(x) is tuple and any(_holds_big(v) for v in x[:8])):
        vm._big[id(x)] = i  # a large string, or a tuple holding one (Python 2's cPickle memoises both)


def _holds_big(x: Any) -> bool:
    return type(x) in (str, bytes, bytearray) and len(x) >= _BIG


def _sized(fmt: str, conv: Callable[[RestrictedUnpickler, bytes], Any]) -> _Op:
    """A string, bytes or bytearray whose length comes first (struct format ``fmt``)."""
    return lambda vm: vm.stack.append(conv(vm, vm._read_sized(fmt)))


def _fixed(fmt: str) -> _Op:
    """A number of a fixed size."""
    n = struct.calcsize(fmt)
    return lambda vm: vm.stack.append(struct.unpack(fmt, vm._read(n))[0])


def _new(factory: Callable[[], Any]) -> _Op:
    return lambda vm: vm.stack.append(factory())


def _tuple_of(n: int) -> _Op:
    def op(vm: RestrictedUnpickler) -> None:
        items = [vm.settle(vm.pop()) for _ in range(n)]
        vm.stack.append(tuple(reversed(items)))
    return op


def _long_of(fmt: str) -> _Op:
    def op(vm: RestrictedUnpickler) -> None:
        (n,) = struct.unpack(fmt, vm._read(struct.calcsize(fmt)))
        if n < 0 or n > MAX_INT_BYTES:
            raise Refused(f"an integer of {n} bytes (at most {MAX_INT_BYTES}); {NOTHING_RAN}")
        vm.stack.append(int.from_bytes(vm._read(n), "little", signed=True))
    return op


def _memo_index(fmt: Optional[str]) -> Callable[[RestrictedUnpickler], int]:
    if fmt is None:
        return lambda vm: _int_from_text(vm._readline())
    n = struct.calcsize(fmt)
    return lambda vm: struct.unpack(fmt, vm._read(n))[0]


def _py2_str(vm: RestrictedUnpickler, b: bytes) -> str:
    return b.decode(vm.encoding)


def _utf8(vm: RestrictedUnpickler, b: bytes) -> str:
    return b.decode("utf-8", "surrogatepass")


_OPS.update({
    ord("("): lambda vm: vm.marks.append(len(vm.stack)), ord("."): _stop, ord("0"): _pop,
    ord("1"): lambda vm: vm.pop_mark(), ord("2"): lambda vm: vm.stack.append(vm.top()),
    0x80: _proto, 0x95: _frame,
    ord("N"): _new(lambda: None), 0x88: _new(lambda: True), 0x89: _new(lambda: False),
    ord("I"): _int_text, ord("L"): _long_text, ord("F"): _float_text, ord("S"): _string_text,
    ord("J"): _fixed("<i"), ord("K"): _fixed("<B"), ord("M"): _fixed("<H"), ord("G"): _fixed(">d"),
    0x8A: _long_of("<B"), 0x8B: _long_of("<i"),
    ord("T"): _sized("<i", _py2_str), ord("U"): _sized("<B", _py2_str),
    ord("B"): _sized("<I", lambda vm, b: b), ord("C"): _sized("<B", lambda vm, b: b), 0x8E: _sized("<Q", lambda vm, b: b),
    0x96: _sized("<Q", lambda vm, b: bytearray(b)),
    ord("V"): lambda vm: vm.stack.append(vm._readline().decode("raw-unicode-escape")),
    ord("X"): _sized("<I", _utf8), 0x8C: _sized("<B", _utf8), 0x8D: _sized("<Q", _utf8),
    0x97: _out_of_band, 0x98: _out_of_band,
    ord(")"): _new(tuple), ord("t"): lambda vm: vm.stack.append(tuple(vm.settle(x) for x in vm.pop_mark())),
    0x85: _tuple_of(1), 0x86: _tuple_of(2), 0x87: _tuple_of(3),
    ord("]"): _new(list), ord("l"): lambda vm: vm.stack.append([vm.settle(x) for x in vm.pop_mark()]),
    ord("a"): _append, ord("e"): _appends,
    ord("}"): _new(dict), ord("d"): _dict_op, ord("s"): _setitem, ord("u"): _setitems_op,
    0x8F: _new(set), 0x90: _additems, 0x91: _frozenset_op,
    ord("c"): _global, 0x93: _stack_global, ord("R"): _reduce, ord("i"): _inst, ord("o"): _obj,
    0x81: _newobj, 0x92: _newobj, ord("b"): _build, 0x82: _ext, 0x83: _ext, 0x84: _ext,
    ord("P"): _persid, ord("Q"): _binpersid,
})
for _code, _fmt in ((ord("g"), None), (ord("h"), "<B"), (ord("j"), "<I")):
    _OPS[_code] = (lambda read: lambda vm: _memo_get(vm, read(vm)))(_memo_index(_fmt))
for _code, _fmt in ((ord("p"), None), (ord("q"), "<B"), (ord("r"), "<I")):
    _OPS[_code] = (lambda read: lambda vm: _memo_put(vm, read(vm)))(_memo_index(_fmt))
_OPS[0x94] = lambda vm: _memo_put(vm, len(vm.memo))


# --------------------------------------------------------------------------------------------
# What was loaded: size when walked (shared references counted each time), depth, cycles
# --------------------------------------------------------------------------------------------
def _children(x: Any) -> Iterator[Any]:
    if isinstance(x, dict):
        for k, v in x.items():
            yield k
            yield v
        if type(x) is OrderedDict:
            yield from vars(x).values()
    else:
        yield from x


def check_structure(obj: Any, limits: Limits = DEFAULT_LIMITS) -> None:
    """Refuse a loaded structure that contains itself, nests deeper than ``max_depth`` or whose walk (printing it,
    copying it, converting it to JSON) would reach more than ``max_expanded`` items. Linear in its distinct items."""
    containers = (dict, list, tuple, set, frozenset)
    sizes: Dict[int, Tuple[int, int]] = {}
    on_path: set = set()
    todo: List[Tuple[Any, bool]] = [(obj, False)]
    while todo:
        node, done = todo.pop()
        i = id(node)
        if done:
            on_path.discard(i)
            total, depth = 1, 1
            for ch in _children(node):
                if isinstance(ch, containers):
                    s, d = sizes[id(ch)]
                else:
                    s, d = (1 + len(ch) // 64 if isinstance(ch, (str, bytes, bytearray)) else 1), 0
                total += s
                depth = max(depth, d + 1)
                if total > limits.max_expanded:
                    break
            if total > limits.max_expanded:
                raise Refused(f"holds a structure that reaches more than {limits.max_expanded:,} items when walked "
                              f"(shared references counted each time they are reached); {NOTHING_RAN}")
            if depth > limits.max_depth:
                raise Refused(f"nests containers more than {limits.max_depth} levels deep; {NOTHING_RAN}")
            sizes[i] = (total, depth)
            continue
        if not isinstance(node, containers) or i in sizes:
            continue
        if i in on_path:
            raise Refused(f"holds a container that contains itself; {NOTHING_RAN}")
        on_path.add(i)
        todo.append((node, True))
        todo.extend((ch, False) for ch in _children(node) if isinstance(ch, containers) and id(ch) not in sizes)
        if len(on_path) > limits.max_depth:
            raise Refused(f"nests containers more than {limits.max_depth} levels deep; {NOTHING_RAN}")


# --------------------------------------------------------------------------------------------
# torch .pth archives: storages declared in data.pkl against the archive's members
# --------------------------------------------------------------------------------------------
_STORAGE_ITEMSIZE = {"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
                     "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
                     "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "UntypedStorage": 1}
_STORAGE_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class _StorageType:
    __slots__ = ("name", "itemsize")

    def __init__(self, name: str, itemsize: int) -> None:
        self.name, self.itemsize = name, itemsize


class _StorageRef:
    __slots__ = ("key", "numel")

    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class _TensorRef:
    __slots__ = ("numel",)

    def __init__(self, numel: int) -> None:
        self.numel = numel


def _g_storage_type(vm: RestrictedUnpickler, args: tuple) -> Any:
    raise Refused(f"calls a torch storage type, which torch.save never writes; {NOTHING_RAN}")


def _g_rebuild_tensor(vm: RestrictedUnpickler, args: tuple) -> _TensorRef:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])``, checked."""
    if len(args) not in (6, 7) or not isinstance(args[0], _StorageRef) or not _is_int(args[1]) or args[1] < 0:
        raise Refused(f"rebuilds a tensor from {short_repr(args)}; {NOTHING_RAN}")
    storage, offset = args[0], args[1]
    size, stride = _shape(args[2], "a tensor"), _shape(args[3], "a tensor's strides")
    if len(size) != len(stride):
        raise Refused(f"a tensor of size {size} has strides {stride}; {NOTHING_RAN}")
    numel = _numel(size)
    extent = offset + sum((s - 1) * st for s, st in zip(size, stride)) + 1 if numel else 0
    if extent > storage.numel or numel > storage.numel:
        raise Refused(f"a tensor of size {short_repr(size, 40)} (offset {offset}, strides {short_repr(stride, 40)}) reaches "
                      f"beyond its storage of {storage.numel:,} elements; {NOTHING_RAN}")
    return _TensorRef(numel)


def _g_rebuild_parameter(vm: RestrictedUnpickler, args: tuple) -> _TensorRef:
    if len(args) not in (3, 4) or not isinstance(args[0], _TensorRef) or (len(args) == 4 and args[3] not in (None, {})):
        raise Refused(f"rebuilds a parameter from {short_repr(args)}; {NOTHING_RAN}")
    return args[0]


class TorchPickleScan(RestrictedUnpickler):
    """Reads a ``.pth``'s ``data.pkl`` without loading anything: storages are recorded (:attr:`storages`, key ->
    bytes), tensors checked against them. ``torch.load`` then reads the file only if this scan passed."""

    globals_allowed = {**_GLOBALS,
                       ("torch._utils", "_rebuild_tensor_v2"): _g_rebuild_tensor,
                       ("torch._utils", "_rebuild_parameter"): _g_rebuild_parameter,
                       ("torch._utils", "_rebuild_parameter_with_state"): _g_rebuild_parameter,
                       **{("torch", n): _g_storage_type for n in _STORAGE_ITEMSIZE}}

    def __init__(self, file: BinaryIO, **kw: Any) -> None:
        super().__init__(file, **kw)
        self.storages: Dict[str, int] = {}

    def persistent_load(self, pid: Any) -> _StorageRef:
        ok = type(pid) is tuple and len(pid) == 5 and _text(pid[0]) == "storage" and isinstance(pid[1], _Global) \
            and pid[1].fn is _g_storage_type and type(pid[2]) is str and _STORAGE_KEY.match(pid[2]) is not None \
            and type(pid[3]) is str and len(pid[3]) < 64 and _is_int(pid[4]) and pid[4] >= 0
        if not ok:
            raise Refused(f"holds the persistent reference {short_repr(pid)}, expected a torch storage; {NOTHING_RAN}")
        key, numel = pid[2], pid[4]
        nbytes = numel * _STORAGE_ITEMSIZE[pid[1].name]
        if nbytes > self.limits.max_array_bytes:
            raise Refused(f"declares a storage of {format_bytes(nbytes)}, over the "
                          f"{format_bytes(self.limits.max_array_bytes)} limit per array; {NOTHING_RAN}")
        if self.storages.setdefault(key, nbytes) != nbytes:
            raise Refused(f"declares storage {key!r} twice with different sizes; {NOTHING_RAN}")
        return _StorageRef(key, numel)

    def build(self, inst: Any, state: Any) -> None:
        if isinstance(inst, _TensorRef):
            raise Refused(f"restores a tensor's Python state (BUILD), which plain tensors do not have; {NOTHING_RAN}")
        super().build(inst, state)


def check_torch_zip(f: BinaryIO, size: int, limits: Limits = DEFAULT_LIMITS,
                    scan_type: Optional[type] = None) -> None:
    """Check a torch zip archive before ``torch.load`` inflates or allocates anything.

    Members' uncompressed sizes (``ZipInfo.file_size``) against the limits and the file's size; ``data.pkl``
    read by :class:`TorchPickleScan` (or ``scan_type``, a subclass of it); every declared storage against its
    member's size. Raises :class:`Refused`.
    """
    budget = limits.data_budget(size)
    try:
        zf = zipfile.ZipFile(f)
        infos = zf.infolist()
    except Exception as e:  # zipfile raises BadZipFile, NotImplementedError, struct.error, ... on a damaged directory
        raise Refused(f"not a readable .pth checkpoint (truncated or corrupted?): {_why(e)}") from None
    with zf:
        members = _check_members(infos, size, budget, limits)
        prefix = infos[0].filename.split("/", 1)[0]
        if f"{prefix}/constants.pkl" in members:
            raise Refused("is a TorchScript archive (torch.jit.save), not a checkpoint: save the model's state_dict() "
                          "with torch.save and load that")
        pkl = members.get(f"{prefix}/data.pkl")
        if pkl is None:
            raise Refused(f"not a readable .pth checkpoint (truncated or corrupted?): no {prefix}/data.pkl in the archive")
        try:
            data = zf.read(pkl)
        except Exception as e:  # a damaged member: bad CRC, bad header, bad deflate stream, ...
            raise Refused(f"not a readable .pth checkpoint (truncated or corrupted?): {_why(e)}") from None
    scan = (scan_type or TorchPickleScan)(io.BytesIO(data), size=len(data), limits=limits, data_budget=budget)
    check_structure(scan.load(), limits)
    total = 0
    for key, nbytes in scan.storages.items():
        info = members.get(f"{prefix}/data/{key}")
        if info is None:
            raise Refused(f"data.pkl declares storage {key!r}, which the archive does not hold (truncated?); get a fresh copy")
        if info.file_size != nbytes:
            raise Refused(f"storage {key!r} declares {format_bytes(nbytes)} but the archive holds "
                          f"{format_bytes(info.file_size)} for it; {NOTHING_RAN}")
        total += nbytes
    if total > budget:  # pragma: no cover - members were already bounded by the same budget
        raise Refused(f"declares {format_bytes(total)} of storages, over its budget of {format_bytes(budget)}; {NOTHING_RAN}")


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {short_repr(str(e), 120)[1:-1]}"


#: What a refusal of a torch archive's member, or of an .npz member, adds: (an unusual method, an array too
#: large, the members together too large).
_TORCH_ZIP_ADVICE = (f"; torch.save never writes that; {NOTHING_RAN}", f"; {NOTHING_RAN}", "({bomb}); " + NOTHING_RAN)
_NPZ_ADVICE = (" (save it again with numpy.savez or numpy.savez_compressed)", " (save smaller arrays)",
               "({bomb} save the arrays with numpy.savez)")


def check_zip_member(info: zipfile.ZipInfo, total: int, budget: int, size: int, limits: Limits,
                     advice: Tuple[str, str, str]) -> int:
    """One zip member's method and declared size, before anything of it is inflated: stored or deflated, not
    encrypted, at most ``limits.max_array_bytes``, and with the members before it at most ``budget`` bytes (the
    file's ``size`` times ``limits.expansion``). Returns the running total; raises :class:`Refused`, ending with
    ``advice`` (one text per refusal, in that order; the third one places ``{bomb}``, the budget's reason)."""
    name = short_repr(info.filename)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 0x1:
        raise Refused(f"member {name} is encrypted or compressed with an unusual method{advice[0]}")
    if info.file_size > limits.max_array_bytes:
        raise Refused(f"member {name} expands to {format_bytes(info.file_size)}, over the "
                      f"{format_bytes(limits.max_array_bytes)} limit per array{advice[1]}")
    total += info.file_size
    if total > budget:
        bomb = f"at most {limits.expansion}x its size: a zip bomb?"
        raise Refused(f"its members expand to more than {format_bytes(budget)} from a {format_bytes(size)} file "
                      + advice[2].format(bomb=bomb))
    return total


def _check_members(infos: List[zipfile.ZipInfo], size: int, budget: int, limits: Limits) -> Dict[str, zipfile.ZipInfo]:
    if not infos:
        raise Refused("not a readable .pth checkpoint (truncated or corrupted?): an empty zip archive")
    if len(infos) > limits.max_zip_members:
        raise Refused(f"is a zip archive of {len(infos):,} members (at most {limits.max_zip_members:,}); {NOTHING_RAN}")
    prefix = infos[0].filename.split("/", 1)[0]
    members: Dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        if name in members or not name.startswith(prefix + "/"):
            raise Refused(f"not a torch.save archive: member {short_repr(name)} is repeated or outside {prefix}/; {NOTHING_RAN}")
        total = check_zip_member(info, total, budget, size, limits, _TORCH_ZIP_ADVICE)
        members[name] = info
    return members


# --------------------------------------------------------------------------------------------
# torch's legacy format (torch.save before torch 1.6): pickles, then each storage's raw bytes
# --------------------------------------------------------------------------------------------
#: The first three pickles of a legacy file: this number, the format's version and a dict about the machine.
LEGACY_MAGIC, LEGACY_PROTOCOL = 0x1950A86A20F9469CFC6C, 1001


class _LegacyStorageIds:
    """A legacy file's storage references: ``('storage', type, key, location, numel, None)``, recorded as the zip
    format's are (a sixth element, the view of another storage, was written only before torch 0.4)."""

    storages: Dict[str, int]
    itemsizes: Dict[str, int]

    def persistent_load(self, pid: Any) -> Any:
        if type(pid) is tuple and len(pid) == 6 and pid[5] is not None:
            raise Refused("holds a storage view, which only torch before 0.4 wrote: load it in that torch and save "
                          "its state_dict() again")
        if type(pid) is not tuple or len(pid) != 6:
            raise Refused(f"holds the persistent reference {short_repr(pid)}, expected a torch storage; {NOTHING_RAN}")
        ref = super().persistent_load(pid[:5])  # type: ignore[misc]
        if not hasattr(self, "itemsizes"):
            self.itemsizes = {}
        self.itemsizes[ref.key] = _STORAGE_ITEMSIZE[pid[1].name]
        return ref


def _small_pickle(f: BinaryIO, size: int, limits: Limits) -> Any:
    obj = RestrictedUnpickler(f, size=size - f.tell(), limits=limits, data_budget=SLACK_BYTES).load()
    check_structure(obj, limits)
    return obj


def check_torch_legacy(f: BinaryIO, size: int, limits: Limits = DEFAULT_LIMITS,
                       scan_type: Optional[type] = None) -> None:
    """Check a file in torch's legacy format before ``torch.load`` reads it, as :func:`check_torch_zip` does a
    zip archive.

    Its pickles (the magic number, the format's version, the machine's description, the object with its storage
    references, the list of storage keys) are read by the same restricted interpreter (:class:`TorchPickleScan`,
    or ``scan_type``, a subclass of it) within the same limits; then each storage's declared element count and
    bytes against what follows in the file, and their total against the file's data budget. Raises
    :class:`Refused`.
    """
    budget = limits.data_budget(size)
    f.seek(0)
    if _small_pickle(f, size, limits) != LEGACY_MAGIC:
        raise Refused("not a readable .pth checkpoint (truncated or corrupted?): no torch.save magic number")
    if _small_pickle(f, size, limits) != LEGACY_PROTOCOL:
        raise Refused("written by torch.save in a legacy format version other than 1001; save it again with a "
                      "current torch.save")
    info = _small_pickle(f, size, limits)
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise Refused("written by torch.save on a big-endian machine (or its description is damaged); save it "
                      "again on a little-endian one")
    scan_cls = type("LegacyScan", (_LegacyStorageIds, scan_type or TorchPickleScan), {})
    scan = scan_cls(f, size=size - f.tell(), limits=limits, data_budget=budget)
    check_structure(scan.load(), limits)
    keys = _small_pickle(f, size, limits)
    declared: Dict[str, int] = scan.storages
    if (not isinstance(keys, list) or not all(type(k) is str for k in keys) or len(set(keys)) != len(keys)
            or set(keys) != set(declared)):
        raise Refused(f"its list of storages does not match the storages its tensors use; {NOTHING_RAN}")
    total = 0
    for key in keys:
        head = f.read(8)
        if len(head) != 8:
            raise Refused(f"storage {key!r} is missing: the file ends before it (truncated?); get a fresh copy")
        (numel,) = struct.unpack("<q", head)
        nbytes = declared[key]
        if numel < 0 or numel * getattr(scan, "itemsizes", {}).get(key, 1) != nbytes:
            raise Refused(f"storage {key!r} declares {format_bytes(nbytes)} but its data says {numel:,} elements; "
                          f"{NOTHING_RAN}")
        if f.tell() + nbytes > size:
            raise Refused(f"storage {key!r} needs {format_bytes(nbytes)}, the file holds "
                          f"{format_bytes(size - f.tell())} for it (truncated?); get a fresh copy")
        total += nbytes
        if total > budget:  # pragma: no cover - the bytes are in the file, whose size bounds them
            raise Refused(f"declares {format_bytes(total)} of storages, over its budget of {format_bytes(budget)}; "
                          f"{NOTHING_RAN}")
        f.seek(nbytes, io.SEEK_CUR)


# --------------------------------------------------------------------------------------------
# numpy .npz archives: members, their headers and their sizes checked before numpy reads them
# --------------------------------------------------------------------------------------------
def _npy_header(m: BinaryIO) -> Tuple[Tuple[int, ...], np.dtype, int]:
    """A ``.npy`` member's declared shape and dtype, and its header's length in bytes."""
    from numpy.lib import format as npy

    version = npy.read_magic(m)
    if version == (1, 0):
        shape, _, dtype = npy.read_array_header_1_0(m)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = npy.read_array_header_2_0(m)
    else:
        raise ValueError(f"unknown .npy format version {version}")
    return tuple(int(x) for x in shape), np.dtype(dtype), m.tell()


def check_npz(f: BinaryIO, size: int, limits: Limits = DEFAULT_LIMITS) -> None:
    """Check a ``numpy.savez`` archive before ``numpy.load`` inflates or allocates anything.

    Refuses (:class:`Refused`): a damaged directory, more than ``limits.max_zip_members`` members, a member name
    given twice (``numpy.load`` would read only the last), a member that is not a ``.npy`` array, encryption or
    an unusual compression, members whose uncompressed sizes exceed the per-array limit or together the file's
    data budget (a zip bomb), an object dtype (pickled objects), and a header whose shape and dtype do not
    account for exactly the member's bytes.
    """
    budget = limits.data_budget(size)
    try:
        zf = zipfile.ZipFile(f)
        infos = zf.infolist()
    except Exception as e:  # BadZipFile, NotImplementedError, struct.error, ... on a damaged directory
        raise Refused(f"not a readable .npz archive (truncated or corrupted?): {_why(e)} (save it again with "
                      f"numpy.savez)") from None
    with zf:
        if len(infos) > limits.max_zip_members:
            raise Refused(f"is a zip archive of {len(infos):,} members (at most {limits.max_zip_members:,}) (save "
                          f"fewer arrays)")
        seen: Dict[str, int] = {}
        total = 0
        for info in infos:
            name = info.filename
            if name in seen:
                raise Refused(f"member {short_repr(name)} appears twice in the archive (numpy.savez never writes "
                              f"that, and only the last would be read; save it again with numpy.savez)")
            seen[name] = 1
            if not name.endswith(".npy"):
                raise Refused(f"member {short_repr(name)} is not a .npy array (save the arrays with numpy.savez)")
            total = check_zip_member(info, total, budget, size, limits, _NPZ_ADVICE)
            _check_npy_member(zf, info, limits)


def _check_npy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits) -> None:
    name = short_repr(info.filename)
    try:
        with zf.open(info) as m:
            shape, dtype, header = _npy_header(m)  # type: ignore[arg-type]
    except Exception as e:  # a damaged member or header: ValueError, BadZipFile, zlib.error, EOFError, ...
        raise Refused(f"member {name} is not a readable .npy array (truncated or damaged?): {_why(e)} (save it "
                      f"again with numpy.savez)") from None
    if dtype.hasobject:
        raise Refused(f"member {name} holds pickled objects (dtype {short_repr(str(dtype), 40)}), which are not "
                      f"read (save plain numeric arrays with numpy.savez)")
    nbytes = _numel(shape) * dtype.itemsize
    if header + nbytes != info.file_size:
        raise Refused(f"member {name} declares {short_repr(shape, 40)} {dtype} ({format_bytes(nbytes)}) but holds "
                      f"{format_bytes(max(info.file_size - header, 0))} of data (truncated or damaged? save it "
                      f"again with numpy.savez)")


# --------------------------------------------------------------------------------------------
# torch files: checked, then read by torch.load(weights_only=True)
# --------------------------------------------------------------------------------------------
# torch.save's format before the zip archive (the default until torch 1.6, per torch.save's docstring in
# torch/serialization.py) starts with a pickle of its magic number; the oldest one is a tar archive
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


def torch_refusal(e: BaseException) -> str:
    """torch.load's complaint, reduced to its cause: without its advice to retry with weights_only=False."""
    msg = str(e)
    core = msg.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in msg else msg
    lines = [s.strip() for s in re.split(r"\n|(?<=\.) ", core) if s.strip() and "weights_only" not in s
             and "trust" not in s and "torch.load" not in s and "add_safe_globals" not in s and "safe_globals" not in s]
    core = short_repr(" ".join(lines[:2]).rstrip(". ") or type(e).__name__, 160)[1:-1]
    if "Weights only load failed" in msg or isinstance(e, pickle.UnpicklingError):
        return f"refused by torch's restricted loader: {core}; {NOTHING_RAN}"
    return f"not a readable .pth checkpoint (truncated or corrupted?): {core}; get a fresh copy of the file"


def load_torch_zip(f: BinaryIO, size: int, limits: Limits, scan_type: Optional[type] = None) -> Any:
    """A torch zip archive (torch.save since torch 1.6): its members, ``data.pkl`` (read by ``scan_type``, a
    :class:`TorchPickleScan` by default) and storages checked within ``limits``, then read by
    ``torch.load(weights_only=True)``. Raises :class:`Refused`."""
    import torch

    check_torch_zip(f, size, limits, scan_type)  # sizes and data.pkl checked before torch reads anything
    f.seek(0)
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for files it cannot read
        raise Refused(torch_refusal(e)) from None


def load_torch_legacy(f: BinaryIO, size: int, limits: Limits, scan_type: Optional[type] = None) -> Any:
    """A file in torch.save's legacy format (before torch 1.6; maskrcnn-benchmark's released checkpoints):
    its pickles and storage sizes checked as a zip archive's are, then read by torch.load(weights_only=True)."""
    import torch

    check_torch_legacy(f, size, limits, scan_type)
    f.seek(0)
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for files it cannot read
        raise Refused(torch_refusal(e)) from None
