"""``fastmesh check CONFIG``: validate a linkerd config without starting anything.

Exit status: 0 when the config is valid (prints ``ok: <n> routers (<labels>), <m> namers``
on stdout, and any warnings on stderr); 1 when it is invalid or unreadable (prints the
:class:`ConfigError`, ``<yaml path>: <reason>``, on stderr); 2 for bad command-line usage
(argparse's convention). No port is bound and nothing is resolved.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .errors import ConfigError
from .root import load_config

__all__ = ["add_check_arguments", "run_check", "main_check", "EXIT_OK", "EXIT_INVALID"]

EXIT_OK = 0
EXIT_INVALID = 1


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``check`` subcommand's arguments to ``parser``."""
    parser.add_argument("config", metavar="CONFIG",
                        help="linkerd 1.x config file (YAML or JSON); '-' reads stdin")


def run_check(args: argparse.Namespace) -> int:
    """Validate ``args.config``; print the outcome; return the exit status (0 or 1)."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{args.config}: invalid config: {exc}" if not exc.path else str(exc),
              file=sys.stderr)
        return EXIT_INVALID
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    labels = ", ".join(router.label for router in config.routers)
    print(f"ok: {len(config.routers)} routers ({labels}), {len(config.namers)} namers")
    return EXIT_OK


def main_check(argv: Sequence[str] | None = None) -> int:
    """``python -m fastmesh.config CONFIG``: the check command on its own."""
    parser = argparse.ArgumentParser(prog="python -m fastmesh.config",
                                     description="Validate a linkerd 1.x config for fastmesh.")
    add_check_arguments(parser)
    return run_check(parser.parse_args(argv))
