"""``avi-ht``: the one command-line tool for the offline work."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="avi-ht", description=__doc__)
    parser.add_subparsers(dest="command", metavar="<subcommand>")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
