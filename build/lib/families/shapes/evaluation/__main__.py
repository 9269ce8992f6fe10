"""``python -m families.shapes.evaluation ...``: ``guidegraph eval`` without the console script."""

from __future__ import annotations

import sys

from families.shapes.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
