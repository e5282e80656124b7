"""The `fineked` command line. Each subcommand lives in the module that owns it; this file only wires them.

Known bad input (unknown editor/model, malformed record, dead endpoint, missing file) ends in one
line on stderr naming the fix, exit status 2. `--debug` shows the traceback instead.
"""
from __future__ import annotations

import logging
import os
import signal
import sys

from common.args import OneLineParser
from fineked import commands as fineked_commands
from harness import commands, demo, krd_cli

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's input at fault: shown as one line, not a traceback.

    Imported here, when an error is being handled, so that `fineked --help` does not load torch."""
    from editors.adapters import UnknownModelFamily
    from editors.dike.checkpoint import KRDCheckpointError
    from editors.hparams import HparamsError
    from editors.locate.stats import StatsError
    from editors.models import ModelLoadError
    from editors.placement import PlacementError
    from editors.registry import BadEditor, UnknownEditor
    from fineked.records import DataFileError, RecordError
    from fineked.sparql import SparqlError
    from harness.errors import UserError

    return (FileNotFoundError, NotADirectoryError, PermissionError, RecordError, DataFileError, StatsError,
            UnknownEditor, BadEditor, ModelLoadError, PlacementError, HparamsError, UnknownModelFamily, SparqlError,
            UserError, KRDCheckpointError)


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="fineked", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    fineked_commands.add_parsers(sub)  # endpoint, build, publish
    commands.add_parsers(sub)  # run, report, leaderboard
    krd_cli.add_parsers(sub)  # train-krd
    demo.add_parsers(sub, run_cli=main)  # demo: runs the other subcommands through main
    return parser


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C: context managers stop the Oxigraph server, release the run folder's lock, ...
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    # put the old handler back: tests and the demo call main() in-process, which must not keep ours afterwards
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
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
