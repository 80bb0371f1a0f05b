"""Files written whole or not at all: the one atomic writer that every output of the package goes through."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Iterator, List, Optional

__all__ = ["atomic_output"]


@contextlib.contextmanager
def atomic_output(p: Path, mode: Optional[int]) -> Iterator[BinaryIO]:
    """A new file next to ``p``, renamed onto ``p`` when the block succeeds; removed on any exception.

    The temporary file is created with ``0o666`` so that the umask applies exactly as for ``open(p, "wb")``
    (``mode``, when given, replaces that: an overwritten file keeps its permissions). Errors from the file
    system (permission denied, no space, read-only) become one ``ValueError``; nothing is left behind.
    """
    created: List[str] = []
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        while True:
            created.append(os.path.join(p.parent, f".{p.name}.{secrets.token_hex(8)}.tmp"))
            try:
                fd = os.open(created[-1], flags, 0o666)
                break
            except FileExistsError:
                created.pop()
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            if mode is not None:
                os.fchmod(f.fileno(), mode)
        os.replace(created[-1], p)
        created.clear()
    except OSError as e:
        what = "cannot write in its folder" if isinstance(e, PermissionError) else "could not be written"
        raise ValueError(f"{p}: {what}: {e.strerror or type(e).__name__}; nothing was written (choose a folder you "
                         "can write to, with free space)") from None
    finally:
        for tmp in created:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
