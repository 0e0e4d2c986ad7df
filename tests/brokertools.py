"""Test helpers for the broker: synthetic bars, a trading strategy, and an in-memory venue
that stands in for the loop thread (no network, no thread: every "I/O" runs at once)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
from decimal import Decimal
from types import SimpleNamespace

import backtrader as bt
import ccxt
import pandas as pd

from backtrader_ccxt.broker import CCXTBroker
from backtrader_ccxt.orders import Fill, OrderReport

MARKET = {
    "symbol": "BTC/USDT",
    "base": "BTC",
    "quote": "USDT",
    "spot": True,
    "precision": {"amount": 0.0001, "price": 0.01},
    "limits": {"amount": {"min": 0.0001}, "price": {"min": 0.01}, "cost": {"min": 5}},
    "info": {"orderTypes": ["LIMIT", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT"]},
}


def bars(n: int = 60, start: float = 100.0) -> pd.DataFrame:
    """A deterministic zig-zag of ``n`` one-minute bars."""
    rows = []
    price = start
    for i in range(n):
        step = (1 if (i // 7) % 2 == 0 else -1) * (0.5 + (i % 3) * 0.25)
        o = price
        c = round(price + step, 2)
        rows.append((o, max(o, c) + 0.3, min(o, c) - 0.3, c, 10.0))
        price = c
    idx = pd.date_range("2024-01-01", periods=n, freq="1min")
    return pd.DataFrame(rows, columns=["open", "high", "low", "close", "volume"], index=idx)


class Trader(bt.Strategy):
    """Buys every few bars when flat (market, or limit a little below the close), sells
    after a few bars; records every notification and closed trade."""

    params = (("every", 5), ("hold", 3), ("size", 0.5), ("limit", False))

    def __init__(self):
        self.notes = []
        self.trades = []
        self.entry_bar = None

    def notify_order(self, order):
        self.notes.append((order.ref, order.getstatusname(), order.executed.size))

    def notify_trade(self, trade):
        if trade.isclosed:
            self.trades.append((len(self), round(trade.pnl, 8), round(trade.pnlcomm, 8)))

    def next(self):
        if self.position.size == 0 and len(self) % self.p.every == 0:
            if self.p.limit:
                self.buy(size=self.p.size, exectype=bt.Order.Limit,
                         price=round(self.data.close[0] - 0.2, 2))  # fmt: skip
            else:
                self.buy(size=self.p.size)
            self.entry_bar = len(self)
        elif self.position.size > 0 and len(self) - self.entry_bar >= self.p.hold:
            self.sell(size=self.position.size)


class FakeVenue:
    """The loop thread's part, in memory: orders fill like backtrader's own broker (market
    at the next bar's open, a limit when the bar reaches it), fees in the quote."""

    def __init__(self, broker, fee_rate=0.001, cash=10_000.0, duplicate=False, reorder=False):
        self.broker = broker
        self.fee = Decimal(str(fee_rate))
        self.cash = Decimal(str(cash))
        self.base = Decimal(0)
        self.open: dict[str, dict] = {}
        self.creates = []
        self.cancels = []
        self.duplicate = duplicate
        self.reorder = reorder
        self._oid = itertools.count(1)
        self._tid = itertools.count(1)
        self.trades = []

    def post(self, *item):
        self.broker.inbox.put(item)
        if self.duplicate:
            self.broker.inbox.put(item)

    def balance(self):
        self.post(
            "balance",
            {"USDT": (0.0, 0.0, float(self.cash)), "BTC": (0.0, 0.0, float(self.base))},
            "rest",
        )

    async def create(self, req):
        self.creates.append(req)
        oid = str(next(self._oid))
        cid = req.params["clientOrderId"]
        self.open[cid] = {"req": req, "oid": oid, "age": 0}
        self.post(
            "report",
            OrderReport(
                cid, oid, "open", Decimal(0), Decimal(str(req.amount)), req.symbol, req.side, 1
            ),
        )

    async def cancel(self, cid, symbol):
        self.cancels.append(cid)
        o = self.open.pop(cid, None)
        if o is not None:
            self.post(
                "report", OrderReport(cid, o["oid"], "canceled", Decimal(0), None, symbol, None, 2)
            )

    async def fetch_trades(self, symbol):
        pass

    async def add_symbol(self, symbol):
        pass

    async def reconcile(self, why):
        self.balance()

    def match(self, data):
        """Called as a new bar arrives (before the broker applies what is posted)."""
        for cid, o in list(self.open.items()):
            if o["age"] == 0:
                o["age"] = 1
                if o["req"].type == "market":
                    pass  # fills on this bar's open, like BackBroker
            req = o["req"]
            px = None
            if req.type == "market":
                px = data.open[0]
            elif req.side == "buy" and data.low[0] <= req.price:
                px = min(data.open[0], req.price)
            elif req.side == "sell" and data.high[0] >= req.price:
                px = max(data.open[0], req.price)
            if px is None:
                continue
            del self.open[cid]
            amount = Decimal(str(req.amount))
            price = Decimal(str(px))
            fee = amount * price * self.fee
            sign = 1 if req.side == "buy" else -1
            self.base += sign * amount
            self.cash -= sign * amount * price + fee
            tid = str(next(self._tid))
            ts = int(bt.num2date(data.datetime[0]).timestamp() * 1000)
            fill = Fill(tid, o["oid"], cid, req.symbol, req.side, price, amount, fee, "USDT", ts)
            self.trades.append(fill)
            closed = OrderReport(cid, o["oid"], "closed", amount, amount, req.symbol, req.side, 5)
            if self.reorder:
                self.post("report", closed)
                self.post(
                    "report",
                    OrderReport(cid, o["oid"], "open", Decimal(0), amount, req.symbol, req.side, 3),
                )
                self.post("fill", fill)
            else:
                self.post("fill", fill)
                self.post("report", closed)
            self.balance()


class _Manager:
    def __init__(self):
        self.loop = asyncio.new_event_loop()

    def submit(self, coro):
        fut = concurrent.futures.Future()
        try:
            fut.set_result(self.loop.run_until_complete(coro))
        except Exception as exc:  # noqa: BLE001
            fut.set_exception(exc)
        return fut

    def add_closer(self, closer):
        pass


class FakeStore:
    def __init__(self):
        self.exchange = SimpleNamespace(
            markets={"BTC/USDT": MARKET}, precisionMode=ccxt.TICK_SIZE, has={}, options={}
        )
        self.clock = SimpleNamespace(rate=1.0)
        self.datas = []
        self.manager = _Manager()

    def start(self, data=None, broker=None):
        pass

    def stop(self, data=None):
        self.manager.loop.close()


class FakeBroker(CCXTBroker):
    """CCXTBroker on a :class:`FakeVenue` (symbol BTC/USDT for every feed)."""

    params = (("venue_kwargs", {}),)

    def start(self):
        bt.BrokerBase.start(self)
        if self._started:
            return
        self.venue = FakeVenue(self, **self.p.venue_kwargs)
        self._driver = self.venue
        self.venue.balance()
        self._drain()
        self.startingcash = self.getcash()
        self._started = True

    def _symbol(self, data):
        return "BTC/USDT"

    def next(self):
        datas = self.store.datas
        if datas and len(datas[0]):
            self.venue.match(datas[0])
        super().next()


def run(broker=None, strategy=Trader, n=60, **strat_kwargs):
    cerebro = bt.Cerebro(stdstats=False)
    data = bt.feeds.PandasData(dataname=bars(n), timeframe=bt.TimeFrame.Minutes)
    cerebro.adddata(data)
    if broker is None:
        cerebro.broker.setcash(10_000.0)
        cerebro.broker.setcommission(commission=0.001)
    else:
        broker.store.datas.append(data)
        cerebro.setbroker(broker)
    cerebro.addstrategy(strategy, **strat_kwargs)
    return cerebro.run()[0], cerebro.broker
