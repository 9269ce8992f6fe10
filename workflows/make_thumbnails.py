"""Run every shipped workflow as a user would, time it, and refresh the pictures that ship with it.

    .venv/bin/python workflows/make_thumbnails.py [NAME ...]

For each workflow: ``guidegraph run workflows/NAME.api.json`` (wall-clock seconds, CLI start-up
included; the Stable Diffusion workflows, run here on tiny random-weight checkpoints named as they
expect, at ``SD_SMOKE_SIZE`` pixels: see workflows/README.md), then ``workflows/NAME.jpg`` (the
editor's template thumbnail, at most 320 px wide) from the PNG it wrote; the showcase's grid is
also copied to ``workflows/showcase.png`` (the README's picture). Prints a Markdown table of the
run times for workflows/README.md.
"""

from __future__ import annotations

import json
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
SD_SMOKE_SIZE = 64


def smoke_settings(name: str) -> list[str]:
    """``--set`` options that shrink an SD workflow's image to SD_SMOKE_SIZE (tiny random weights)."""
    if not name.startswith("sd"):
        return []
    prompt = json.loads((HERE / f"{name}.api.json").read_text(encoding="utf-8"))
    latents = [i for i, node in prompt.items() if node["class_type"] == "EmptyLatent"]
    return [f"--set={i}.{side}={SD_SMOKE_SIZE}" for i in latents for side in ("width", "height")]


def run(name: str, output: Path) -> tuple[float, Path]:
    """Run one workflow through the CLI; its wall time and the PNG it reports writing."""
    start = time.perf_counter()
    done = subprocess.run(
        [str(CLI), "run", str(HERE / f"{name}.api.json"), "--output", str(output), *smoke_settings(name)],
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
