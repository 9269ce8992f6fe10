"""Server soak: does the server's memory settle under sustained load, or keep growing?

Run: ``.venv/bin/python -m benchmarks.soak [--rounds 6] [--seconds 45] [--sockets 50] [--posters 20]
[--rate 4]``. Each round, ``sockets`` fresh WebSocket clients connect and read everything they are
sent while ``posters`` clients queue prompts, each at most ``rate`` per second (below what the server
completes, so the queue stays short and a round stays a round); at the end of the round every socket
closes, the queue drains, and the server's RSS is read (each row is printed when its round ends).
The server is a subprocess over the tiny test nodes (as in ``benchmarks.server``), so what is
measured is the server: HTTP, validation, SQLite, the worker, the WebSocket fan-out and connection
churn. Prints Markdown for ``benchmarks/results/soak.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time

import aiohttp

from benchmarks.server import prompt, rss_mib, serving, wait_idle


async def one_round(
    url: str, index: int, seconds: float, sockets: int, posters: int, rate: float
) -> tuple[int, int]:
    """(prompts accepted, WebSocket messages received) in one round."""
    stop = time.monotonic() + seconds
    received = 0
    accepted = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def listen(n: int) -> None:
            nonlocal received
            async with session.ws_connect(f"{url}/ws?clientId=r{index}s{n}") as ws:
                while time.monotonic() < stop:
                    try:
                        await ws.receive(timeout=0.5)
                        received += 1
                    except TimeoutError:
                        continue

        async def post(n: int) -> None:
            nonlocal accepted
            count = 0
            while time.monotonic() < stop:
                value = index * 1_000_000 + n * 10_000 + count
                body = {"prompt": prompt(value), "client_id": f"r{index}s{n % sockets}"}
                sent = time.monotonic()
                async with session.post(f"{url}/prompt", json=body) as response:
                    accepted += response.status == 200
                    await response.read()
                count += 1
                await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - sent)))

        await asyncio.gather(*(listen(n) for n in range(sockets)), *(post(n) for n in range(posters)))
        await wait_idle(session, url)
    return accepted, received


async def main_async(args: argparse.Namespace) -> None:
    print(
        f"Soak ({platform.machine()}, Python {sys.version.split()[0]}): {args.rounds} rounds of "
        f"{args.seconds:.0f} s, {args.sockets} WebSocket clients + {args.posters} posters "
        f"(each at most {args.rate:g} prompts/s).\n"
    )
    async with serving(0.02) as (url, pid):
        print(f"Server RSS at start: {rss_mib(pid):.0f} MiB\n")
        print("| round | seconds | prompts | prompts so far | ws messages | RSS after (MiB) |")
        print("|---|---|---|---|---|---|", flush=True)
        total = 0
        for index in range(1, args.rounds + 1):
            began = time.monotonic()
            accepted, received = await one_round(
                url, index, args.seconds, args.sockets, args.posters, args.rate
            )
            total += accepted
            await asyncio.sleep(1.0)
            took = time.monotonic() - began
            print(
                f"| {index} | {took:.0f} | {accepted} | {total} | {received} | {rss_mib(pid):.0f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--sockets", type=int, default=50)
    parser.add_argument("--posters", type=int, default=20)
    parser.add_argument("--rate", type=float, default=4.0, help="prompts per second per poster, at most")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
