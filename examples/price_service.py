"""A pricing service and its clients: request/reply and surveys on the bus.

    python examples/price_service.py serve           # a pricer; start as many as you like
    python examples/price_service.py ask AAPL        # one price, from one live pricer
    python examples/price_service.py ask AAPL -n 4   # four requests: pricers take turns
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
FAILURES = (nanomitter.NoResponders, nanomitter.RequestTimeout, nanomitter.RemoteError)


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

            where = bus.transport.address
            print(f"ready: {PRICER} {bus.id} on {where}, answering price", flush=True)
            async for signum in signals:
                print(f"{signal.Signals(signum).name}: stopping", flush=True)
                break
        print(f"stats: {bus.stats()}", flush=True)


async def ask(ticker: str, timeout: float, count: int) -> int:  # noqa: ASYNC109
    async with nanomitter.connect() as bus:
        for _ in range(count):  # one emitter asks in turn every pricer it knows (round robin)
            try:
                price = await bus.request("price", Quote(ticker), timeout=timeout, type=Price)
            except FAILURES as exc:
                print(f"{type(exc).__name__}: {exc}", flush=True)
                return 1
            print(f"{price.ticker} {price.price} from {price.pricer}", flush=True)
        return 0


async def survey(ticker: str, timeout: float) -> int:  # noqa: ASYNC109
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
    ask_one = commands.add_parser("ask", help="ask one pricer for a ticker's price")
    ask_all = commands.add_parser("survey", help="ask every pricer for a ticker's price")
    for command, timeout in ((ask_one, 2.0), (ask_all, 1.0)):
        command.add_argument("ticker", help=f"one of {', '.join(PRICES)} (others fail)")
        command.add_argument("--timeout", type=float, default=timeout, help="in seconds")
    ask_one.add_argument("-n", "--count", type=int, default=1, help="requests to send")
    args = parser.parse_args()
    if args.command == "serve":
        anyio.run(serve)
    elif args.command == "ask":
        raise SystemExit(anyio.run(ask, args.ticker, args.timeout, args.count))
    else:
        raise SystemExit(anyio.run(survey, args.ticker, args.timeout))


if __name__ == "__main__":
    main()
