"""The images ipympl sends to the browser for a dashboard, encoded quickly.

For every drawing, ipympl's canvas (matplotlib's WebAgg protocol, ``FigureCanvasWebAggCore.get_diff_image``)
sends a PNG of the whole canvas: the full image, or, when only some pixels changed, a "diff" image in which the
unchanged pixels are fully transparent and the browser draws it over the previous one. It encodes that PNG with
Pillow at its default zlib level (6), which on the course's figures (about 700 x 400 px) can take longer than
drawing the figure (``benchmarks/bench_browser.py`` measures what a reader then waits). A diff frame is mostly
zeros: this module writes the same PNG (8-bit RGBA, row filter "none", zlib level 1) and follows the same protocol,
so that a move of a control reaches the screen sooner. Pure numpy and zlib; browsers and Pillow decode it as any
PNG.
"""

from __future__ import annotations

import struct
import types
import zlib
from typing import Any, Optional

import numpy as np

__all__ = ["encode_png", "diff_frame", "use_fast_frames"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgba: np.ndarray, level: int = 1) -> bytes:
    """A PNG of an ``(height, width, 4)`` uint8 RGBA array: no row filter, zlib at ``level`` (0-9)."""
    if not isinstance(rgba, np.ndarray) or rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"rgba must be a uint8 array of shape (height, width, 4), got "
                         f"{getattr(rgba, 'dtype', type(rgba).__name__)} {getattr(rgba, 'shape', '')}")
    if not 0 <= level <= 9:
        raise ValueError(f"level must be a zlib level 0..9, got {level}")
    h, w, _ = rgba.shape
    if h == 0 or w == 0:
        raise ValueError(f"rgba must have at least one pixel, got shape {rgba.shape}")
    rows = np.zeros((h, 1 + 4 * w), np.uint8)  # each row: filter type 0 ("none"), then its pixels
    rows[:, 1:] = rgba.reshape(h, 4 * w)
    header = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)  # 8 bits, colour type 6 (RGBA), no interlace
    return (_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
            + _chunk(b"IEND", b""))


def diff_frame(canvas: Any) -> Optional[bytes]:
    """The next frame of a WebAgg canvas as a PNG, or None when nothing was drawn since the last one.

    The protocol of matplotlib's ``get_diff_image``: a full frame after a resize, when asked for one
    (``_force_full``) or when the image has transparent pixels (they cannot be told from "unchanged"); otherwise a
    diff frame that keeps the changed pixels and makes every other pixel 0 (transparent).
    """
    if not canvas._png_is_old:
        return None
    pixels = np.asarray(canvas.get_renderer().buffer_rgba())
    buff = pixels.view(np.uint32).squeeze(2)
    if canvas._force_full or buff.shape != canvas._last_buff.shape or (pixels[:, :, 3] != 255).any():
        canvas.set_image_mode("full")
        out = buff
    else:
        canvas.set_image_mode("diff")
        out = np.where(buff != canvas._last_buff, buff, 0)
    canvas._last_buff = buff.copy()
    canvas._force_full = False
    canvas._png_is_old = False
    return encode_png(np.ascontiguousarray(out).view(np.uint8).reshape(*out.shape, 4))


def use_fast_frames(canvas: Any) -> bool:
    """Make a WebAgg canvas (ipympl's) send its frames through :func:`diff_frame`; False for any other canvas."""
    needed = ("_png_is_old", "_force_full", "_last_buff", "set_image_mode", "get_diff_image", "get_renderer")
    if not all(hasattr(canvas, n) for n in needed):
        return False
    canvas.get_diff_image = types.MethodType(diff_frame, canvas)
    return True
