"""The ``nnc`` command line tool."""

from __future__ import annotations

import argparse
import sys

import nnc_core


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnc", description="ISO/IEC 15938-17 Neural Network Coding")
    parser.add_argument("--version", action="version", version=f"nnc {nnc_core.__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
