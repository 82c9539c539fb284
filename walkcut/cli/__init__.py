"""The ``walkcut`` command: a thin dispatcher over subcommand modules.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds a parser and
sets ``func`` (a callable taking the parsed arguments and returning an exit code). Modules are
imported here only for their parsers: they must not import torch at module level (``walkcut export``
imports it inside its ``func``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from walkcut import __version__

#: Subcommand modules, in the order ``walkcut --help`` lists them.
SUBCOMMAND_MODULES = (
    "walkcut.cli.segment",
    "walkcut.cli.batch",
    "walkcut.cli.video",
    "walkcut.cli.eval",
    "walkcut.cli.bench",
    "walkcut.cli.export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="walkcut",
        description="Training-free segmentation by random-walk Normalized Cuts.",
    )
    parser.add_argument("--version", action="version", version=f"walkcut {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Only a subcommand module that does not exist is skipped; a missing dependency inside
            # an existing module is a real error and propagates.
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="walkcut: %(levelname)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("walkcut: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
