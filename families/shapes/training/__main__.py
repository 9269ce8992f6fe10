"""``python -m families.shapes.training <recipe> ...``: ``guidegraph train`` without the console script."""

from __future__ import annotations

import argparse
import sys

from families.shapes.training.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m families.shapes.training", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
