"""CCXTBroker: backtrader's broker for a live ccxt account (spot).

Backtrader's side only: it builds backtrader orders, gives each a client id, checks it against
the market ccxt loaded, hands the request to the store's loop thread
(:class:`~.live.orderdriver.OrderDriver`) and applies what comes back (frozen reports and
fills, drained from one ``queue.Queue`` in :meth:`CCXTBroker.next`) through the
:class:`~.orders.OrderLedger` rules. Nothing here waits on the network once started: cash,
value and positions are read from what the loop thread last posted.

Emulated here (Binance spot has no native form that ccxt's unified API offers): brackets
(children held until the parent completes), OCO groups (at most one member, the first limit,
rests on the exchange; stop members are watched on the feeds' closes and, when one triggers,
the resting member is canceled before the stop is sent), ``valid`` dates and DAY (canceled by
the broker when the feed's time passes them, notified Expired), and stops on a venue without
stop orders. Native on Binance spot: Market, Limit (GTC), Stop (``STOP_LOSS``), StopLimit
(``STOP_LOSS_LIMIT``).
"""

from __future__ import annotations

import collections
import logging
import queue
from datetime import datetime, timezone

import backtrader as bt

from .errors import ConfigurationError
from .orders import (
    ClientIds,
    OrderLedger,
    Rejection,
    St,
    check_order,
    native_stops,
    oco_request,
    order_request,
    stop_triggered,
    venue_types,
)

log = logging.getLogger(__name__)

__all__ = ["CCXTBroker", "MissingCredentialsError"]

_EXEC_NAMES = {
    bt.Order.Market: "Market",
    bt.Order.Limit: "Limit",
    bt.Order.Stop: "Stop",
    bt.Order.StopLimit: "StopLimit",
    bt.Order.Close: "Close",
    bt.Order.StopTrail: "StopTrail",
    bt.Order.StopTrailLimit: "StopTrailLimit",
    bt.Order.Historical: "Historical",
}


class MissingCredentialsError(ConfigurationError):
    """A broker was asked for without credentials: it never sends an order on someone else's
    behalf (ccxt could otherwise pick keys up from elsewhere)."""


class CCXTBroker(bt.BrokerBase):
    """Backtrader's broker for one ccxt account (spot). Made by ``store.getbroker(**params)``.

    Params:
      - ``currency`` (str, default None): the cash currency (``getcash``); None: the quote of
        the first feed's symbol.
      - ``stream`` (bool, default None): follow the user-data stream (ccxt.pro
        ``watch_orders``/``watch_my_trades``/``watch_balance``); None: when ccxt.pro has them.
        Otherwise a REST poll every ``poll_interval``.
      - ``poll_interval`` (float s, default 3): the REST poll's period without a stream (a
        cycle reads only the symbols with orders working).
      - ``reconcile_interval`` (float s, default 30): with a stream, a REST reconciliation this
        often as well (and always after a break).
      - ``client_id_prefix`` (str, default ``'bt'``): the client ids' prefix.
      - ``emulate_stops`` (``'auto'``, True, False): ``'auto'`` emulates stops only where the
        venue lacks them.
      - ``load_positions`` (bool, default True): positions held before the run are loaded at
        start (base-asset balances of the feeds' symbols), priced at the market's last price.
      - ``native_oco`` (``'auto'``, True, False): a bracket's two children go out as the
        venue's own OCO (Binance spot ``orderList/oco``: both rest on the exchange, one locked
        amount); ``'auto'``: where ccxt has the endpoint and the market lists ``LIMIT_MAKER``.
        Otherwise they are emulated.
      - ``time_sync`` (bool, default None): measure the venue's clock offset with ``fetch_time``
        and load it into both ccxt instances (signed calls fail with -1021 when the venue's
        clock is more than a second behind otherwise), and again after a -1021; None: unless
        the store's clock is injected.
    """

    params = (
        ("currency", None),
        ("stream", None),
        ("poll_interval", 3.0),
        ("reconcile_interval", 30.0),
        ("client_id_prefix", "bt"),
        ("emulate_stops", "auto"),
        ("load_positions", True),
        ("time_sync", None),
        ("native_oco", "auto"),
    )

    def __init__(self, store=None, **kwargs) -> None:
        super().__init__()
        if store is None:
            raise ConfigurationError("CCXTBroker needs its store: use store.getbroker(...)")
        if self.p.native_oco not in ("auto", True, False):
            raise ConfigurationError(
                f"native_oco must be 'auto', True or False, got {self.p.native_oco!r}"
            )
        if self.p.emulate_stops not in ("auto", True, False):
            raise ConfigurationError(
                f"emulate_stops must be 'auto', True or False, got {self.p.emulate_stops!r}"
            )
        for name in ("poll_interval", "reconcile_interval"):
            value = getattr(self.p, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigurationError(f"{name} must be a number > 0, got {value!r}")
        self.store = store
        self.ids = ClientIds(self.p.client_id_prefix)
        self.ledger = OrderLedger()
        self.inbox: queue.Queue = queue.Queue()
        self.notifs: collections.deque = collections.deque()
        self.orders: dict[int, bt.Order] = {}  # ref -> order, every order of the run
        self.positions: dict[str, bt.Position] = collections.defaultdict(bt.Position)
        self.balances: dict[str, tuple[float, float, float]] = {}
        self._cid: dict[int, str] = {}  # ref -> client id (sent orders)
        self._held: dict[int, bt.Order] = {}  # held: transmit=False chains, bracket children
        self._emulated: dict[int, bt.Order] = {}  # stops the broker triggers
        self._resting_of_oco: dict[int, int] = {}  # stop ref -> the resting member's ref
        self._pending_trigger: dict[int, bt.Order] = {}  # resting ref -> stop awaiting its cancel
        self._oco: dict[int, list[bt.Order]] = {}  # ref -> every member of its group
        self._children: dict[int, list[bt.Order]] = {}
        self._expiring: set[int] = set()
        self._dirty: set[int] = set()  # refs with fills not notified yet
        self._native_legs: set[int] = set()  # legs of a native OCO
        #: open orders of an earlier run (same client id prefix): client id -> OrderReport
        self.earlier_orders: dict = {}
        #: the cash at start (backtrader's writer and analyzers read it)
        self.startingcash = 0.0
        self._driver = None
        self._started = False
        self._known: list = []  # feeds whose symbol and holdings are taken
        self._bases: set[str] = set()
        self._reconciled = 0
        self.stats: collections.Counter = collections.Counter()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        super().start()
        if self._started:
            return
        from .live.orderdriver import OrderDriver

        store = self.store
        store.start(broker=self)
        ex = store.exchange
        sync = self.p.time_sync
        if sync is None:
            # an injected clock (tests, rehearsals) says nothing of the clock the venue checks
            # signatures against; a real venue's offset is measured with fetch_time
            sync = store.clock._now is None
        stream = self.p.stream
        if stream is None:
            stream = all(store.has(c, websocket=True) for c in ("watchOrders", "watchMyTrades"))
        self._driver = OrderDriver(
            store,
            self.inbox,
            bool(stream),
            float(self.p.poll_interval) / store.clock.rate,
            float(self.p.reconcile_interval) / store.clock.rate,
            bool(sync) and bool(ex.has.get("fetchTime")),
        )
        manager = store.manager
        manager.add_closer(self._driver.close)
        symbols = [self._symbol(d) for d in store.datas]
        manager.submit(self._driver.start(symbols)).result(timeout=30.0 + 3 * ex.timeout / 1000)
        self._drain()
        self.startingcash = self.getcash()
        self._started = True

    def _discover(self) -> None:
        """Feeds start after the broker: take each new one's symbol into the reconciliation,
        and its base asset's holding as the position held before the run (priced at the
        feed's first close: its cost is unknown)."""
        for data in self.store.datas:
            if any(d is data for d in self._known):
                continue
            if not len(data):
                continue
            self._known.append(data)
            symbol = self._symbol(data)
            self._submit_io(self._driver.add_symbol(symbol))
            market = self._market(symbol)
            base = market.get("base")
            if not self.p.load_positions or market.get("spot") is False or base in self._bases:
                continue
            self._bases.add(base)
            total = self.balances.get(base, (0.0, 0.0, 0.0))[2]
            if total and not self.positions[symbol].size:
                self.positions[symbol] = bt.Position(size=total, price=data.close[0])

    def stop(self) -> None:
        """Reconcile once more (so cash, positions and orders are the exchange's at the end),
        then release the store."""
        driver = self._driver
        if driver is None:
            return
        try:
            self.store.manager.submit(driver.reconcile("stop")).result(timeout=10.0)
        except Exception as exc:  # noqa: BLE001 - a failing last read must not block the stop
            log.warning("last reconciliation failed: %s: %s", type(exc).__name__, exc)
        self._drain()
        self._driver = None
        self.store.stop(data=self)

    def _submit_io(self, coro) -> None:
        if self._driver is None:
            coro.close()
            return
        fut = self.store.manager.submit(coro)
        fut.add_done_callback(_log_failure)

    # -- what backtrader asks --------------------------------------------------------------

    def _symbol(self, data) -> str:
        return data.p.dataname

    def _currency(self) -> str | None:
        if self.p.currency:
            return self.p.currency
        for data in self.store.datas:
            market = self._market(self._symbol(data))
            if market.get("quote"):
                return market["quote"]
        return None

    def getcash(self) -> float:
        """The cash currency's balance (free and locked in orders), as last reported."""
        cur = self._currency()
        return float(self.balances.get(cur, (0.0, 0.0, 0.0))[2]) if cur else 0.0

    def getvalue(self, datas=None) -> float:
        """Cash plus the feeds' positions marked to their last closes."""
        datas = datas if datas is not None else self.store.datas
        value = 0.0 if datas is not self.store.datas and datas else self.getcash()
        for data in datas:
            pos = self.positions.get(self._symbol(data))
            if pos is None or not pos.size:
                continue
            price = data.close[0] if len(data) else pos.price
            value += pos.size * price
        return value

    def getposition(self, data, clone: bool = True):
        pos = self.positions[self._symbol(data)]
        return pos.clone() if clone else pos

    def get_notification(self):
        try:
            return self.notifs.popleft()
        except IndexError:
            return None

    def notify(self, order) -> None:
        self.notifs.append(order.clone())

    def orderstatus(self, order) -> int:
        return self.orders[order.ref].status

    # -- orders ----------------------------------------------------------------------------

    def buy(self, owner, data, size, price=None, plimit=None, exectype=None, valid=None,
            tradeid=0, oco=None, trailamount=None, trailpercent=None, parent=None,
            transmit=True, **kwargs):  # fmt: skip
        order = bt.BuyOrder(owner=owner, data=data, size=size, price=price, pricelimit=plimit,
                            exectype=exectype, valid=valid, tradeid=tradeid,
                            trailamount=trailamount, trailpercent=trailpercent, parent=parent,
                            transmit=transmit)  # fmt: skip
        return self._submit(order, oco, kwargs)

    def sell(self, owner, data, size, price=None, plimit=None, exectype=None, valid=None,
             tradeid=0, oco=None, trailamount=None, trailpercent=None, parent=None,
             transmit=True, **kwargs):  # fmt: skip
        order = bt.SellOrder(owner=owner, data=data, size=size, price=price, pricelimit=plimit,
                             exectype=exectype, valid=valid, tradeid=tradeid,
                             trailamount=trailamount, trailpercent=trailpercent, parent=parent,
                             transmit=transmit)  # fmt: skip
        return self._submit(order, oco, kwargs)

    def _submit(self, order, oco, kwargs):
        order.addinfo(**kwargs)
        order.addcomminfo(self.getcommissioninfo(order.data))
        self.orders[order.ref] = order
        order.submit(self)
        self.notify(order)
        if oco is not None:
            group = self._oco.setdefault(oco.ref, [oco])
            group.append(order)
            self._oco[order.ref] = group
        parent = order.parent
        if parent is not None and parent is not order:
            self._children.setdefault(parent.ref, []).append(order)
        if not order.transmit:
            self._held[order.ref] = order
            return order
        # the last of a chain transmits it: the parent now, the children once it completes
        root = parent if parent is not None else order
        if parent is not None and parent is not order:
            self._held[order.ref] = order
            for child in self._children.get(parent.ref, ()):
                self._group_children(parent, child)
            held_parent = self._held.pop(parent.ref, None)
            if held_parent is not None:
                self._send(held_parent)
            elif parent.status == bt.Order.Completed:
                self._release_children(parent)
            return order
        self._send(root)
        return order

    def _group_children(self, parent, child) -> None:
        """A bracket's children are one OCO group (backtrader's rule)."""
        kids = self._children.get(parent.ref, [])
        if len(kids) < 2:
            return
        group = self._oco.get(kids[0].ref) or [kids[0]]
        for k in kids:
            if k not in group:
                group.append(k)
            self._oco[k.ref] = group

    def _market(self, symbol: str) -> dict:
        return (self.store.exchange.markets or {}).get(symbol) or {}

    def _emulate(self, order, name: str, market: dict) -> bool:
        if name not in ("Stop", "StopLimit"):
            return False
        if self.p.emulate_stops is True or (
            self.p.emulate_stops == "auto" and not native_stops(market)
        ):
            return True
        # OCO on spot: members would lock the same asset twice; only one member rests
        group = self._oco.get(order.ref)
        return bool(group) and any(m is not order and m.exectype == bt.Order.Limit for m in group)

    def _send(self, order) -> None:
        """Check and send (or hold, for an emulated stop) one order."""
        symbol = self._symbol(order.data)
        market = self._market(symbol)
        name = _EXEC_NAMES.get(order.exectype, str(order.exectype))
        amount = abs(order.created.size)
        side = "buy" if order.isbuy() else "sell"
        price = order.created.price if name != "Market" else None
        plimit = order.created.pricelimit if name == "StopLimit" else None
        if market.get("spot") is False:
            return self._reject(order, Rejection("unsupported", f"{symbol}: spot only so far"))
        limit_price = price if name == "Limit" else plimit
        ref_price = order.data.close[0] if len(order.data) else None
        stop = price if name in ("Stop", "StopLimit") else None
        problem = check_order(
            market,
            amount,
            price=limit_price,
            stop=stop,
            reference_price=ref_price,
            precision_mode=self.store.exchange.precisionMode,
        )
        if problem is None and name not in ("Market", "Limit", "Stop", "StopLimit"):
            problem = Rejection(
                "unsupported",
                f"exectype {name} is not supported; valid choices: Market, Limit, Stop, StopLimit",
            )
        if problem is not None:
            return self._reject(order, problem)
        if self._emulate(order, name, market):
            self._emulated[order.ref] = order
            order.accept(self)
            self.notify(order)
            self.stats["emulated_stops"] += 1
            return None
        cid = self.ids.next()
        req = order_request(symbol, name, side, amount, cid, price, plimit, market)
        if isinstance(req, Rejection):
            return self._reject(order, req)
        self._cid[order.ref] = cid
        order.addinfo(client_id=cid)
        self.ledger.track(order.ref, cid, symbol, side, amount)
        self._submit_io(self._driver.create(req))
        return None

    def _reject(self, order, why: Rejection) -> None:
        order.addinfo(reject_reason=str(why))
        log.warning("order %s rejected before sending: %s", order.ref, why)
        order.reject(self)
        self.notify(order)
        self._after_final(order)

    def cancel(self, order):
        o = self.orders.get(order.ref)
        if o is None or not o.alive():
            return None
        if o.ref in self._held or o.ref in self._emulated:
            self._held.pop(o.ref, None)
            self._emulated.pop(o.ref, None)
            o.cancel()
            self.notify(o)
            self._after_final(o)
            return o
        cid = self._cid.get(o.ref)
        if cid is not None:
            self._submit_io(self._driver.cancel(cid, self._symbol(o.data)))
        return o

    # -- applying what the loop thread reported --------------------------------------------

    def next(self) -> None:
        self._drain()
        self._discover()
        self._check_emulated()
        self._check_valid()

    def _drain(self) -> None:
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return
            kind = item[0]
            if kind == "report":
                report = item[1]
                events = self.ledger.on_report(report)
                if not events and self.ledger.find(report.client_id, report.order_id) is None:
                    self._foreign(report)
                self._apply(events)
            elif kind == "fill":
                self._apply(self.ledger.on_fill(item[1]))
            elif kind == "final":
                t = self.ledger.by_cid.get(item[1])
                if t is not None:
                    self._apply(self.ledger.finish(t.ref, item[2], item[3]))
            elif kind == "oco_refused":
                self._oco_refused(item[1], item[2], item[3])
            elif kind == "balance":
                self.balances.update(item[1])
            elif kind == "reconciled":
                self._reconciled += 1

    def _foreign(self, report) -> None:
        """An order this run did not send: one of an earlier run of a broker with this prefix
        (kept in ``earlier_orders`` while open, and warned about once), or someone else's."""
        cid = report.client_id
        if not self.ids.ours(cid) or self.ids.this_run(cid):
            return
        if report.status == "open":
            if cid not in self.earlier_orders:
                log.warning(
                    "%s: order %s (%s %s) of an earlier run is still open on the exchange",
                    report.symbol,
                    cid,
                    report.side,
                    report.amount,
                )
            self.earlier_orders[cid] = report
        else:
            self.earlier_orders.pop(cid, None)

    def _apply(self, events) -> None:
        """Apply the ledger's events; an order with new fills is notified once per batch
        (Partial), or by its final status when the batch ends it."""
        for ev in events:
            order = self.orders.get(ev.ref)
            if order is None:
                continue
            if ev.kind == "fill":
                self._execute(order, ev.fill)
            elif ev.kind == "need_fills":
                self.stats["need_fills"] += 1
                self._submit_io(self._driver.fetch_trades(self._symbol(order.data)))
            elif ev.kind == "status":
                self._status(order, ev.status, ev.reason)
        dirty, self._dirty = self._dirty, set()
        for ref in sorted(dirty):
            order = self.orders[ref]
            if order.alive():
                self.notify(order)

    def _status(self, order, status: St, reason: str) -> None:
        if status is St.ACCEPTED:
            if order.status == bt.Order.Submitted:
                order.accept(self)
                self.notify(order)
            return
        if reason:
            order.addinfo(reason=reason)
        if status is St.COMPLETED:
            order.completed()
        elif status is St.CANCELED:
            order.cancel()
        elif status is St.EXPIRED:
            order.expire()
        elif status is St.MARGIN:
            order.margin()
        elif status is St.REJECTED:
            order.reject(self)
        self._dirty.discard(order.ref)
        self.notify(order)
        self._after_final(order)

    def _execute(self, order, fill) -> None:
        """One fill, executed once, at its own price, size and commission."""
        size = float(fill.amount) if order.isbuy() else -float(fill.amount)
        price = float(fill.price)
        comminfo = order.comminfo or self.getcommissioninfo(order.data)
        symbol = self._symbol(order.data)
        market = self._market(symbol)
        fee = float(fill.fee)
        if fill.fee_currency and fill.fee_currency == market.get("base"):
            fee *= price  # the fee was taken from the asset bought: its value in the quote
        elif fill.fee_currency and fill.fee_currency != market.get("quote"):
            self.stats["fee_other_currency"] += 1
            fee = 0.0
        pos = self.positions[symbol]
        pprice_orig = pos.price
        dt = bt.date2num(
            datetime.fromtimestamp(fill.timestamp / 1000, timezone.utc).replace(tzinfo=None)
        )
        psize, pprice, opened, closed = pos.update(size, price, dt)
        pnl = comminfo.profitandloss(-closed, pprice_orig, price) if closed else 0.0
        closedvalue = comminfo.getoperationcost(closed, pprice_orig) if closed else 0.0
        openedvalue = comminfo.getoperationcost(opened, price) if opened else 0.0
        closedcomm = fee * abs(closed) / abs(size) if closed else 0.0
        openedcomm = fee - closedcomm
        order.execute(dt, size, price, closed, closedvalue, closedcomm, opened, openedvalue,
                      openedcomm, 0.0, pnl, psize, pprice)  # fmt: skip
        order.status = bt.Order.Partial  # the ledger says when it is complete
        self.stats["fills"] += 1
        self._dirty.add(order.ref)

    # -- emulation -------------------------------------------------------------------------

    def _after_final(self, order) -> None:
        """A final order: release or cancel its children, cancel its OCO siblings, send a
        triggered stop that waited for this cancel."""
        if order.status == bt.Order.Completed:
            self._release_children(order)
        else:
            for child in self._children.get(order.ref, ()):
                if child.alive():
                    self.cancel(child)
        waiting = self._pending_trigger.pop(order.ref, None)
        group = self._oco.get(order.ref, ())
        for member in group:
            if member is order or not member.alive():
                continue
            if order.ref in self._native_legs and member.ref in self._native_legs:
                continue  # the venue ends the other leg itself
            if waiting is member and order.status == bt.Order.Canceled:
                continue  # the resting member was canceled for this stop: send it below
            self.cancel(member)
        if waiting is not None and waiting.alive():
            if order.status == bt.Order.Canceled:
                self._trigger(waiting)
            else:
                self.cancel(waiting)  # the resting member filled first: OCO holds

    def _release_children(self, parent) -> None:
        kids = [c for c in self._children.get(parent.ref, ()) if c.ref in self._held and c.alive()]
        if len(kids) == 2 and self._send_oco(kids):
            return
        for child in self._children.get(parent.ref, ()):
            if child.ref in self._held and child.alive():
                self._held.pop(child.ref)
                self._send(child)

    def _oco_refused(self, limit_cid: str, stop_cid: str, reason: str) -> None:
        """The venue refused the native OCO (the price moved past a leg first): send the
        children as an emulated bracket instead, under new client ids."""
        kids = []
        for cid in (limit_cid, stop_cid):
            t = self.ledger.by_cid.get(cid)
            if t is None or not self.ledger.forget(t.ref):
                return
            order = self.orders[t.ref]
            self._native_legs.discard(order.ref)
            self._cid.pop(order.ref, None)
            kids.append(order)
        log.info("native OCO refused (%s): the bracket's children are emulated", reason)
        self.stats["native_oco_refused"] += 1
        for order in kids:
            self._send(order)

    def _native_oco_ok(self, symbol: str) -> bool:
        if self.p.native_oco is False:
            return False
        ex = self.store.exchange
        market = self._market(symbol)
        if not hasattr(ex, "privatePostOrderListOco") or market.get("spot") is False:
            return False
        types = venue_types(market)
        return self.p.native_oco is True or (
            self.store.exchange_id.startswith("binance")
            and (types is None or "LIMIT_MAKER" in types)
        )

    def _send_oco(self, kids) -> bool:
        """A bracket's take-profit and stop as the venue's own OCO; False when it does not
        fit (then they are sent one by one)."""
        limit = [k for k in kids if k.exectype == bt.Order.Limit]
        stop = [k for k in kids if k.exectype in (bt.Order.Stop, bt.Order.StopLimit)]
        if len(limit) != 1 or len(stop) != 1:
            return False
        limit, stop = limit[0], stop[0]
        symbol = self._symbol(limit.data)
        if not self._native_oco_ok(symbol) or limit.isbuy() != stop.isbuy():
            return False
        amount = abs(limit.created.size)
        if abs(stop.created.size) != amount:
            return False
        market = self._market(symbol)
        stop_limit = stop.created.pricelimit if stop.exectype == bt.Order.StopLimit else None
        for order, price, stop_price in (
            (limit, limit.created.price, None),
            (stop, stop_limit, stop.created.price),
        ):
            problem = check_order(market, amount, price=price, stop=stop_price,
                                  precision_mode=self.store.exchange.precisionMode)  # fmt: skip
            if problem is not None:
                for k in (limit, stop):
                    self._held.pop(k.ref, None)
                self._reject(order, problem)
                return True
        side = "buy" if limit.isbuy() else "sell"
        lcid, scid = self.ids.next(), self.ids.next()
        req = oco_request(symbol, side, amount, limit.created.price, stop.created.price,
                          stop_limit, self.ids.next(), lcid, scid, market)  # fmt: skip
        if isinstance(req, Rejection):
            return False
        for order, cid in ((limit, lcid), (stop, scid)):
            self._held.pop(order.ref, None)
            self._cid[order.ref] = cid
            order.addinfo(client_id=cid)
            self.ledger.track(order.ref, cid, symbol, side, amount).list_leg = True
            self._native_legs.add(order.ref)
        self.stats["native_oco"] += 1
        self._submit_io(self._driver.create_oco(req))
        return True

    def _check_emulated(self) -> None:
        for ref, order in list(self._emulated.items()):
            data = order.data
            if not len(data) or ref in self._resting_of_oco:
                continue
            side = "buy" if order.isbuy() else "sell"
            last = data.close[0]
            if not stop_triggered(side, order.created.price, last):
                continue
            resting = [
                m
                for m in self._oco.get(ref, ())
                if m is not order and m.alive() and m.ref in self._cid
            ]
            if resting:
                self._resting_of_oco[ref] = resting[0].ref
                self._pending_trigger[resting[0].ref] = order
                self.cancel(resting[0])
            else:
                self._trigger(order)

    def _trigger(self, order) -> None:
        """Send an emulated stop as the market (Stop) or limit (StopLimit) order it becomes."""
        self._emulated.pop(order.ref, None)
        self._resting_of_oco.pop(order.ref, None)
        symbol = self._symbol(order.data)
        market = self._market(symbol)
        side = "buy" if order.isbuy() else "sell"
        amount = abs(order.created.size)
        if order.exectype == bt.Order.StopLimit:
            name, price = "Limit", order.created.pricelimit
        else:
            name, price = "Market", None
        cid = self.ids.next()
        req = order_request(symbol, name, side, amount, cid, price, None, market)
        if isinstance(req, Rejection):
            return self._reject(order, req)
        self._cid[order.ref] = cid
        order.addinfo(client_id=cid)
        self.ledger.track(order.ref, cid, symbol, side, amount)
        self.stats["stops_triggered"] += 1
        self._submit_io(self._driver.create(req))
        return None

    def _check_valid(self) -> None:
        for ref, order in list(self.orders.items()):
            if not order.alive() or order.valid is None or ref in self._expiring:
                continue
            data = order.data
            if not len(data) or data.datetime[0] <= order.valid:
                continue
            self._expiring.add(ref)
            if ref in self._held or ref in self._emulated:
                self._held.pop(ref, None)
                self._emulated.pop(ref, None)
                order.expire()
                self.notify(order)
                self._after_final(order)
                continue
            self.ledger.mark_expiring(ref)
            cid = self._cid.get(ref)
            if cid is not None:
                self._submit_io(self._driver.cancel(cid, self._symbol(data)))

    # -- for tests and tools ---------------------------------------------------------------

    def quiet(self) -> bool:
        """Nothing left to apply and no order working (for tests that wait on the broker)."""
        return self.inbox.empty() and not self.ledger.open_orders()


def _log_failure(fut) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is not None:
        log.error("broker I/O failed: %s: %s", type(exc).__name__, exc)


def check_credentials(store) -> None:
    """:class:`MissingCredentialsError` unless the store was given an API key and secret."""
    cfg = store._config
    missing = [k for k in ("apiKey", "secret") if not cfg.get(k)]
    if missing:
        raise MissingCredentialsError(
            f"store.getbroker() needs credentials given explicitly: {', '.join(missing)} "
            "missing from CCXTStore(config={...}); valid choices: "
            "config={'apiKey': ..., 'secret': ...} (try sandbox=True, the testnet, first)"
        )
