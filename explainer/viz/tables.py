"""Tables for notebooks and read-outs: plain HTML, numbers formatted for a person, cells escaped.

Every number is shown with at most ``digits`` significant digits (5 unless told), whole numbers without a
decimal point, ``-0`` as ``0``; lists, tuples and arrays show their elements that way. A float32 value that
reached a cell as Python's full repr inside a string (``[192.80999755859375, ...]``) is shown rounded
(``[192.81, ...]``): a repr with 12 or more significant digits is never what a reader needs. Numbers written
with fewer digits on purpose (``f"{x:.9g}"`` to show a rounding) are left as they are, and so is the caption,
which is the author's sentence.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any, Optional, Sequence

__all__ = ["html_table", "Table", "table", "format_number", "readable"]

#: A decimal number with 12 or more significant digits: a float repr nobody formatted.
_RAW_FLOAT = re.compile(r"(?<![\w.])-?(?:\d+\.\d+|\.\d+)(?:[eE][+-]?\d+)?(?![\w.])")


def format_number(v: float, digits: int = 5) -> str:
    """A float as a person reads it: ``digits`` significant digits, whole numbers plain, no ``-0``."""
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == int(v) and abs(v) < 1e6:
        return f"{int(v)}"
    s = f"{v:.{digits}g}"
    return "0" if re.fullmatch(r"-0(\.0*)?", s) else s


def _significant(token: str) -> int:
    mantissa = re.split(r"[eE]", token.lstrip("-"))[0].replace(".", "").lstrip("0")
    return len(mantissa)


def readable(text: str, digits: int = 5) -> str:
    """``text`` with every raw float repr (12 or more significant digits) rounded to ``digits`` digits."""
    return _RAW_FLOAT.sub(lambda m: format_number(float(m.group(0)), digits)
                          if _significant(m.group(0)) >= 12 else m.group(0), text)


def _plain(v: Any, digits: int) -> str:
    """A cell's value as text (not yet escaped)."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return format_number(v, digits)
    if hasattr(v, "tolist") and hasattr(v, "ndim"):  # numpy and torch: scalars and arrays
        return _plain(v.item() if v.ndim == 0 else v.tolist(), digits)
    if isinstance(v, (list, tuple)):
        inner = ", ".join(_plain(x, digits) for x in v)
        return f"[{inner}]" if isinstance(v, list) else f"({inner}{',' if len(v) == 1 else ''})"
    if isinstance(v, str):
        return readable(v, digits)
    return str(v)


def _fmt(v: Any, digits: int) -> str:
    return html.escape(_plain(v, digits))


def html_table(rows: Sequence[Sequence[Any]], header: Optional[Sequence[str]] = None, caption: str = "",
               digits: int = 5) -> str:
    """A small HTML table; floats shown with ``digits`` significant digits."""
    parts = ['<table style="border-collapse:collapse;font-family:monospace;font-size:13px">']
    if caption:
        parts.append(f'<caption style="text-align:left;font-weight:bold;padding-bottom:2px">{html.escape(caption)}</caption>')
    if header:
        parts.append("<tr>" + "".join(
            f'<th style="text-align:left;padding:1px 12px 1px 0;border-bottom:1px solid #999">{html.escape(str(h))}</th>'
            for h in header) + "</tr>")
    for r in rows:
        parts.append("<tr>" + "".join(f'<td style="padding:1px 12px 1px 0">{_fmt(c, digits)}</td>' for c in r) + "</tr>")
    parts.append("</table>")
    return "".join(parts)


class Table:
    """A table that renders as HTML in a notebook and as aligned text elsewhere."""

    def __init__(self, rows, header=None, caption: str = "", digits: int = 5):
        self.rows = [list(r) for r in rows]
        self.header = list(header) if header else None
        self.caption = caption
        self.digits = digits

    def _repr_html_(self) -> str:
        # a table wider than the notebook column scrolls inside a region that the keyboard can reach and scroll
        heads = ", ".join(str(h) for h in (self.header or [])[:3] if str(h).strip())
        name = html.escape(f"table: {heads}" if heads else "table", quote=True)
        return (f'<div role="region" aria-label="{name}" tabindex="0" style="overflow-x:auto;max-width:100%">'
                + html_table(self.rows, self.header, self.caption, self.digits) + "</div>")

    def __repr__(self) -> str:
        cells = ([self.header] if self.header else []) + [[_plain(c, self.digits) for c in r] for r in self.rows]
        widths = [max(len(str(r[i])) for r in cells if i < len(r)) for i in range(max(len(r) for r in cells))]
        lines = [self.caption] if self.caption else []
        for r in cells:
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        return "\n".join(lines)


def table(rows, header=None, caption: str = "", digits: int = 5) -> Table:
    """Build a :class:`Table` (display it as the last expression of a cell)."""
    return Table(rows, header, caption, digits)
