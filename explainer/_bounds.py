"""The bounds within which every untrusted file is read, stated once.

Every reader of a file that may be hostile or broken checks the sizes the file declares against these numbers
before it allocates, inflates or decodes anything, and refuses with a ``ValueError`` naming the file and what to
do. The readers and what they take from here:

==========================  =================================================================================
reader                      bounds
==========================  =================================================================================
``.pkl`` checkpoints        :mod:`explainer.checkpoints.safe_load` (``Limits``): file, array and total bytes, the expansion
                            over the file's size, pickle operations, nesting, expanded items, keys, integers,
                            text lines
``.pth`` (zip and legacy)   the same, plus zip members; every storage against the bytes the file holds for it
``.npz`` / ``.pt`` dumps    the same (:data:`DUMP_EXPANSION` for compressed ``.npz`` members), each ``.npy``
                            header against its member's size (:func:`explainer.checkpoints.safe_load.check_npz`)
the detector cache          the same, at most :data:`CACHE_FILE_BYTES`
JSON results                :data:`MAX_RESULTS_BYTES`, :data:`MAX_JSON_DEPTH`
other JSON (maps, shapes)   :data:`MAX_JSON_BYTES`, :data:`MAX_JSON_DEPTH`
result masks                :data:`MASK_MAX_SIDE`, :data:`MASK_CANVAS_PIXELS` (declared), :data:`MASK_DECODE_PIXELS`
                            (decoded), :data:`MASK_POLYGON_WALK`
ONNX models                 :data:`ONNX_FILE_BYTES`, external data within the model's folder and at most
                            :data:`MAX_TOTAL_BYTES`
==========================  =================================================================================

Below the numbers is the one opener every reader uses (:func:`open_untrusted`: a regular file, checked before and
after it is opened, opened without blocking) and :class:`Limits`, the numbers as one object a reader is given.
Nothing here imports anything of the package (numpy only, to describe an array in a message).
"""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator, Tuple, Union

import numpy as np

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# -- every container ---------------------------------------------------------------------------------
#: Larger files are refused before anything is read.
MAX_FILE_BYTES = 8 * GiB
#: The most one array, string or torch storage may declare.
MAX_ARRAY_BYTES = 4 * GiB
#: The most that a file's arrays and uncompressed members may add up to ...
MAX_TOTAL_BYTES = 8 * GiB
#: ... and at most this many times the file's size, plus SLACK_BYTES.
EXPANSION = 4
SLACK_BYTES = 64 * KiB

# -- pickles -------------------------------------------------------------------------------------------
MAX_OPS = 2_000_000
MAX_DEPTH = 100
MAX_EXPANDED = 10_000_000
MAX_OTHER_KEYS = 4096
MAX_KEY_ITEMS = 64
MAX_KEY_DEPTH = 4
MAX_INT_BYTES = 1024
MAX_LINE_BYTES = 64 * MiB

# -- archives ------------------------------------------------------------------------------------------
MAX_ZIP_MEMBERS = 100_000
#: A compressed ``.npz`` dump may expand to this many times its size (save a dump of zeros uncompressed).
DUMP_EXPANSION = 64
#: The detector cache holds about 100 KiB of weights: a larger file is not one.
CACHE_FILE_BYTES = 16 * MiB

# -- JSON ----------------------------------------------------------------------------------------------
MAX_RESULTS_BYTES = 512 * MiB
MAX_JSON_BYTES = 64 * MiB
MAX_JSON_DEPTH = 64

# -- masks ---------------------------------------------------------------------------------------------
#: Largest mask height or width accepted, and the most pixels a mask's size may declare (RLEs are compared
#: without drawing that canvas) ...
MASK_MAX_SIDE, MASK_CANVAS_PIXELS = 1 << 16, 1 << 31
#: ... and the most pixels decoded for one mask (h * w bytes are allocated).
MASK_DECODE_PIXELS = 1 << 25
#: The longest outline (pixels, summed over a mask's polygons) drawn for one mask.
MASK_POLYGON_WALK = 2e6

# -- ONNX ----------------------------------------------------------------------------------------------
#: protobuf's own limit for one serialized model; weights beyond it live in external data files.
ONNX_FILE_BYTES = 2 * GiB

# -- messages ------------------------------------------------------------------------------------------
#: The longest error line a command prints (a message listing many names is cut).
MAX_ERROR_CHARS = 2000


# -- the opener and the limits as one object ----------------------------------------------------------------------------
#: The sentence every refusal of hostile content ends with.
NOTHING_RAN = "nothing in it was run; get the checkpoint again from its original source"


@dataclass(frozen=True)
class Limits:
    """The bounds within which a file is read (see the module docstring for each one's meaning)."""

    max_file_bytes: int = MAX_FILE_BYTES
    max_array_bytes: int = MAX_ARRAY_BYTES
    max_total_bytes: int = MAX_TOTAL_BYTES
    expansion: int = EXPANSION
    slack_bytes: int = SLACK_BYTES
    max_ops: int = MAX_OPS
    max_depth: int = MAX_DEPTH
    max_expanded: int = MAX_EXPANDED
    max_other_keys: int = MAX_OTHER_KEYS
    max_key_items: int = MAX_KEY_ITEMS
    max_zip_members: int = MAX_ZIP_MEMBERS

    def data_budget(self, file_size: int) -> int:
        """The most bytes that may be materialised from a file of ``file_size`` bytes."""
        return min(self.max_total_bytes, self.expansion * max(0, file_size) + self.slack_bytes)


DEFAULT_LIMITS = Limits()


class Refused(ValueError):
    """A file refused: the message says what was wrong (without the file's name, which the caller adds)."""


def format_bytes(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'``; exact for small counts."""
    if n < 1024:
        return f"{n} B"
    for unit, size in (("EiB", 1 << 60), ("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"  # pragma: no cover


def short_repr(x: Any, n: int = 60) -> str:
    """A repr cut to ``n`` characters, computed without ever walking a large or shared structure."""
    if isinstance(x, (str, bytes, bytearray)):
        r = repr(x[: n + 1])
    elif isinstance(x, (bool, float, complex)) or x is None:
        r = repr(x)
    elif isinstance(x, int):
        r = repr(x) if x.bit_length() < 200 else f"<an integer of {x.bit_length()} bits>"
    elif isinstance(x, (tuple, list)) and len(x) <= 16 and all(type(v) in (int, float, bool, type(None)) for v in x):
        r = repr(tuple(v if type(v) is not int or v.bit_length() < 200 else ... for v in x))
    elif isinstance(x, (tuple, list, dict, set, frozenset)):
        r = f"<a {type(x).__name__} of {len(x)} items>"
    elif isinstance(x, np.ndarray):
        r = f"<an array {x.dtype} {tuple(x.shape)}>"
    else:
        r = f"<a {type(x).__name__}>"
    return r if len(r) <= n else r[: n - 3] + "..."


# --------------------------------------------------------------------------------------------
# Opening a file
# --------------------------------------------------------------------------------------------
def _check_kind(st: os.stat_result, limits: Limits) -> None:
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise Refused("is a directory, expected a checkpoint file (.pkl or .pth)")
    if stat.S_ISFIFO(mode):
        raise Refused("is a named pipe (FIFO), not a regular file: save the checkpoint to a file and load that")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise Refused("is a device, not a regular file: give the path of a checkpoint file")
    if not stat.S_ISREG(mode):
        raise Refused("is not a regular file (a socket?): give the path of a checkpoint file")
    if st.st_size == 0:
        raise Refused("the file is empty (an interrupted download or copy?)")
    if st.st_size > limits.max_file_bytes:
        raise Refused(f"is {format_bytes(st.st_size)}, over the {format_bytes(limits.max_file_bytes)} limit for a checkpoint; "
                      "if it really is one, pass limits=Limits(max_file_bytes=...)")


def _os_refusal(e: OSError) -> Refused:
    if isinstance(e, FileNotFoundError):
        return Refused("no such file (check the path)")
    if isinstance(e, PermissionError):
        return Refused("cannot be read: permission denied (check the permissions of the file and its folders)")
    return Refused(f"cannot be read: {e.strerror or type(e).__name__}")


@contextmanager
def open_untrusted(path: Union[str, os.PathLike], limits: Limits = DEFAULT_LIMITS) -> Iterator[Tuple[BinaryIO, int]]:
    """Open a regular file of at most ``limits.max_file_bytes`` for reading; yields ``(file, size)``.

    The kind and size are checked before opening (a FIFO or ``/dev/zero`` is never opened) and again on the open
    descriptor, which is opened non-blocking so that a path replaced by a FIFO in between cannot hang.
    """
    try:
        _check_kind(os.stat(path), limits)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise _os_refusal(e) from None
    try:
        st = os.fstat(fd)
        _check_kind(st, limits)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f, st.st_size
