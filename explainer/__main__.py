"""``python -m explainer <command> ...``: the command line of :mod:`explainer.cli` (``--help`` lists the commands)."""

from __future__ import annotations

import sys

try:
    from explainer.cli import main
except KeyboardInterrupt:  # Ctrl-C while torch is still being imported: exit as the command line does
    sys.exit(130)

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
