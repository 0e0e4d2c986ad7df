"""The matching engine of the local exchange: orders against the replay's own price path.

Sans-I/O and venue-neutral: every call takes the exchange time ``now`` (ms) and returns the
:class:`Event` list the venue's wire turns into its user-data pushes; rejections raise
:class:`Rejected` carrying Binance's code and message (the first protocol served).

The price path is the public trade ledger (``trades.py``): the trades of the exchange's
``trades_timeframe`` candles, which aggregate to those candles exactly. Hence:

* the **current price** at ``now`` is the price of the last public trade at or before ``now``;
* a **market** order (and a limit order that is marketable on arrival: a buy at or above the
  current price, a sell at or below) fills at once, in full, at the current price (taker);
* a resting **limit** order fills when a later public trade crosses its price (a buy when a
  trade is at or below it, a sell at or above), at its own price (maker), stamped with that
  trade's time;
* a **stop** (``STOP_LOSS``: a sell when a trade is at or below the stop price, a buy at or
  above; ``TAKE_PROFIT``: the opposite) triggers on the first public trade that reaches it.
  A stop-market then fills in full at that trade's price; a stop-limit becomes a limit order
  (filled at once at that trade's price if it is marketable there, else resting). A stop that
  would trigger on arrival is rejected, as Binance does;
* **partial fills**: with ``max_fill_qty`` set (the engine's, or the order's own), one public
  trade fills at most that much of a resting order, so a large order fills over several trades
  (``PARTIALLY_FILLED`` in between); immediate fills are split into executions of at most that
  size at the same price and instant (several ``fills`` in one reply, several reports);
* **fees**: ``fee_rate`` of the quote amount of every execution, charged in the **quote**
  asset (a buy pays ``cost + fee``, a sell receives ``cost - fee``), rounded half-up to 1e-8;
* **balances**: a resting buy locks ``qty * price * (1 + fee_rate)`` of the quote asset (a
  stop-market buy: at its stop price), a resting sell locks ``qty`` of the base asset; locks
  are released as the order fills, is canceled or expires. A stop-market buy whose trigger
  price costs more than its free balance then holds expires (``EXPIRED``).

* **OCO** (an order list of two legs, one ``LIMIT_MAKER`` / ``TAKE_PROFIT(_LIMIT)``, the
  other ``STOP_LOSS(_LIMIT)``, the "above" leg's price above the current price and the
  "below" leg's under it): one lock for both (a sell: the quantity; a buy: the dearer leg's
  cost); the first leg to activate (a fill, or a stop's trigger) expires the other; a cancel
  of either leg cancels both.

Every order of a symbol sees every public trade once, in trade-id order, oldest order first,
so the outcome depends only on the clock readings at which it is asked, never on timers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from .accounts import ZERO, Account, Fill, Ledger, Order, OrderList, q8, q8_up

__all__ = [
    "Event",
    "MatchingEngine",
    "OrderRequest",
    "Rejected",
    "SymbolRules",
    "TradePath",
]

ORDER_TYPES = (
    "LIMIT",
    "MARKET",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
    "LIMIT_MAKER",
)
STOP_TYPES = ("STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
LIMIT_PRICED = ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT", "LIMIT_MAKER")
TIME_IN_FORCE = ("GTC", "IOC", "FOK")

MSG_INSUFFICIENT = "Account has insufficient balance for requested action."
MSG_DUPLICATE = "Duplicate order sent."
MSG_UNKNOWN_ORDER = "Unknown order sent."
MSG_STOP_IMMEDIATE = "Stop price would trigger immediately."
MSG_MAKER_TAKES = "Order would immediately match and take."
MSG_OCO_PRICES = "The relationship of the prices for the orders is not correct."
OCO_LIMIT_LEGS = ("LIMIT_MAKER", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
OCO_STOP_LEGS = ("STOP_LOSS", "STOP_LOSS_LIMIT")


class Rejected(Exception):
    """A request the venue refuses: Binance ``code`` and ``msg``."""

    def __init__(self, code: int, msg: str):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg


@dataclass(frozen=True)
class SymbolRules:
    """A market's filters (Binance's ``PRICE_FILTER``, ``LOT_SIZE``, ``NOTIONAL``)."""

    tick: Decimal
    step: Decimal
    min_qty: Decimal
    min_notional: Decimal


@dataclass(frozen=True)
class OrderRequest:
    """A new order as the wire parsed it (quantities and prices validated as numbers)."""

    symbol: str
    side: str  # BUY / SELL
    type: str
    qty: Decimal | None = None
    quote_qty: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str | None = None
    client_order_id: str = ""
    max_fill_qty: Decimal | None = None


@dataclass(frozen=True)
class Event:
    """Something the account's user-data stream reports.

    ``kind``: ``"order"`` (``exec_type`` NEW, TRADE, CANCELED, EXPIRED; ``state`` the order's
    snapshot right after it; ``fill`` for TRADE) or ``"balance"`` (``assets``:
    ``{asset: (free, locked)}`` of the assets that changed).
    """

    kind: str
    account: Account
    time: int
    order: Order | None = None
    exec_type: str = ""
    state: dict = field(default_factory=dict)
    fill: Fill | None = None
    assets: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PathTrade:
    id: int
    time: int
    price: Decimal


class TradePath:
    """The price path over a :class:`~.trades.TradeLedger` (prices in 1e-8 units)."""

    def __init__(self, ledger):
        self.ledger = ledger

    @staticmethod
    def _trade(t) -> PathTrade:
        return PathTrade(t.id, t.time_ms, Decimal(t.price).scaleb(-8))

    def last(self, symbol: str, now: int) -> PathTrade | None:
        rows = self.ledger.recent(symbol, 1, now)
        return self._trade(rows[0]) if rows else None

    def after(self, symbol: str, next_id: int, now: int) -> list[PathTrade]:
        return [self._trade(t) for t in self.ledger.from_id(symbol, next_id, 100_000, now)]

    def next_time(self, symbol: str, next_id: int, now: int, horizon: int) -> int | None:
        rows = self.ledger.from_id(symbol, next_id, 1, now + horizon)
        return rows[0].time_ms if rows else None


class MatchingEngine:
    """Orders of every account of a :class:`~.accounts.Ledger` against a price path.

    Params:
        ledger: the books. path: a :class:`TradePath` (or anything with ``last`` and
            ``after``). rules: ``{symbol: SymbolRules}`` of the served markets.
    """

    def __init__(self, ledger: Ledger, path: TradePath, rules: dict[str, SymbolRules]):
        self.ledger = ledger
        self.path = path
        self.rules = rules
        self.max_fill_qty: Decimal | None = None
        self._cursor: dict[str, int] = {}  # symbol -> next public trade id to match
        self._open: dict[str, list[Order]] = {}  # symbol -> resting orders, oldest first
        self._events: list[Event] = []
        self._touched: dict[Account, set[str]] = {}
        self._lists: dict[tuple[str, int], OrderList] = {}
        #: called with each fill right before its events are recorded (fault hooks)
        self.on_fill: Callable[[Fill], None] | None = None

    # -- queries ----------------------------------------------------------------------------

    def price(self, symbol: str, now: int) -> Decimal | None:
        t = self.path.last(symbol, now)
        return None if t is None else t.price

    def watching(self) -> list[str]:
        """Symbols with resting orders (the ones whose trades are matched)."""
        return [s for s, orders in self._open.items() if orders]

    def next_trade_time(self, now: int, horizon: int) -> int | None:
        """When the next public trade of a watched symbol happens (within ``horizon`` ms)."""
        times = [
            self.path.next_time(s, self._cursor[s], now, horizon)
            for s in self.watching()
            if s in self._cursor
        ]
        times = [t for t in times if t is not None]
        return min(times) if times else None

    # -- the clock --------------------------------------------------------------------------

    def advance(self, now: int) -> list[Event]:
        """Match every public trade up to ``now``; the events that produced."""
        self._match(now)
        return self._take(now)

    def _match(self, now: int) -> None:
        for symbol in list(self._open):
            orders = self._open[symbol]
            if not orders:
                del self._open[symbol]
                self._cursor.pop(symbol, None)
                continue
            for t in self.path.after(symbol, self._cursor[symbol], now):
                self._cursor[symbol] = t.id + 1
                for order in list(orders):
                    if order.is_open:
                        self._on_trade(order, t)
                orders[:] = [o for o in orders if o.is_open]
                if not orders:
                    break

    def _watch(self, order: Order, now: int) -> None:
        symbol = order.symbol
        if symbol not in self._cursor:
            last = self.path.last(symbol, now)
            self._cursor[symbol] = last.id + 1 if last else 0
        self._open.setdefault(symbol, []).append(order)

    def _on_trade(self, order: Order, t: PathTrade) -> None:
        if order.is_stop and not order.triggered:
            if not _reached(order, t.price):
                return
            self._activate(order, t.time)
            order.working_time = t.time
            order.update_time = t.time
            if order.type in ("STOP_LOSS", "TAKE_PROFIT"):
                self._taker_fill(order, t.price, t.time)
                return
            if _marketable(order, t.price):
                self._taker_fill(order, t.price, t.time)
            elif order.time_in_force in ("IOC", "FOK"):
                self._expire(order, t.time)
            return
        if _marketable(order, t.price):
            assert order.price is not None
            self._activate(order, t.time)
            qty = order.remaining
            chunk = order.max_fill_qty or self.max_fill_qty
            if chunk is not None:
                qty = min(qty, chunk)
            self._execute(order, qty, order.price, t.time, maker=True)

    # -- orders -----------------------------------------------------------------------------

    def place(self, account: Account, req: OrderRequest, now: int) -> tuple[Order, list[Event]]:
        """Book a new order (after matching up to ``now``); raises :class:`Rejected`.

        Call :meth:`advance` first: events of the matching up to ``now`` are returned by
        whichever call comes first, and a rejected call returns none."""
        self._match(now)
        order = self._place(account, req, now)  # a rejection books nothing
        return order, self._take(now)

    def _current(self, symbol: str, now: int) -> Decimal:
        last = self.path.last(symbol, now)
        if last is None:
            raise Rejected(-2010, "Market is closed.")
        return last.price

    def _build(self, account: Account, req: OrderRequest, now: int, p: Decimal) -> Order:
        """A checked, unbooked order (filters, duplicate client id)."""
        rules = self.rules.get(req.symbol)
        if rules is None:
            raise Rejected(-1121, "Invalid symbol.")
        if req.type not in ORDER_TYPES:
            raise Rejected(-1116, "Invalid orderType.")
        if req.side not in ("BUY", "SELL"):
            raise Rejected(-1117, "Invalid side.")
        if req.client_order_id:
            for o in self._open.get(req.symbol, ()):
                if o.account is account and o.client_order_id == req.client_order_id:
                    raise Rejected(-2010, MSG_DUPLICATE)
        qty = req.qty
        if req.type == "MARKET" and qty is None:
            assert req.quote_qty is not None
            qty = (req.quote_qty / p / rules.step).to_integral_value(ROUND_DOWN) * rules.step
            if qty <= 0:
                raise Rejected(-1013, "Filter failure: LOT_SIZE")
        assert qty is not None
        if req.type != "MARKET" and (qty < rules.min_qty or qty % rules.step != 0):
            raise Rejected(-1013, "Filter failure: LOT_SIZE")
        for price in (req.price, req.stop_price):
            if price is not None and (price <= 0 or price % rules.tick != 0):
                raise Rejected(-1013, "Filter failure: PRICE_FILTER")
        ref = req.price if req.type in LIMIT_PRICED else (req.stop_price or p)
        if qty * ref < rules.min_notional:
            raise Rejected(-1013, "Filter failure: NOTIONAL")
        order = Order(
            account=account,
            symbol=req.symbol,
            order_id=0,
            client_order_id=req.client_order_id,
            side=req.side,
            type=req.type,
            time_in_force=req.time_in_force if req.type in LIMIT_PRICED else None,
            orig_qty=qty,
            price=req.price if req.type in LIMIT_PRICED else None,
            stop_price=req.stop_price if req.type in STOP_TYPES else None,
            time=now,
            orig_quote_qty=req.quote_qty or ZERO,
            update_time=now,
            max_fill_qty=req.max_fill_qty,
        )
        if order.type == "LIMIT_MAKER":
            order.time_in_force = "GTC"
        return order

    def _place(self, account: Account, req: OrderRequest, now: int) -> Order:
        p = self._current(req.symbol, now)
        order = self._build(account, req, now, p)
        qty, fee = order.orig_qty, account.fee_rate
        if order.is_stop and _reached(order, p):
            raise Rejected(-2010, MSG_STOP_IMMEDIATE)
        marketable = order.type == "MARKET" or (
            not order.is_stop and order.price is not None and _marketable(order, p)
        )
        if order.type == "LIMIT_MAKER" and marketable:
            raise Rejected(-2010, MSG_MAKER_TAKES)
        resting = not marketable and (order.is_stop or order.time_in_force == "GTC")
        if marketable:
            need = _cost_with_fee(qty, p, fee) if order.side == "BUY" else qty
            asset = order.quote if order.side == "BUY" else order.base
            if self.ledger.free(account, asset) < need:
                raise Rejected(-2010, MSG_INSUFFICIENT)
        elif resting:
            if order.side == "BUY":
                lock_price = order.price if order.price is not None else order.stop_price
                assert lock_price is not None
                amount, asset = _cost_with_fee(qty, lock_price, fee), order.quote
            else:
                amount, asset = qty, order.base
            if not self.ledger.lock(account, asset, amount):
                raise Rejected(-2010, MSG_INSUFFICIENT)
            order.locked, order.lock_asset = amount, asset
            self._touch(account, asset)
        # accepted: from here on nothing raises
        order.order_id = self.ledger.new_order_id(order.symbol)
        if not order.is_stop:
            order.working_time = now
        self.ledger.add_order(order)
        self._report(order, "NEW", now)
        if marketable:
            self._taker_fill(order, p, now)
        elif resting:
            self._watch(order, now)
        else:  # IOC / FOK that cannot fill now
            self._expire(order, now)
        return order

    def cancel(
        self,
        account: Account,
        symbol: str,
        now: int,
        order_id: int | None = None,
        orig_client_order_id: str | None = None,
        cancel_client_order_id: str = "",
    ) -> tuple[Order, list[Event]]:
        """Cancel an open order (after matching up to ``now``); -2011 if it is not open."""
        self._match(now)
        order = self.find(account, symbol, order_id, orig_client_order_id)
        if order is None or not order.is_open:
            raise Rejected(-2011, MSG_UNKNOWN_ORDER)
        order.cancel_client_order_id = cancel_client_order_id
        for leg in self._legs(order):  # a leg of an OCO cancels the whole list
            if leg.is_open:
                self._cancel_one(leg, now)
        return order, self._take(now)

    def _cancel_one(self, order: Order, now: int) -> None:
        self._release(order)
        order.status = "CANCELED"
        order.update_time = now
        self._report(order, "CANCELED", now)

    # -- order lists (OCO) ------------------------------------------------------------------

    def place_oco(
        self,
        account: Account,
        above: OrderRequest,
        below: OrderRequest,
        list_client_order_id: str,
        now: int,
    ) -> tuple[OrderList, list[Event]]:
        """Book an OCO of two legs of one side and quantity; raises :class:`Rejected`."""
        self._match(now)
        order_list = self._place_oco(account, above, below, list_client_order_id, now)
        return order_list, self._take(now)

    def _place_oco(
        self, account: Account, above: OrderRequest, below: OrderRequest, list_cid: str, now: int
    ) -> OrderList:
        sell = above.side == "SELL"
        want = (OCO_LIMIT_LEGS, OCO_STOP_LEGS) if sell else (OCO_STOP_LEGS, OCO_LIMIT_LEGS)
        if above.type not in want[0] or below.type not in want[1]:
            raise Rejected(-1168, "At least one OCO order must be contingent.")
        if above.side != below.side or above.qty != below.qty or above.symbol != below.symbol:
            raise Rejected(-1014, "Unsupported order combination.")
        if above.client_order_id and above.client_order_id == below.client_order_id:
            raise Rejected(-2010, MSG_DUPLICATE)
        p = self._current(above.symbol, now)
        legs = [self._build(account, req, now, p) for req in (above, below)]
        key = [leg.price if leg.type == "LIMIT_MAKER" else leg.stop_price for leg in legs]
        assert key[0] is not None and key[1] is not None
        if not key[0] > p > key[1]:
            raise Rejected(-2010, MSG_OCO_PRICES)
        first = legs[0]
        if sell:
            amount, asset = first.orig_qty, first.base
        else:
            amount = max(_lock_share(leg, leg.orig_qty) for leg in legs)
            asset = first.quote
        if not self.ledger.lock(account, asset, amount):
            raise Rejected(-2010, MSG_INSUFFICIENT)
        self._touch(account, asset)
        list_id = self.ledger.new_list_id()
        order_list = OrderList(account, first.symbol, list_id, list_cid, legs, now, update_time=now)
        self.ledger.add_list(order_list)
        self._lists[(first.symbol, list_id)] = order_list
        first.locked = amount
        for leg in legs:
            leg.lock_asset = asset
            leg.list_id = list_id
            leg.order_id = self.ledger.new_order_id(leg.symbol)
            if not leg.is_stop:
                leg.working_time = now
            self.ledger.add_order(leg)
        for leg in legs:
            self._report(leg, "NEW", now)
        self._list_event(order_list, now)
        for leg in legs:
            self._watch(leg, now)
        return order_list

    def cancel_list(
        self,
        account: Account,
        symbol: str,
        now: int,
        list_id: int | None = None,
        list_client_order_id: str | None = None,
    ) -> tuple[OrderList, list[Event]]:
        """Cancel an executing OCO; ``-2011`` if there is none."""
        self._match(now)
        order_list = None
        if list_id is not None:
            order_list = self.ledger.order_list(account, symbol, list_id)
        elif list_client_order_id is not None:
            order_list = self.ledger.order_list_by_client_id(account, list_client_order_id)
        if order_list is None or order_list.status != "EXECUTING":
            raise Rejected(-2011, MSG_UNKNOWN_ORDER)
        for leg in order_list.orders:
            if leg.is_open:
                self._cancel_one(leg, now)
        return order_list, self._take(now)

    def _legs(self, order: Order) -> list[Order]:
        if order.list_id < 0:
            return [order]
        return self._lists[(order.symbol, order.list_id)].orders

    def _activate(self, order: Order, time: int) -> None:
        """A leg of an OCO fills or triggers: the other leg expires, its lock moves over."""
        if order.list_id < 0:
            return
        for other in self._legs(order):
            if other is not order and other.is_open:
                if other.locked > 0:
                    order.locked += other.locked
                    other.locked = ZERO
                other.status = "EXPIRED"
                other.update_time = time
                self._report(other, "EXPIRED", time)

    def _list_event(self, order_list: OrderList, time: int) -> None:
        self._events.append(Event("list", order_list.account, time, state=order_list.snapshot()))

    def fill_now(self, order: Order, now: int) -> list[Event]:
        """Fill an open order in full at the current price, as if the path reached it now
        (the cancel-races-fill fault)."""
        if order.is_open:
            p = self.price(order.symbol, now)
            assert p is not None
            self._activate(order, now)
            if order.is_stop and not order.triggered:
                order.working_time = now
            if order.price is None:  # a stop-market: at the current price, funds permitting
                self._taker_fill(order, p, now)
            else:
                self._fill_chunks(order, order.remaining, order.price, now, maker=True)
        return self._take(now)

    def find(
        self,
        account: Account,
        symbol: str,
        order_id: int | None = None,
        orig_client_order_id: str | None = None,
    ) -> Order | None:
        if order_id is not None:
            order = self.ledger.order(account, symbol, order_id)
            if order is not None and orig_client_order_id is not None:
                if order.client_order_id != orig_client_order_id:
                    return None
            return order
        if orig_client_order_id is not None:
            return self.ledger.order_by_client_id(account, symbol, orig_client_order_id)
        return None

    # -- executions -------------------------------------------------------------------------

    def _taker_fill(self, order: Order, price: Decimal, time: int) -> None:
        if order.side == "BUY" and order.locked > 0 and order.price is None:
            # a stop-market buy: its lock was at the stop price; pay at the trigger's
            self._release(order)
            if self.ledger.free(order.account, order.quote) < _cost_with_fee(
                order.remaining, price, order.account.fee_rate
            ):
                self._expire(order, time)
                return
        self._fill_chunks(order, order.remaining, price, time, maker=False)

    def _fill_chunks(self, order: Order, qty: Decimal, price: Decimal, time: int, maker: bool):
        chunk = order.max_fill_qty or self.max_fill_qty
        while qty > 0 and order.is_open:
            part = qty if chunk is None else min(qty, chunk)
            self._execute(order, part, price, time, maker)
            qty -= part

    def _execute(self, order: Order, qty: Decimal, price: Decimal, time: int, maker: bool):
        account, ledger = order.account, self.ledger
        fee_rate = account.fee_rate
        quote_qty = q8(qty * price)
        commission = (quote_qty * fee_rate).quantize(Decimal("1e-8"), rounding=ROUND_HALF_UP)
        last = qty == order.remaining
        if order.side == "BUY":
            if order.locked > 0:
                share = order.locked if last else min(order.locked, _lock_share(order, qty))
                ledger.unlock(account, order.quote, share)
                order.locked -= share
            ledger.debit(account, order.quote, quote_qty + commission)
            ledger.credit(account, order.base, qty)
        else:
            if order.locked > 0:
                ledger.spend_locked(account, order.base, qty)
                order.locked -= qty
            else:
                ledger.debit(account, order.base, qty)
            ledger.credit(account, order.quote, quote_qty - commission)
        self._touch(account, order.base, order.quote)
        order.executed_qty += qty
        order.cum_quote += quote_qty
        order.status = "FILLED" if order.remaining == 0 else "PARTIALLY_FILLED"
        order.update_time = time
        fill = Fill(
            trade_id=ledger.new_trade_id(order.symbol),
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            price=price,
            qty=qty,
            quote_qty=quote_qty,
            commission=commission,
            commission_asset=order.quote,
            is_maker=maker,
            time=time,
        )
        ledger.add_fill(account, fill)
        if self.on_fill is not None:
            self.on_fill(fill)
        self._report(order, "TRADE", time, fill)

    def _expire(self, order: Order, time: int) -> None:
        self._release(order)
        order.status = "EXPIRED"
        order.update_time = time
        self._report(order, "EXPIRED", time)

    def _release(self, order: Order) -> None:
        if order.locked > 0:
            self.ledger.unlock(order.account, order.lock_asset, order.locked)
            self._touch(order.account, order.lock_asset)
            order.locked = ZERO

    # -- events -----------------------------------------------------------------------------

    def _touch(self, account: Account, *assets: str) -> None:
        self._touched.setdefault(account, set()).update(assets)

    def _report(self, order: Order, exec_type: str, time: int, fill: Fill | None = None):
        self.ledger.touch(order.account, time)
        self._events.append(
            Event("order", order.account, time, order, exec_type, order.snapshot(), fill)
        )
        if order.list_id >= 0 and not order.is_open:
            order_list = self._lists[(order.symbol, order.list_id)]
            if order_list.status == "EXECUTING" and not any(o.is_open for o in order_list.orders):
                order_list.status = "ALL_DONE"
                order_list.update_time = time
                self._list_event(order_list, time)

    def _take(self, now: int) -> list[Event]:
        """The events recorded since the last take, each account's balance change last."""
        for account, assets in self._touched.items():
            bal = self.ledger.balances(account)
            changed = {a: bal[a] for a in sorted(assets)}
            self._events.append(Event("balance", account, now, assets=changed))
        self._touched.clear()
        events, self._events = self._events, []
        return events


def _reached(order: Order, price: Decimal) -> bool:
    """Whether ``price`` triggers the stop ``order``."""
    stop = order.stop_price
    assert stop is not None
    falling = (order.type.startswith("STOP_LOSS")) == (order.side == "SELL")
    return price <= stop if falling else price >= stop


def _marketable(order: Order, price: Decimal) -> bool:
    limit = order.price
    assert limit is not None
    return price <= limit if order.side == "BUY" else price >= limit


def _cost_with_fee(qty: Decimal, price: Decimal, fee_rate: Decimal) -> Decimal:
    cost = q8(qty * price)
    return cost + q8_up(cost * fee_rate)


def _lock_share(order: Order, qty: Decimal) -> Decimal:
    price = order.price if order.price is not None else order.stop_price
    assert price is not None
    return _cost_with_fee(qty, price, order.account.fee_rate)
