"""``python -m nodes.training <recipe> ...``: the ``guidegraph train`` command without the console script."""

from __future__ import annotations

import argparse
import sys

from nodes.training.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodes.training", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
