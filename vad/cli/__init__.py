"""The `vad` command line: `jobs` runs jobs, `readers` reads results, `parser` binds them to sub-commands."""

from __future__ import annotations

import sys

from vad.cli.parser import build_parser
from vad.cli.readers import StorageUnreachable
from vad.console import setup_logging

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from vad.cluster import ClusterError
    from vad.config import ConfigError

    try:
        return args.func(args)
    except (ConfigError, ClusterError, StorageUnreachable, FileNotFoundError, ValueError) as exc:
        print(f"vad {args.command}: error: {exc}", file=sys.stderr)
        return 2
