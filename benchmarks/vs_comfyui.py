"""guidegraph and ComfyUI side by side: the same client workloads against both, interleaved.

Run: ``COMFYUI_DIR=/path/to/ComfyUI [COMFYUI_PYTHON=/path/to/its/python] .venv/bin/python -m
benchmarks.vs_comfyui [--rounds 3] [--seconds 10] [--chain 1000] [--out benchmarks/results/vs_comfyui.md]``.

ComfyUI is GPL-3: it is never vendored or installed by this project. Give a checkout of your own in
``COMFYUI_DIR`` (and the Python of the environment it runs in, with its requirements, in
``COMFYUI_PYTHON``); without one, the script says so and measures guidegraph alone.

Both servers start fresh in temporary folders and stay up for the whole run, each on the CPU (ComfyUI
with ``--cpu``). Each workload runs once per round on each server, the order alternating per round,
and the table gives the medians and their ratio. The prompts are trivial and model-free, as a new
user would try first, and the same JSON goes to both servers: ``EmptyImage → SaveImage`` (ComfyUI's
core nodes, which guidegraph serves under the same names); no two prompts alike (image size, colour
and file prefix), so neither server's cache can skip the work. The chain is
``EmptyImage → ImageInvert × N → SaveImage``. ``--guidegraph-prompt own`` gives guidegraph its own
nodes instead, as this benchmark did before guidegraph had EmptyImage: ``Model → EmptyLatent → Decode
→ SaveImage`` with the shipped pixel-space shapes model (loaded once, then cached), its chain
``... Decode → ImageBatch × N → SaveImage`` (an ImageBatch of one input passes it on).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.load import PromptFn, burst, closed_loop, fsync_ms, one_big_prompt, rss_mib, wait_until_up
from tests.server.test_restart import ROOT, free_port


def size(i: int) -> tuple[int, int, str]:
    """Width, height and file prefix of the i-th prompt: 1,024 sizes (multiples of 8, as the shapes
    model needs) times a prefix per 1,024 prompts, so no two prompts are the same."""
    return 8 * (1 + i % 32), 8 * (1 + (i // 32) % 32), f"b{i // 1024}"


def guidegraph_prompt(i: int) -> dict[str, Any]:
    width, height, prefix = size(i)
    return {
        "1": {
            "class_type": "Model",
            "inputs": {"checkpoint": "shapes_unet.safetensors", "prediction": "auto", "weight_dtype": "auto"},
        },
        "2": {
            "class_type": "EmptyLatent",
            "inputs": {"model": ["1", 0], "width": width, "height": height, "batch_size": 1},
        },
        "3": {"class_type": "Decode", "inputs": {"latent": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}},
    }


def comfyui_prompt(i: int) -> dict[str, Any]:
    width, height, prefix = size(i)
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": height, "batch_size": 1, "color": i % 0xFFFFFF},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def guidegraph_chain(n: int, i: int) -> dict[str, Any]:
    prompt = guidegraph_prompt(i)
    source = "3"
    for k in range(n):  # ImageBatch of one input passes its batch on
        prompt[f"b{k}"] = {"class_type": "ImageBatch", "inputs": {"images_1": [source, 0]}}
        source = f"b{k}"
    prompt["4"]["inputs"]["images"] = [source, 0]
    return prompt


def comfyui_chain(n: int, i: int) -> dict[str, Any]:
    prompt = comfyui_prompt(i)
    source = "1"
    for k in range(n):
        prompt[f"i{k}"] = {"class_type": "ImageInvert", "inputs": {"image": [source, 0]}}
        source = f"i{k}"
    prompt["2"]["inputs"]["images"] = [source, 0]
    return prompt


@dataclass
class Server:
    name: str
    url: str
    pid: int
    prompt: PromptFn
    chain: Callable[[int, int], dict[str, Any]]


@contextlib.asynccontextmanager
async def guidegraph_server(tmp: Path, own_prompt: bool) -> AsyncIterator[Server]:
    port = free_port()
    command = [sys.executable, "-m", "graph_runtime.cli", "serve", "--port", str(port)]
    command += ["--data-dir", str(tmp / "user"), "--workflows-dir", str(ROOT / "workflows")]
    async with _process(command, ROOT, port) as (url, pid):
        if own_prompt:
            yield Server("guidegraph", url, pid, guidegraph_prompt, guidegraph_chain)
        else:
            yield Server("guidegraph", url, pid, comfyui_prompt, comfyui_chain)


@contextlib.asynccontextmanager
async def comfyui_server(
    tmp: Path, root: Path, python: str, torch_threads: int | None
) -> AsyncIterator[Server]:
    (tmp / "custom_nodes").mkdir(parents=True)
    port = free_port()
    command = [python, str(root / "main.py"), "--cpu", "--port", str(port), "--listen", "127.0.0.1"]
    command += ["--disable-auto-launch", "--base-directory", str(tmp), "--verbose", "WARNING"]
    command += ["--database-url", f"sqlite:///{tmp / 'comfyui.db'}"]
    env = None if torch_threads is None else {**os.environ, "OMP_NUM_THREADS": str(torch_threads)}
    async with _process(command, root, port, env) as (url, pid):
        yield Server("ComfyUI", url, pid, comfyui_prompt, comfyui_chain)


@contextlib.asynccontextmanager
async def _process(
    command: list[str], cwd: Path, port: int, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[str, int]]:
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                await wait_until_up(url, proc)
            except (RuntimeError, TimeoutError):
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace")[-3000:])
                raise
            yield url, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


Workload = Callable[[Server, int], Awaitable[dict[str, float]]]


async def interleaved(
    servers: list[Server], rounds: int, workload: Workload
) -> dict[str, list[dict[str, float]]]:
    """Run ``workload`` once per round on each server, alternating which goes first."""
    results: dict[str, list[dict[str, float]]] = {s.name: [] for s in servers}
    for r in range(rounds):
        for server in servers if r % 2 == 0 else servers[::-1]:
            results[server.name].append(await workload(server, r))
            print(f"  {server.name} round {r + 1}: {results[server.name][-1]}", file=sys.stderr, flush=True)
    return results


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


async def main_async(args: argparse.Namespace) -> list[str]:
    comfy_dir = os.environ.get("COMFYUI_DIR")
    comfy_python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    load_start = os.getloadavg()[0]
    lines = [
        f"## guidegraph vs ComfyUI ({platform.machine()}, Python {platform.python_version()}, CPU only)\n"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        async with contextlib.AsyncExitStack() as stack:
            servers = [
                await stack.enter_async_context(
                    guidegraph_server(Path(tmp) / "guidegraph", args.guidegraph_prompt == "own")
                )
            ]
            if comfy_dir:
                root = Path(comfy_dir).resolve()
                servers.append(
                    await stack.enter_async_context(
                        comfyui_server(Path(tmp) / "comfyui", root, comfy_python, args.comfyui_torch_threads)
                    )
                )
                threads = args.comfyui_torch_threads
                how = "its default torch threads" if threads is None else f"OMP_NUM_THREADS={threads}"
                lines.append(
                    f"ComfyUI from `{root}` (Python `{comfy_python}`, {how}), side by side with this"
                    " checkout.\n"
                )
            else:
                lines.append("COMFYUI_DIR is not set: guidegraph alone, no ratios.\n")
            if args.guidegraph_prompt == "own":
                lines.append(
                    "Prompts: ComfyUI `EmptyImage → SaveImage`, guidegraph its own `Model → EmptyLatent →"
                    " Decode → SaveImage` (`--guidegraph-prompt own`).\n"
                )
            else:
                lines.append("Prompts: the same `EmptyImage → SaveImage` JSON to both servers.\n")
            rss_start = {s.name: rss_mib(s.pid) for s in servers}

            async def loop(server: Server, r: int) -> dict[str, float]:
                return await closed_loop(
                    server.url, server.prompt, 20, args.seconds, first=1_000_000 * (r + 1)
                )

            async def bursts(server: Server, r: int) -> dict[str, float]:
                return await burst(server.url, server.prompt, 20, 500, first=100_000_000 + 1_000_000 * r)

            async def chain(server: Server, r: int) -> dict[str, float]:
                return await one_big_prompt(server.url, server.chain(args.chain, 7 + r), f"chain{r}")

            rows = [
                ("20 clients post and wait, completed prompts/s", loop, "completed_per_s", True),
                ("20 clients post and wait, p50 post → done (ms)", loop, "p50_ms", False),
                ("20 clients post and wait, p95 post → done (ms)", loop, "p95_ms", False),
                ("500 posted back to back, accepted/s", bursts, "accepted_per_s", True),
                ("500 posted back to back, completed/s", bursts, "completed_per_s", True),
                (f"chain of {args.chain:,} trivial nodes, POST → done (s)", chain, "seconds", False),
                (f"chain of {args.chain:,}, WebSocket bytes to the submitter (MB)", chain, "ws_bytes", False),
            ]
            measured: dict[Any, dict[str, dict[str, float]]] = {}
            for _, workload, _, _ in rows:
                if workload not in measured:
                    print(f"measuring {workload.__name__}", file=sys.stderr, flush=True)
                    runs = await interleaved(servers, args.rounds, workload)
                    measured[workload] = {name: medians(values) for name, values in runs.items()}
            rss_end = {s.name: rss_mib(s.pid) for s in servers}
            fsync = fsync_ms(Path(tmp))

    names = [s.name for s in servers]
    header = "| workload (median of rounds) | " + " | ".join(names)
    header += " | guidegraph ÷ ComfyUI (higher is better) |" if comfy_dir else " |"
    lines += [header, "|---" * (len(names) + 1 + bool(comfy_dir)) + "|"]
    for label, workload, key, higher_is_better in rows:
        values = [measured[workload][name][key] for name in names]
        scale = 1e6 if key == "ws_bytes" else 1
        cells = [f"{v / scale:.3g}" if v / scale < 100 else f"{v / scale:,.0f}" for v in values]
        if comfy_dir:
            ratio = values[0] / values[1] if higher_is_better else values[1] / values[0]
            cells.append(f"**{ratio:.2f}×**")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    rss = [f"{rss_start[n]:.0f} → {rss_end[n]:.0f}" for n in names]
    lines.append("| RSS at start → at the end (MiB) | " + " | ".join(rss) + (" | |" if comfy_dir else " |"))
    lines.append(
        f"\nMachine load (1-minute load average, {os.cpu_count()} CPUs): {load_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end; other people's jobs share this machine."
    )
    lines.append(
        f"\nDurable accepting: an fsync in the servers' folder takes {fsync:.2f} ms here (median of 50), so"
        f" 20 posters that each wait for their answer can be acknowledged at most {20 / fsync * 1000:,.0f}"
        " times a second by a server that commits a prompt before answering (guidegraph; ComfyUI answers"
        " from memory)."
    )
    lines.append(
        f"\n{args.rounds} rounds; each round runs every workload once on each server, alternating which goes"
        f" first; the closed loop lasts {args.seconds:g} s per round. Ratios: guidegraph's rate ÷ ComfyUI's,"
        " or ComfyUI's time ÷ guidegraph's, so above 1 means guidegraph is ahead."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="closed-loop length per round (default 10)"
    )
    parser.add_argument("--chain", type=int, default=1000, help="nodes in the chain workload (default 1000)")
    parser.add_argument(
        "--comfyui-torch-threads",
        type=int,
        default=None,
        help="start ComfyUI with OMP_NUM_THREADS set to this (default: its own default, every core);"
        " guidegraph serve leaves a core to its event loop by itself",
    )
    parser.add_argument(
        "--guidegraph-prompt",
        choices=("comfyui", "own"),
        default="comfyui",
        help="comfyui (default): guidegraph gets the same prompts as ComfyUI; own: its own Model →"
        " EmptyLatent → Decode → SaveImage",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()
    if not os.environ.get("COMFYUI_DIR"):
        print("COMFYUI_DIR is not set: measuring guidegraph alone (no ratios).", file=sys.stderr)
    lines = asyncio.run(main_async(args))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
