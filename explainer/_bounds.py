"""The bounds within which every untrusted file is read, stated once.

Every reader of a file that may be hostile or broken checks the sizes the file declares against these numbers
before it allocates, inflates or decodes anything, and refuses with a ``ValueError`` naming the file and what to
do. The readers and what they take from here:

==========================  =================================================================================
reader                      bounds
==========================  =================================================================================
``.pkl`` checkpoints        :mod:`explainer.safe_load` (``Limits``): file, array and total bytes, the expansion
                            over the file's size, pickle operations, nesting, expanded items, keys, integers,
                            text lines
``.pth`` (zip and legacy)   the same, plus zip members; every storage against the bytes the file holds for it
``.npz`` / ``.pt`` dumps    the same (:data:`DUMP_EXPANSION` for compressed ``.npz`` members), each ``.npy``
                            header against its member's size (:func:`explainer.safe_load.check_npz`)
the detector cache          the same, at most :data:`CACHE_FILE_BYTES`
JSON results                :data:`MAX_RESULTS_BYTES`, :data:`MAX_JSON_DEPTH`
other JSON (maps, shapes)   :data:`MAX_JSON_BYTES`, :data:`MAX_JSON_DEPTH`
result masks                :data:`MASK_MAX_SIDE`, :data:`MASK_CANVAS_PIXELS` (declared), :data:`MASK_DECODE_PIXELS`
                            (decoded), :data:`MASK_POLYGON_WALK`
ONNX models                 :data:`ONNX_FILE_BYTES`, external data within the model's folder and at most
                            :data:`MAX_TOTAL_BYTES`
==========================  =================================================================================

Nothing here imports anything of the package.
"""

from __future__ import annotations

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
