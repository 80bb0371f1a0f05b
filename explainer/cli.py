"""The command line: ``python -m explainer <command> ...`` (or ``explainer <command> ...``); ``--help`` lists them.

==============  ==========================================================  ===============================
command         what it does                                                exit codes
==============  ==========================================================  ===============================
``convert``     a Detectron ``.pkl``, a torchvision or maskrcnn-benchmark   0 written, 2 bad input (an
                ``.pth``, to a Detectron2 checkpoint                        existing output without --force)
                (:mod:`explainer.checkpoints`); the input is never modified
``audit``       a checkpoint's names and shapes against what a model        0 loads, 1 problems found,
                expects (:func:`explainer.checkpoints.audit`)               2 bad input
``diagnose``    why two COCO result files differ                            0 identical, 1 causes found,
                (:func:`explainer.diagnosis.diagnose`); with ``--gt``       2 bad input
                (or ``--agreement``) what each cause costs in AP
``trace``       the first stage where two dumps of a network's stages       0 no divergence, 1 divergence
                diverge, and why (:func:`explainer.trace.compare`)          and its causes, 2 bad input
==============  ==========================================================  ===============================

Every command also exits 130 when interrupted (Ctrl-C) and 143 when terminated (SIGTERM), quietly, as a shell
reports a process ended by those signals; a file being written is then removed, never left half-written.

This module owns the parser; each command is a function here that reads its arguments, calls plain
functions of the computation modules and prints. Bad input (and a bad command line) ends with one line
``error: <file>: <what> (<what to do>)`` on stderr and exit code 2, never a traceback (an unexpected exception
is reported the same way; set ``EXPLAINER_TRACEBACK=1`` to see where it came from). Files written (``convert``)
get the permissions a plain ``open()`` would give them (0o666 less the umask). A new command is one more entry in
:data:`COMMANDS`: a function that adds its arguments and a function that runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple

from explainer import trace
from explainer._validate import read_json, regular_file
from explainer.checkpoints import checkpoint as Ck
from explainer.diagnosis import report as Dx

__all__ = ["COMMANDS", "EXIT_CODES", "build_parser", "main"]

BAD_INPUT = 2
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
TERMINATED = 143   # 128 + SIGTERM

#: The exit codes every command shares, for ``--help``.
EXIT_CODES = "Every command exits 2 on bad input, 130 when interrupted (Ctrl-C) and 143 when terminated (SIGTERM)."


class _Parser(argparse.ArgumentParser):
    """argparse, with its own errors (a missing argument, an unknown option) as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def _fail(e: object, code: int = BAD_INPUT) -> int:
    """Print one line ``error: ...`` (whitespace folded) on stderr; return ``code``."""
    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    return code


# --------------------------------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------------------------------
def _convert_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="Detectron .pkl, or a torchvision or maskrcnn-benchmark .pth")
    p.add_argument("output", help="Detectron2 checkpoint to write (.pth or .pkl)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-reorder-anchors", action="store_true",
                   help="keep the RPN's rows in the source's anchor order (ratio-major) instead of Detectron2's (size-major)")


def _check_input(path: str, what: str) -> None:
    """An input must be a readable regular file (:func:`explainer._validate.regular_file`)."""
    regular_file(path, what)


def _check_output(output: str, input_: str, force: bool) -> None:
    """Refuse an output that cannot be written, before the input is read (``save_checkpoint`` checks again)."""
    p = Path(output)
    if p.is_dir():
        raise ValueError(f"{p}: is a directory (give the path of a file ending in .pth or .pkl)")
    if p.suffix not in (".pth", ".pkl"):
        raise ValueError(f"{p}: the output must end in .pth or .pkl (name the Detectron2 checkpoint to write)")
    if p.exists() or p.is_symlink():
        if p.resolve() == Path(input_).resolve():
            raise ValueError(f"{p}: is the input file (write the conversion to another file)")
        if not force:
            raise ValueError(f"{p}: already exists (pass --force to overwrite it, or choose another output)")
    folder = p.parent
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder (create it, or choose another output)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{p}: cannot write in its folder {folder}: permission denied (choose a folder you can "
                         "write to)")


def _convert(args: argparse.Namespace) -> int:
    try:
        _check_input(args.input, "a Detectron .pkl, or a torchvision or maskrcnn-benchmark .pth checkpoint")
        _check_output(args.output, args.input, args.force)
        ck = Ck.load_checkpoint(args.input)
        try:
            sd, report = Ck.convert_checkpoint(ck, reorder_anchors=not args.no_reorder_anchors)
        except ValueError as e:
            raise ValueError(f"{args.input}: {e}") from None
        if Path(args.output).resolve() == Path(args.input).resolve():
            raise ValueError(f"{args.output}: is the input file (write the conversion to another file)")
        Ck.save_checkpoint(sd, args.output, force=args.force)
    except FileExistsError:  # appeared since the check above
        return _fail(f"{args.output}: already exists (pass --force to overwrite it, or choose another output)")
    except (ValueError, OSError) as e:
        return _fail(e)
    if args.json:
        print(json.dumps({"output": str(args.output), "format_in": ck.format,
                          **{k: report[k] for k in ("counts", "predictor", "rpn_anchors", "ignored", "unmapped")},
                          "renamed": [list(r[:3]) for r in report["renamed"]]}, indent=1, default=str))
    else:
        print(f"{args.input}: {ck.format}, {ck.n_parameters:,} parameters")
        _print_conversion(report)
        print(f"wrote {args.output}")
    return 0


def _print_conversion(report: Dict[str, Any]) -> None:
    c = report["counts"]
    print(f"converted {c['tensors in']} tensors -> {c['tensors out']} ({c['parameters out']:,} parameters); "
          f"ignored {c['ignored']}")
    for name, change, what in report["predictor"]:
        print(f"  predictor {name}: {change} ({what})")
    rpn = report.get("rpn_anchors", {})
    if rpn.get("anchors"):
        moved = f"{rpn['rows_moved']} of {rpn['anchors']} rows moved, Detectron2 row k <- row {rpn['permutation']}[k]"
        print(f"  RPN anchor rows: {moved if rpn['reordered'] else 'not moved'} ({rpn['source']})")
    for k, why in report["ignored"]:
        print(f"  ignored {k}: {why}")
    for k, new in report["unmapped"]:
        print(f"  unmapped {k} -> kept as {new}")
    for note in report.get("notes", []):
        print(f"  note: {note}")
    if report.get("detectron2_settings"):
        print("  Detectron2 config for these weights: " + ", ".join(f"{k}: {v}" for k, v in
                                                               report["detectron2_settings"].items()))


# --------------------------------------------------------------------------------------------------
# audit
# --------------------------------------------------------------------------------------------------
def _audit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help=".pkl or .pth (a Detectron checkpoint is converted first)")
    p.add_argument("--expected", required=True, help="JSON file: {name: shape} (or {'shapes': {...}})")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")


def _audit(args: argparse.Namespace) -> int:
    try:
        _check_input(args.checkpoint, "a .pkl or .pth checkpoint")
        _check_input(args.expected, "a JSON spec of parameter names and shapes")
        ck = Ck.load_checkpoint(args.checkpoint)
        tensors = ck.tensors
        if ck.format.startswith(("detectron ", "torchvision ")):
            tensors, _ = Ck.convert_checkpoint(ck)
        res = Ck.audit(tensors, args.expected)
    except (ValueError, OSError) as e:
        return _fail(e)
    if args.json:
        print(json.dumps(res, indent=1, default=list))
    else:
        _print_audit(res)
    return 0 if res["ok"] else 1


def _print_audit(res: Dict[str, Any]) -> None:
    print(f"matched {res['matched']} parameters; {len(res['mismatched'])} shape mismatches, {len(res['missing'])} missing, "
          f"{len(res['unexpected'])} unexpected")
    for k, e, g, w, cause in res["mismatched"]:
        print(f"  MISMATCH {e}: checkpoint {g} (as {k}), model {w}: {cause}")
    for e, shape, cause in res["missing"]:
        print(f"  MISSING  {e} {shape}: {cause}")
    for k, shape, cause in res["unexpected"]:
        print(f"  UNEXPECTED {k} {shape}: {cause}")
    for k, shape, note in res.get("warnings", []):
        print(f"  WARNING  {k} {shape}: {note}")
    print("OK" if res["ok"] else "PROBLEMS FOUND")


# --------------------------------------------------------------------------------------------------
# diagnose
# --------------------------------------------------------------------------------------------------
def _diagnose_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("reference", help="COCO results JSON of the original model")
    p.add_argument("candidate", help="COCO results JSON of the converted model")
    p.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    p.add_argument("--image-size", nargs=2, type=int, metavar=("H", "W"),
                   help="image height and width (lets the evidence recognise swapped height and width)")
    p.add_argument("--html", metavar="REPORT.HTML",
                   help="also write the diagnosis as a self-contained page (causes, evidence, fixes, figures)")
    p.add_argument("--gt", metavar="ANNOTATIONS.JSON",
                   help="COCO instances or keypoints ground truth: add what each cause costs in AP (COCOeval)")
    p.add_argument("--agreement", nargs="?", type=float, const=0.5, metavar="SCORE",
                   help="without --gt: measure agreement AP, the reference's detections scored >= SCORE (default "
                        "0.5) taken as ground truth")
    p.add_argument("--images", metavar="FOLDER",
                   help="with --html: the folder of the ground truth's file_name images, drawn under the gallery")


def _diagnose(args: argparse.Namespace) -> int:
    what = "a COCO results JSON file, a list of detections"
    try:
        _check_input(args.reference, what)
        _check_input(args.candidate, what)
        size = tuple(args.image_size) if args.image_size else None
        if args.html is not None and Path(args.html).resolve() in (Path(args.reference).resolve(),
                                                                   Path(args.candidate).resolve()):
            raise ValueError(f"{args.html}: the report must not overwrite an input file")
        if args.gt is not None and args.agreement is not None:
            raise ValueError("--gt and --agreement: give one (AP against ground truth, or agreement AP), not both")
        if args.gt is not None:
            _check_input(args.gt, "COCO annotations (an object with images, annotations and categories)")
        d = Dx.diagnose(args.reference, args.candidate, image_size=size, gt=args.gt, agreement_score=args.agreement)
        if args.html is not None:
            from explainer.viz.report import write_report  # matplotlib only when a report is asked for

            write_report(d, args.html, images=args.images)
    except RecursionError:  # which file is nested too deeply: the bounded reader says
        try:
            for path in (args.reference, args.candidate):
                read_json(path, what)
        except ValueError as e:
            return _fail(e)
        return _fail(f"{args.reference}, {args.candidate}: nested too deeply ({what} is expected)")
    except MemoryError:
        return _fail(f"{args.reference}, {args.candidate}: comparing them needs more memory than this process may "
                     f"use (free memory, or split the files by image)")
    except (ValueError, OSError) as e:
        return _fail(e)
    print(json.dumps(d.to_dict(), indent=2) if args.json else d.summary())
    return 0 if d.names == ["identical"] else 1


# --------------------------------------------------------------------------------------------------
# trace
# --------------------------------------------------------------------------------------------------
def _trace_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("reference", help="dump of the original run (.npz, or a .pt dict of tensors)")
    p.add_argument("candidate", help="dump of the converted run (.npz, or a .pt dict of tensors)")
    p.add_argument("--map", dest="map_path", metavar="NAMES.JSON",
                   help="JSON object {reference stage: candidate stage} for stages named differently")
    p.add_argument("--onnx", dest="onnx_path", metavar="MODEL.ONNX",
                   help="the .onnx file the candidate ran (as torch.onnx.export wrote it): recorded module "
                        "stages pair with its values by the module scopes in its node names")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _trace(args: argparse.Namespace) -> int:
    try:
        for path in (args.reference, args.candidate):
            _check_input(path, "a .npz or .pt dump of stage tensors")
        if args.map_path:
            _check_input(args.map_path, "a JSON object {reference stage: candidate stage}")
        if args.onnx_path:
            _check_input(args.onnx_path, "the .onnx file the candidate ran")
    except ValueError as e:
        return _fail(e)
    return trace.trace_command(args.reference, args.candidate, args.map_path, as_json=args.json,
                               onnx_path=args.onnx_path)


# --------------------------------------------------------------------------------------------------
# the parser
# --------------------------------------------------------------------------------------------------
#: name -> (help, description, add the arguments, run); the order of ``--help``.
COMMANDS: Dict[str, Tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "convert": ("convert a Detectron (or torchvision, or maskrcnn-benchmark) checkpoint to Detectron2 (the input is "
                "never modified)",
                "Write the Detectron2 checkpoint atomically (nothing half-written is ever left). Exit codes: 0 "
                "written, 2 bad input (an existing output without --force included), 130 interrupted, 143 "
                "terminated.",
                _convert_arguments, _convert),
    "audit": ("compare a checkpoint's names and shapes with what a model expects",
              "Exit codes: 0 everything loads, 1 problems found, 2 bad input, 130 interrupted, 143 terminated.",
              _audit_arguments, _audit),
    "diagnose": ("explain why two sets of detections (COCO result JSON files) differ",
                 "Match the candidate's detections to the reference's and name the convention mistakes "
                 "that explain the differences. Exit codes: 0 identical, 1 differences explained, 2 bad input, "
                 "130 interrupted, 143 terminated.",
                 _diagnose_arguments, _diagnose),
    "trace": ("find the first stage where two runs of a network diverge, and why",
              "Compare two dumps of a network's stages (.npz, or a .pt dict of tensors) in the reference's order and "
              "name the first divergence and its cause. Exit codes: 0 no divergence, 1 a divergence with its causes, "
              "2 bad input, 130 interrupted, 143 terminated.",
              _trace_arguments, _trace),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command in :data:`COMMANDS`."""
    parser = _Parser(prog="python -m explainer",
                     description="Detectron vs Detectron2: convert and audit checkpoints, diagnose differing detections, "
                                 "find where two runs of a network diverge.",
                     epilog=EXIT_CODES + " Bad input is reported in one line: error: <file>: <what> (<what to do>).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, description, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=description)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; returns its exit code (2 and the help when no command is given).

    Ctrl-C returns 130 without a traceback; SIGTERM exits with 143 (``SystemExit``) once the ``finally`` clauses
    have run, so that a file being written is removed (:func:`explainer.checkpoints.exit_on_sigterm`). Any other
    unexpected exception is reported in one line with exit code 2.
    """
    try:
        with Ck.exit_on_sigterm(TERMINATED):
            parser = build_parser()
            args = parser.parse_args(argv)
            if not getattr(args, "run", None):
                parser.print_help()
                return BAD_INPUT
            return int(args.run(args))
    except KeyboardInterrupt:
        return INTERRUPTED
    except (ValueError, OSError) as e:  # a command that let one through: still one line
        return _fail(e)
    except Exception as e:  # never a traceback for a user; EXPLAINER_TRACEBACK=1 shows it
        if os.environ.get("EXPLAINER_TRACEBACK"):
            traceback.print_exc()
        return _fail(f"unexpected {type(e).__name__}: {e} (this is a bug in explainer; set EXPLAINER_TRACEBACK=1 "
                     "to see where it happened)")


if __name__ == "__main__":
    sys.exit(main())
