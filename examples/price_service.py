"""A pricing service and its clients: request/reply and surveys on the bus.

    python examples/price_service.py serve           # a pricer; start as many as you like
    python examples/price_service.py ask AAPL        # one price, from one live pricer
    python examples/price_service.py survey AAPL     # every pricer's price

The bus is ``$NANOMITTER_URL``, else ``tcp://127.0.0.1:55555`` (nng: the first process binds
and is the hub, later ones connect). ``PRICER=pricer-2`` names a pricer (default ``pricer``).
``serve`` stops cleanly on Ctrl-C or SIGTERM; ``ask`` and ``survey`` exit when answered: 0 on
success, 1 when no pricer answered or the pricer failed (an unknown ticker, say).
"""

from __future__ import annotations

import argparse
import os
import signal

import anyio
import msgspec

import nanomitter

PRICER = os.environ.get("PRICER", "pricer")
PRICES = {"AAPL": 251.3, "MSFT": 411.6, "NVDA": 181.2}


class Quote(msgspec.Struct):
    """What a client asks for: the request's data, validated by the responder."""

    ticker: str


class Price(msgspec.Struct):
    """What a pricer answers."""

    ticker: str
    price: float
    pricer: str


async def serve() -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with nanomitter.connect(service=PRICER) as bus:

            @bus.responder("price", type=Quote)  # event.data arrives as a Quote
            def price(event: nanomitter.DistributedEvent) -> Price:
                quote: Quote = event.data
                if quote.ticker not in PRICES:  # goes back to the client as a RemoteError
                    raise LookupError(f"no price for {quote.ticker}")
                return Price(quote.ticker, PRICES[quote.ticker], PRICER)

            print(f"ready: {PRICER} {bus.id} on {bus.transport.address}, answering price", flush=True)
            async for signum in signals:
                print(f"{signal.Signals(signum).name}: stopping", flush=True)
                break
        print(f"stats: {bus.stats()}", flush=True)


async def ask(ticker: str, timeout: float) -> int:  # noqa: ASYNC109 (passed on to request)
    async with nanomitter.connect() as bus:
        try:
            price = await bus.request("price", Quote(ticker), timeout=timeout, type=Price)
        except (nanomitter.NoResponders, nanomitter.RequestTimeout, nanomitter.RemoteError) as exc:
            print(f"{type(exc).__name__}: {exc}", flush=True)
            return 1
        print(f"{price.ticker} {price.price} from {price.pricer}", flush=True)
        return 0


async def survey(ticker: str, timeout: float) -> int:  # noqa: ASYNC109 (passed on to survey)
    async with nanomitter.connect() as bus:
        replies = await bus.survey("price", Quote(ticker), timeout=timeout)
        for reply in replies:
            who = f"{reply.service} ({reply.sender})"
            print(f"{who}: {reply.error or reply.data['price']}", flush=True)
        print(f"{len(replies)} pricer(s) answered", flush=True)
        return 0 if replies else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="answer price requests until Ctrl-C or SIGTERM")
    for name, default, what in (("ask", 2.0, "one pricer"), ("survey", 1.0, "every pricer")):
        command = commands.add_parser(name, help=f"ask {what} for a ticker's price")
        command.add_argument("ticker", help=f"one of {', '.join(PRICES)} (others fail)")
        command.add_argument("--timeout", type=float, default=default, help="seconds")
    args = parser.parse_args()
    if args.command == "serve":
        anyio.run(serve)
    else:
        client = ask if args.command == "ask" else survey
        raise SystemExit(anyio.run(client, args.ticker, args.timeout))


if __name__ == "__main__":
    main()
