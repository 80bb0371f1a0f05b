"""Text printed from names a file chose (stage names, image ids): control characters written as escapes.

Nothing here imports anything of the package.
"""

from __future__ import annotations

import unicodedata

__all__ = ["printable"]


def printable(text: str) -> str:
    """``text`` with its control and format characters (newlines, carriage returns, terminal escapes,
    bidirectional marks) and line separators written as Python escapes, so that a name prints as one piece of
    one line and cannot forge the lines around it."""
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp") else ch
                   for ch in text)
