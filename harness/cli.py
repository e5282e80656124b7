"""The `fineked` command line. Each subcommand lives in the module that owns it; this file only wires them.

Known bad input (unknown editor/model, malformed record, dead endpoint, missing file) ends in one
line on stderr naming the fix, exit status 2. `--debug` shows the traceback instead.
"""
from __future__ import annotations

import importlib
import logging
import os
import signal
import sys

from common.args import OneLineParser

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# module -> it defines add_parsers(subparsers); each parser sets `func(args) -> int | None`.
COMMAND_MODULES = [
    "fineked.commands",  # endpoint, build, publish
    "harness.commands",  # run, report, leaderboard, demo
    "harness.krd_cli",  # train-krd
    "harness.demo",  # demo
]


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's input at fault: shown as one line, not a traceback."""
    errs: list[type[BaseException]] = [FileNotFoundError, NotADirectoryError, PermissionError]
    for mod, names in [("fineked.records", ["RecordError", "DataFileError"]), ("editors.locate.stats", ["StatsError"]), ("editors.registry", ["UnknownEditor", "BadEditor"]),
                       ("editors.models", ["ModelLoadError"]), ("editors.placement", ["PlacementError"]), ("editors.hparams", ["HparamsError"]),
                       ("editors.adapters", ["UnknownModelFamily"]), ("fineked.sparql", ["SparqlError"]),
                       ("harness.errors", ["UserError"]),
                       ("editors.dike.checkpoint", ["KRDCheckpointError"])]:
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        errs += [getattr(m, n) for n in names if hasattr(m, n)]
    return tuple(errs)


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="fineked", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for mod in COMMAND_MODULES:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
            continue
        m.add_parsers(sub)
    return parser


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C: context managers stop the Oxigraph server, release the run folder's lock, ...
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # recorded in run manifests
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("fineked: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except user_errors() as exc:
        if args.debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"fineked {args.command}: error: {msg}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
