"""Run every shipped workflow as a user would, time it, and refresh the pictures that ship with it.

    .venv/bin/python workflows/make_thumbnails.py [NAME ...]

For each workflow: ``guidegraph run workflows/NAME.api.json`` (wall-clock seconds, CLI start-up
included), then ``workflows/NAME.jpg`` (the editor's template thumbnail, at most 320 px wide) from
the PNG it wrote; the showcase's grid is also copied to ``workflows/showcase.png`` (the README's
picture). Prints a Markdown table of the run times for workflows/README.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
CLI = Path(sys.executable).with_name("guidegraph")
THUMB_WIDTH = 320


def run(name: str, output: Path) -> tuple[float, Path]:
    """Run one workflow through the CLI; its wall time and the PNG it reports writing."""
    start = time.perf_counter()
    done = subprocess.run(
        [str(CLI), "run", str(HERE / f"{name}.api.json"), "--output", str(output)],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stdout}{done.stderr}")
    written = re.findall(r"^\s+wrote (.+\.png)$", done.stdout, re.M)
    if len(written) != 1:
        raise SystemExit(f"{name}: expected one PNG, the run reported {written}")
    return seconds, Path(written[0])


def thumbnail(png: Path, target: Path) -> None:
    with Image.open(png) as image:
        rgb = image.convert("RGB")
        if rgb.width > THUMB_WIDTH:
            height = round(rgb.height * THUMB_WIDTH / rgb.width)
            rgb = rgb.resize((THUMB_WIDTH, height), Image.Resampling.LANCZOS)
        rgb.save(target, "JPEG", quality=88)


def main(names: list[str]) -> None:
    names = names or sorted(p.name.removesuffix(".api.json") for p in HERE.glob("*.api.json"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            seconds, png = run(name, Path(tmp))
            thumbnail(png, HERE / f"{name}.jpg")
            if name == "showcase":
                shutil.copyfile(png, HERE / "showcase.png")
            rows.append((name, seconds))
            print(f"{name}: {seconds:.1f} s", file=sys.stderr, flush=True)
    print("| workflow | seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| `{name}` | {seconds:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
