#!/usr/bin/env python
"""Live trading through CCXTBroker: orders really go to an exchange.

Offline by default: the package's local exchange replays real Binance candles on 127.0.0.1
and trades (signed REST, a matching engine, the user-data stream) for an account it creates.
The strategy buys on one live bar and sells on the next; at the end the exchange's own ledger
is compared with what the broker saw. On the Binance spot testnet (never real money from a
sample):

    python samples/live_broker.py --exchange binance --config @testnet-keys.json

with ``{"apiKey": "...", "secret": "..."}`` in the file (docs/broker.md, "Testnet before real
money"). Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import json

import backtrader as bt

from backtrader_ccxt import CCXTStore, run_live
from backtrader_ccxt.localexchange import LocalExchange


class BuyThenSell(bt.Strategy):
    """Buy ``size`` on odd live bars, sell it on even ones; stop after ``live_bars``."""

    params = (("size", 0.001), ("live_bars", 4))

    def __init__(self) -> None:
        self.live = False
        self.live_seen = 0

    def notify_data(self, data, status, *args, **kwargs) -> None:
        print(f"status {data._name}: {data._getstatusname(status)}", flush=True)
        self.live = status == data.LIVE

    def notify_order(self, order) -> None:
        side = "BUY" if order.isbuy() else "SELL"
        line = f"order  {side} {order.getstatusname()}"
        if order.status in (order.Partial, order.Completed):
            line += f" {order.executed.size:g} @ {order.executed.price:.2f}"
        print(line, flush=True)

    def next(self) -> None:
        if not self.live:
            return
        d = self.data
        self.live_seen += 1
        print(
            f"live   {d._name} {d.datetime.datetime(0):%Y-%m-%d %H:%M:%S}  C {d.close[0]:.2f}"
            f"  position {self.position.size:g}  cash {self.broker.getcash():.2f}",
            flush=True,
        )
        if self.live_seen % 2 == 1 and not self.position:
            self.buy(size=self.p.size)
        elif self.position:
            self.sell(size=self.position.size)
        if self.live_seen >= self.p.live_bars:
            self.env.runstop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchange", default="local", help="'local' (default) or a ccxt id")
    parser.add_argument("--config", default=None, help="JSON or @file.json with apiKey/secret")
    parser.add_argument("--symbol", default="BTC/USDT")
    parser.add_argument("--bars", type=int, default=4, help="live bars to run (default 4)")
    parser.add_argument("--size", type=float, default=0.001, help="units per order")
    args = parser.parse_args(argv)
    local = args.exchange == "local"

    with contextlib.ExitStack() as stack:
        if local:
            ex = stack.enter_context(LocalExchange(symbols=(args.symbol,), timeframes=("1s",)))
            quote = args.symbol.split("/")[1]
            acct = ex.add_account(balances={quote: 10_000}, fee_rate=0.001)
            store = CCXTStore("binance", config=ex.ccxt_config(account=acct))
        else:
            text = args.config or "{}"
            if text.startswith("@"):
                with open(text[1:], encoding="utf-8") as fh:
                    text = fh.read()
            store = CCXTStore(args.exchange, config=json.loads(text), sandbox=True)
        stack.callback(store.stop)
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.setbroker(store.getbroker())  # MissingCredentialsError without keys
        cerebro.adddata(
            store.getdata(
                dataname=args.symbol,
                name=args.symbol,
                timeframe="1s" if local else "1m",
                backfill_bars=5,
            )  # fmt: skip
        )
        cerebro.addstrategy(BuyThenSell, size=args.size, live_bars=args.bars)
        print(f"{store.exchange_id} {args.symbol}: {args.bars} live bars through CCXTBroker")
        run_live(cerebro)
        broker = cerebro.broker
        print(f"broker: {len(broker.ledger.by_cid)} orders, {len(broker.ledger.trade_ids)} fills")
        if not local:
            return 0
        fills = ex.ledger.fills(acct)
        orders = ex.ledger.orders(acct)
        base, quote = args.symbol.split("/")
        bal = ex.ledger.balances(acct)
        held = float(sum(bal.get(base, (0, 0))))
        cash = float(sum(bal.get(quote, (0, 0))))
        print(f"exchange ledger: {len(orders)} orders, {len(fills)} fills, {base} {held:g}, "
              f"{quote} {cash:.8f}")  # fmt: skip
        same = (
            {str(f["id"]) for f in fills} == broker.ledger.trade_ids
            and len(orders) == len(broker.ledger.by_cid)
            and abs(broker.positions[args.symbol].size - held) < 1e-12
            and abs(broker.getcash() - cash) < 1e-8
        )
        print(f"broker matches the exchange ledger: {'yes' if same else 'NO'}")
        return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
