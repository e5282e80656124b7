"""argparse types that check a number's type and range, so a bad flag ends in one line naming it (no torch here)."""
from __future__ import annotations

import argparse
import math
from typing import Any, Callable


def number(kind: type, low: float | None = None, high: float | None = None) -> Callable[[str], float]:
    """`type=number(int, 1)`: an int >= 1; argparse names the flag in its error."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse's message says "invalid int value" for ValueErrors
    return parse


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line naming the flag, like every other error of the CLI."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def given(args: argparse.Namespace, **fields: str) -> dict[str, Any]:
    """{field: args.<flag>} for each flag the user gave (not None). Such flags have no argparse default, so a flag
    left out takes its dataclass's default, which lives only there."""
    return {field: getattr(args, flag) for field, flag in fields.items() if getattr(args, flag) is not None}
