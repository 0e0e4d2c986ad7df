"""The broker's I/O on the store's loop thread: send and cancel orders, follow the user-data
stream, reconcile over REST, keep balances. It decides nothing about backtrader's orders: it
turns ccxt's answers into the frozen items of :mod:`..orders` and posts them to the broker's
``queue.Queue``; the rules (:class:`~..orders.OrderLedger`) run on backtrader's thread.

Posted items (tuples): ``("report", OrderReport)``, ``("fill", Fill)``,
``("final", client_id, St, reason)``, ``("balance", {asset: (free, used, total)}, source)``,
``("reconciled", n)``.

What it never does: retry ``create_order`` (a timeout or a 429 may have booked the order: it
looks the order up by client id, see :func:`~..orders.after_create_error`), use
``create_order_ws`` (it has no timeout), or take ``watch_balance`` as a snapshot (it sends only
changes: balances start from ``fetch_balance``).
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Iterable
from dataclasses import replace

import ccxt

from ..errors import Verdict, classify, translate
from ..orders import (
    Decision,
    OcoRequest,
    OrderRequest,
    St,
    after_create_error,
    after_lookup,
    fill_from_ccxt,
    report_from_ccxt,
)
from ..retry import Backoff

log = logging.getLogger(__name__)

__all__ = ["OrderDriver"]

_TRADES_PAGE = 1000


class OrderDriver:
    """One account's order I/O. Every ``async`` method runs on the store's loop thread.

    ``stream``: follow ``watch_orders``/``watch_my_trades``/``watch_balance`` (reconciling
    over REST after every break and every ``reconcile_interval`` seconds); otherwise poll:
    one cycle every ``poll_interval`` seconds reads ``fetch_open_orders`` per symbol and
    ``fetch_my_trades`` since the last trade seen per symbol, never one call per order.
    """

    def __init__(
        self,
        store,
        outbox: queue.Queue,
        stream: bool,
        poll_interval: float,
        reconcile_interval: float,
        time_sync: bool,
    ) -> None:
        self._store = store
        self.outbox = outbox
        self.stream = stream
        self.poll_interval = poll_interval
        self.reconcile_interval = reconcile_interval
        self.time_sync = time_sync
        self.ex = None
        self.symbols: set[str] = set()
        #: client id -> [symbol, order id or None, finished]
        self.working: dict[str, list] = {}
        self._created: dict[str, asyncio.Event] = {}  # set once a create has its outcome
        self._since: dict[str, int] = {}  # per symbol: the newest trade time read over REST
        self._tasks: set[asyncio.Task] = set()
        self._start_ms = 0
        self._reconcile_lock: asyncio.Lock | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self.stats = store.stats

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, symbols: Iterable[str]) -> None:
        self.ex = self._store.new_async_exchange()
        await self.sync_time()
        self._reconcile_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.symbols.update(symbols)
        # this run's orders trade after its start: older trades are not read
        self._start_ms = self._store.clock.now_ms() - 60_000
        await self._first_balance()
        await self._open_orders_everywhere()
        await self.reconcile("start")
        if self.stream:
            for name in ("watch_orders", "watch_my_trades", "watch_balance"):
                self._spawn(self._watch(name), name)
        self._spawn(self._periodic(), "reconcile")

    async def _first_balance(self) -> None:
        """The REST snapshot balances start from (``watch_balance`` sends changes only), and
        the credentials' test: a refused key fails the start, with the reason."""
        backoff = Backoff(self._store.retry_delay, self._store.retry_max_delay)
        attempt = 0
        while True:
            try:
                bal = await self.ex.fetch_balance()
            except ccxt.BaseError as exc:
                verdict = classify(exc, self.ex.id)
                attempt += 1
                if verdict is Verdict.FATAL or attempt > self._store.retries:
                    raise translate(
                        exc, f"{self.ex.id}: the account's balance", self._store.redact
                    ) from exc
                await self._sleep(backoff.next_delay())
                continue
            self._post("balance", _assets(bal), "rest")
            return

    async def sync_time(self) -> None:
        """Load the venue's clock offset into this instance and the store's blocking one
        (the trap: -1021 on every signed call of the instance that lacks it)."""
        if not self.time_sync or "timeDifference" not in (self.ex.options or {}):
            return
        try:
            diff = await self.ex.load_time_difference()
        except ccxt.BaseError as exc:
            log.warning("%s: cannot read the clock offset: %s", self.ex.id, exc)
            return
        self._store.exchange.options["timeDifference"] = diff
        self.stats["broker_time_sync"] += 1

    async def close(self) -> None:
        self._stopping = True
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.ex is not None:
            ex, self.ex = self.ex, None
            await ex.close()

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=f"broker-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _post(self, *item) -> None:
        self.outbox.put(item)

    def _sleep(self, seconds: float):
        return asyncio.sleep(seconds)

    # -- orders ----------------------------------------------------------------------------

    async def create(self, req: OrderRequest) -> None:
        cid = req.params["clientOrderId"]
        self.symbols.add(req.symbol)
        self.working[cid] = [req.symbol, None, False]
        done = self._created.setdefault(cid, asyncio.Event())
        try:
            await self._create(req, cid)
        finally:
            done.set()

    async def _create(self, req: OrderRequest, cid: str) -> None:
        ex = self.ex
        signed = int(ex.nonce()) if hasattr(ex, "nonce") else self._store.clock.now_ms()
        try:
            try:
                order = await ex.create_order(
                    req.symbol, req.type, req.side, req.amount, req.price, dict(req.params)
                )
            except ccxt.InvalidNonce:
                # -1021: refused for its timestamp, so certainly not booked: measure the
                # clock again and send it once more (the same client id)
                if not self.time_sync:
                    raise
                self.stats["broker_create_resent_after_1021"] += 1
                await self.sync_time()
                signed = int(ex.nonce())
                order = await ex.create_order(
                    req.symbol, req.type, req.side, req.amount, req.price, dict(req.params)
                )
        except Exception as exc:  # noqa: BLE001 - every failure is decided below, none retried
            decision, status = after_create_error(exc)
            reason = self._store.redact(f"{type(exc).__name__}: {exc}")
            if decision is Decision.FINAL:
                self.working[cid][2] = True
                self._post("final", cid, status, reason)
                return
            self.stats["broker_create_unknown"] += 1
            log.warning("%s: create %s unanswered (%s): looking it up", ex.id, cid, reason)
            await self._lookup(req, signed)
            return
        self.stats["broker_created"] += 1
        self._take_order(order, "create")

    async def create_oco(self, req: OcoRequest) -> None:
        """A native OCO (Binance ``orderList/oco``): never resent either; after no answer each
        leg is looked up by its client id."""
        legs = (req.limit_cid, req.stop_cid)
        self.symbols.add(req.symbol)
        events = []
        for cid in legs:
            self.working[cid] = [req.symbol, None, False]
            events.append(self._created.setdefault(cid, asyncio.Event()))
        try:
            await self._create_oco(req, legs)
        finally:
            for ev in events:
                ev.set()

    async def _create_oco(self, req: OcoRequest, legs) -> None:
        ex = self.ex
        signed = int(ex.nonce())
        params = {"symbol": ex.market_id(req.symbol), **req.params}
        try:
            reply = await ex.privatePostOrderListOco(params)
        except Exception as exc:  # noqa: BLE001 - decided below, never retried
            decision, status = after_create_error(exc)
            reason = self._store.redact(f"{type(exc).__name__}: {exc}")
            if decision is Decision.FINAL:
                for cid in legs:
                    self.working[cid][2] = True
                if isinstance(exc, ccxt.InvalidOrder):
                    # e.g. -2010 "relationship of the prices": the market moved past a leg
                    # before the list arrived; the broker sends the legs its own way
                    self.stats["broker_oco_refused"] += 1
                    self._post("oco_refused", legs[0], legs[1], reason)
                    return
                for cid in legs:
                    self._post("final", cid, status, reason)
                return
            self.stats["broker_create_unknown"] += 1
            for cid in legs:
                leg = OrderRequest(req.symbol, "oco", req.side, 0.0, None, {"clientOrderId": cid})
                await self._lookup(leg, signed)
            return
        self.stats["broker_created"] += 1
        self.stats["broker_oco_created"] += 1
        market = ex.market(req.symbol)
        for rep in reply.get("orderReports") or ():
            self._take_order(ex.parse_order(rep, market), "create")

    async def _lookup(self, req: OrderRequest, signed_ms: int) -> None:
        """After a create with no answer: find the order by client id; never resend."""
        cid = req.params["clientOrderId"]
        backoff = Backoff(self._store.retry_delay, self._store.retry_max_delay)
        recv = int((self.ex.options or {}).get("recvWindow") or 10_000)
        while not self._stopping:
            try:
                order = await self.ex.fetch_order(None, req.symbol, {"clientOrderId": cid})
            except ccxt.OrderNotFound:
                verdict = after_lookup(False, signed_ms, int(self.ex.nonce()), recv)
                if verdict == "gone":
                    self.working[cid][2] = True
                    self.stats["broker_create_not_placed"] += 1
                    self._post(
                        "final",
                        cid,
                        St.REJECTED,
                        "the create got no answer and the exchange has no order with this "
                        f"client id after its recvWindow ({recv} ms): not placed",
                    )
                    return
                await self._sleep(min(1.0, recv / 4000))
                continue
            except ccxt.BaseError as exc:
                if isinstance(exc, ccxt.NetworkError):
                    await self._sleep(backoff.next_delay())
                    continue
                log.error("%s: looking up %s failed: %s", self.ex.id, cid, exc)
                await self._sleep(backoff.next_delay())
                continue
            self.stats["broker_create_adopted"] += 1
            self._take_order(order, "lookup")
            await self.fetch_trades(req.symbol)
            return

    async def cancel(self, cid: str, symbol: str) -> None:
        created = self._created.get(cid)
        if created is not None:
            # a cancel racing its own create would find no order, and the order would stay
            await created.wait()
        if self.working.get(cid, [None, None, True])[2]:
            return await self.read_order(cid, symbol)
        backoff = Backoff(self._store.retry_delay, self._store.retry_max_delay)
        for _ in range(max(1, self._store.retries + 1)):
            try:
                order = await self.ex.cancel_order(None, symbol, {"clientOrderId": cid})
            except ccxt.OrderNotFound:
                # -2011: filled (or canceled) already: read what it became
                self.stats["broker_cancel_refused"] += 1
                break
            except ccxt.NetworkError:
                await self._sleep(backoff.next_delay())  # a cancel is idempotent: safe to repeat
                continue
            except ccxt.BaseError as exc:
                log.warning("%s: cancel %s failed: %s", self.ex.id, cid, exc)
                break
            self._take_order(order, "cancel")
            break
        await self.read_order(cid, symbol)
        await self.fetch_trades(symbol)

    async def read_order(self, cid: str, symbol: str) -> None:
        try:
            order = await self.ex.fetch_order(None, symbol, {"clientOrderId": cid})
        except ccxt.BaseError as exc:
            log.info("%s: reading order %s failed: %s", getattr(self.ex, "id", "?"), cid, exc)
            return
        self._take_order(order, "rest")

    def _take_order(self, order: dict, source: str) -> None:
        report = report_from_ccxt(order, source)
        if report.client_id in self.working:
            entry = self.working[report.client_id]
            entry[1] = report.order_id
            if report.status != "open":
                entry[2] = True
        # the fills first: a final report then finds them counted (no REST read for them)
        for trade in order.get("trades") or ():
            fill = fill_from_ccxt(
                {
                    **trade,
                    "symbol": trade.get("symbol") or order.get("symbol"),
                    "side": trade.get("side") or order.get("side"),
                    # Binance's FULL reply has no time per fill: the order's transaction time
                    "timestamp": trade.get("timestamp") or report.timestamp,
                    "order": trade.get("order") or report.order_id,
                },
                source,
            )
            if fill is not None:
                if fill.client_id is None:
                    fill = replace(fill, client_id=report.client_id)
                self._post("fill", fill)
        self._post("report", report)

    # -- fills and reconciliation ----------------------------------------------------------

    async def fetch_trades(self, symbol: str) -> None:
        """Every trade of ``symbol`` since the last one read (a page at a time)."""
        since = self._since.get(symbol, self._start_ms)
        while True:
            try:
                trades = await self.ex.fetch_my_trades(symbol, since, _TRADES_PAGE)
            except ccxt.BaseError as exc:
                log.warning("%s: fetch_my_trades %s failed: %s", self.ex.id, symbol, exc)
                return
            for trade in trades:
                fill = fill_from_ccxt(trade, "rest")
                if fill is not None:
                    self._post("fill", fill)
            if trades:
                newest = max(int(t.get("timestamp") or 0) for t in trades)
                # the same millisecond again next time: the ledger drops what it has counted
                self._since[symbol] = max(self._since.get(symbol) or 0, newest)
            if len(trades) < _TRADES_PAGE or since == self._since.get(symbol, self._start_ms):
                return
            since = self._since[symbol]

    async def reconcile(self, why: str) -> None:
        """Open orders and fills over REST, one call per symbol (not per order), then the
        orders that left the book since, then the balances."""
        async with self._reconcile_lock:
            self.stats[f"broker_reconcile_{why}"] += 1
            open_cids: set[str] = set()
            symbols = self.symbols
            if why in ("poll", "periodic"):
                # a routine cycle reads only the symbols with orders working
                symbols = {sym for sym, _, finished in self.working.values() if not finished}
            for symbol in sorted(symbols):
                try:
                    orders = await self.ex.fetch_open_orders(symbol)
                except ccxt.BaseError as exc:
                    log.warning("%s: fetch_open_orders %s failed: %s", self.ex.id, symbol, exc)
                    if isinstance(exc, ccxt.InvalidNonce):
                        await self.sync_time()  # -1021: the venue's clock moved
                    continue
                for order in orders:
                    self._take_order(order, "rest")
                    open_cids.add(report_from_ccxt(order).client_id)
                await self.fetch_trades(symbol)
            for cid, (symbol, _, finished) in list(self.working.items()):
                if not finished and cid not in open_cids:
                    await self.read_order(cid, symbol)
            await self.fetch_balance()
            self._post("reconciled", self.stats[f"broker_reconcile_{why}"])

    async def _open_orders_everywhere(self) -> None:
        """Once at start: every open order of the account (an earlier run's too), in one call
        where the venue allows it without a symbol (Binance: weight 80, once)."""
        self.ex.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
        try:
            orders = await self.ex.fetch_open_orders()
        except ccxt.BaseError as exc:
            log.info("%s: open orders of every symbol: %s", self.ex.id, exc)
            return
        for order in orders:
            if order.get("symbol"):
                self.symbols.add(order["symbol"])
            self._take_order(order, "rest")

    async def fetch_balance(self) -> None:
        try:
            bal = await self.ex.fetch_balance()
        except ccxt.BaseError as exc:
            log.warning("%s: fetch_balance failed: %s", self.ex.id, exc)
            return
        self._post("balance", _assets(bal), "rest")

    async def _periodic(self) -> None:
        interval = self.reconcile_interval if self.stream else self.poll_interval
        while not self._stopping:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except asyncio.TimeoutError:
                pass
            await self.reconcile("poll" if not self.stream else "periodic")

    async def add_symbol(self, symbol: str) -> None:
        if symbol not in self.symbols:
            self.symbols.add(symbol)
            await self.reconcile("new_symbol")

    def poke(self) -> None:
        """Reconcile now (loop thread)."""
        if self._wake is not None:
            self._wake.set()

    async def _watch(self, name: str) -> None:
        """One user-data watch call in a loop; after a break, REST fills the gap."""
        backoff = Backoff(self._store.retry_delay, self._store.retry_max_delay)
        broken = False
        while not self._stopping:
            try:
                items = await getattr(self.ex, name)()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every break is followed by REST
                if not broken:
                    self.stats["broker_stream_breaks"] += 1
                    log.warning("%s: %s broke (%s)", getattr(self.ex, "id", "?"), name, exc)
                    if name == "watch_orders":  # one notification per break, not three
                        self._store.notify(
                            "CONNECTION_LOST",
                            f"broker: user-data stream broke ({exc}); REST fills the gap",
                        )
                broken = True
                await self._sleep(backoff.next_delay())
                # the stream reconnects on the next call; what it missed comes over REST
                self._spawn(self.reconcile("break"), "reconcile-break")
                continue
            if broken:
                broken = False
                backoff.reset()
                self.stats["broker_stream_restored"] += 1
                if name == "watch_orders":
                    self._store.notify("CONNECTION_RESTORED", "broker: user-data stream restored")
                self._spawn(self.reconcile("restored"), "reconcile-restored")
            self._take_stream(name, items)

    def _take_stream(self, name: str, items) -> None:
        if name == "watch_balance":
            self._post("balance", _assets(items), "stream")
            return
        for item in items or ():
            if name == "watch_my_trades":
                fill = fill_from_ccxt(item, "stream")
                if fill is not None:
                    self._post("fill", fill)
            else:
                report = report_from_ccxt(item, "stream")
                entry = self.working.get(report.client_id)
                if entry is not None and report.status != "open":
                    entry[2] = True
                self._post("report", report)


def _assets(balance: dict) -> dict:
    """``{asset: (free, used, total)}`` of a ccxt balance structure (the assets it names)."""
    out = {}
    for asset, row in (balance or {}).items():
        if asset in ("info", "free", "used", "total", "timestamp", "datetime"):
            continue
        if isinstance(row, dict) and ("total" in row or "free" in row):
            free = row.get("free") or 0.0
            used = row.get("used") or 0.0
            total = row.get("total")
            out[asset] = (
                float(free),
                float(used),
                float(total if total is not None else free + used),
            )
    return out
