"""The ``tidings`` command's entry point.

A Ctrl-C while the command line's modules are still being imported (its first half
second) ends the command quietly, as one later does, instead of printing the traceback of
whichever import it interrupted."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    try:
        from tidings.cli import main as run
    except KeyboardInterrupt:
        sys.exit(130)
    run()
