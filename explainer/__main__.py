"""Command line: ``python -m explainer <command> ...``; ``python -m explainer --help`` lists the commands."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

#: Modules that contribute sub-commands through a ``register_cli(subparsers)`` function.
COMMAND_MODULES = ["explainer.checkpoint", "explainer.diagnose"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m explainer",
        description="Detectron vs Detectron2: convert and audit checkpoints, diagnose differing detections.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        mod.register_cli(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
