"""A standalone hub for tests (any transport with roles): ``python tests/bus_hub.py URL``."""

from __future__ import annotations

import sys

import anyio

import nanomitter


async def main(url: str) -> None:
    async with nanomitter.connect(url, role="hub"):
        print("ready", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
