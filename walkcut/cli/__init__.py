"""The ``walkcut`` command: a thin dispatcher over subcommand modules.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds a parser and
sets ``func`` (a callable taking the parsed arguments and returning an exit code). Modules are
imported here only for their parsers: they must not import torch at module level (``walkcut export``
imports it inside its ``func``). Every ``func`` runs under the one error policy of
:mod:`walkcut.cli.errors`; shared option types live in :mod:`walkcut.cli.args`.
"""

from __future__ import annotations

import importlib
import logging
import sys

from walkcut import __version__
from walkcut.cli.args import check_arguments, process_settings
from walkcut.cli.errors import EXIT_USAGE, Parser, error, quiet_native_libraries, run_command

#: Subcommand modules, in the order ``walkcut --help`` lists them.
SUBCOMMAND_MODULES = (
    "walkcut.cli.segment",
    "walkcut.cli.batch",
    "walkcut.cli.video",
    "walkcut.cli.eval",
    "walkcut.cli.bench",
    "walkcut.cli.export",
)


def build_parser() -> Parser:
    parser = Parser(
        prog="walkcut",
        description="Training-free segmentation by random-walk Normalized Cuts.",
        epilog="Errors are one line on stderr; --debug adds the traceback. Exit codes: 0 done, "
               "1 some inputs failed, 2 bad arguments or a model that cannot run, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"walkcut {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv: debug, with tracebacks)")
    parser.add_argument("--debug", action="store_true", help="debug log output and tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.subcommands = {}
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
    parser.subcommands = dict(sub.choices)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``walkcut ARGV``; return the exit code (``--help`` and usage errors included)."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            # Reported by the subcommand's parser, so the message points at its own --help.
            command = parser.subcommands.get(getattr(args, "command", None), parser)
            command.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help, --version (0) or a usage error already printed (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = args.debug or args.verbose > 0
    logging.basicConfig(
        level=logging.DEBUG if args.debug else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="walkcut: %(levelname)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    problem = check_arguments(args)
    if problem:
        error(f"{problem} (see `walkcut {args.command} --help`)")
        return EXIT_USAGE
    quiet_native_libraries(verbose=args.verbose + 2 * args.debug)
    with process_settings(args):
        return run_command(args.func, args, debug=debug)


if __name__ == "__main__":
    raise SystemExit(main())
