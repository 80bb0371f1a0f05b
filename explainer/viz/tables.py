"""Tables for notebooks and read-outs: plain HTML, numbers formatted, cells escaped."""

from __future__ import annotations

import html
from typing import Any, Optional, Sequence

__all__ = ["html_table", "Table", "table"]


def _fmt(v: Any, digits: int) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v == int(v) and abs(v) < 1e6:
            return f"{int(v)}"
        return f"{v:.{digits}g}"
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return _fmt(v.item(), digits)
    return html.escape(str(v))


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
        return html_table(self.rows, self.header, self.caption, self.digits)

    def __repr__(self) -> str:
        import html as _h

        cells = ([self.header] if self.header else []) + [[_h.unescape(_fmt(c, self.digits)) for c in r] for r in self.rows]
        widths = [max(len(str(r[i])) for r in cells if i < len(r)) for i in range(max(len(r) for r in cells))]
        lines = [self.caption] if self.caption else []
        for r in cells:
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        return "\n".join(lines)


def table(rows, header=None, caption: str = "", digits: int = 5) -> Table:
    """Build a :class:`Table` (display it as the last expression of a cell)."""
    return Table(rows, header, caption, digits)
