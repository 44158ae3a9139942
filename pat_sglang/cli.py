"""The ``pat-sglang`` command. Subcommands are thin forwards to the modules that own them.

Role in pack-forward-merge: none; a front door for tools (``experiment``: the radix-cache replay of
``pat_sglang.experiments``). To add a subcommand, add an entry to ``FORWARDS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _experiment(argv: Sequence[str]) -> int:
    from .experiments.cli import main

    return main(argv)


# name -> (help, handler taking the remaining arguments); the handler parses its own options
FORWARDS: dict[str, tuple[str, Callable[[Sequence[str]], int]]] = {
    "experiment": ("replay a workload through SGLang's radix cache and measure PAT's KV traffic", _experiment),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in FORWARDS:
        return FORWARDS[args[0]][1](args[1:])
    parser = argparse.ArgumentParser(prog="pat-sglang", description="Prefix-aware decode attention for SGLang.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (text, _) in FORWARDS.items():
        sub.add_parser(name, help=text, add_help=False)
    parser.parse_args(args)  # only reached for --help or an unknown command: argparse prints and exits
    return 2


if __name__ == "__main__":
    sys.exit(main())
