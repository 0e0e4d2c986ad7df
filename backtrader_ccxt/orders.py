"""The broker's rules, sans I/O: client order ids, the order state machine, fills counted once,
what to do after a failed create, and the checks an order passes before it leaves.

Nothing here calls ccxt or touches a backtrader object: the loop thread turns ccxt's answers
into :class:`OrderReport` and :class:`Fill` (frozen, safe to pass between threads), and
backtrader's thread feeds them to :class:`OrderLedger`, which says what happened to each order
as :class:`Event` items. The rules, and the trap in ccxt or Binance each one designs around:

* **Client ids** (:class:`ClientIds`): ``<prefix>-<run>-<n>``, at most 36 characters of
  ``[.A-Z:/a-z0-9_-]`` (Binance's rule; ``'bt-' + uuid4`` is 39). The run token is new for every
  process, so a restart never reuses an id: Binance keeps client ids unique among *open* orders
  only, so a resent id of a filled order would be a second order.
* **Fills are counted once, by trade id** (:meth:`OrderLedger.on_fill`), never from a report's
  cumulative ``filled`` or Binance's ``info['l']``: ccxt.pro's ``watch_orders`` passes
  duplicates through and lets an older event overwrite a newer one.
* **Reports are ordered** (:meth:`OrderLedger.on_report`): a report with less filled than one
  already seen, or an open status after a final one, is stale and ignored; a final status is
  only notified once the fills it implies have been counted (the trades may come later, or from
  REST), so ``Completed`` always comes after the last ``Partial``.
* **A failed create is never resent** (:func:`after_create_error`): 429 and timeouts are both
  ``NetworkError`` in ccxt, and the order may be booked. The driver looks the order up by client
  id; only after the exchange's ``recvWindow`` has passed since the request was signed (after
  which Binance refuses it) does "no such order" mean it was not placed
  (:func:`after_lookup`).
* **A cancel's report is matched by the original id**: a REST cancel answers with the cancel's
  own ``clientOrderId``, the order's own in ``info['origClientOrderId']``
  (:func:`client_id_of`).
* **Precision and limits** (:func:`check_order`): tick, step, minimum and maximum amount and
  minimum notional, from the market ccxt loaded; an order that does not fit is rejected with a
  :class:`Rejection` naming the rule and the nearest valid values, never silently rounded.
* **Market orders carry no price** (:func:`order_request`): ccxt's Binance turns a market
  order with a price into ``quoteOrderQty = amount * price``, a different size.
"""

from __future__ import annotations

import enum
import itertools
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation

import ccxt

__all__ = [
    "CLIENT_ID_RE",
    "ClientIds",
    "Decision",
    "Event",
    "Fill",
    "OrderLedger",
    "OrderReport",
    "OcoRequest",
    "OrderRequest",
    "Rejection",
    "St",
    "after_create_error",
    "after_lookup",
    "check_order",
    "client_id_of",
    "dec",
    "fill_from_ccxt",
    "oco_request",
    "order_request",
    "report_from_ccxt",
]

#: Binance's rule for ``newClientOrderId`` (spot): the strictest of the venues we speak
CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")

_B32 = "0123456789abcdefghijklmnopqrstuv"


def dec(value) -> Decimal | None:
    """A Decimal of a ccxt number (float, str, int) by its shortest repr; None stays None."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(repr(value) if isinstance(value, float) else str(value))
    except (InvalidOperation, ValueError):
        return None


# -- client order ids -----------------------------------------------------------------------


class ClientIds:
    """Client order ids unique per run and across restarts: ``<prefix>-<run>-<n>``.

    ``run`` is 11 base-32 characters: 41 bits of the millisecond clock (unique across
    restarts that are a millisecond apart) and 14 random bits (two processes started in the
    same millisecond). ``prefix`` (default ``'bt'``) must itself be a valid id part and leave
    room for the counter.
    """

    def __init__(self, prefix: str = "bt", run: str | None = None) -> None:
        if not isinstance(prefix, str) or not re.fullmatch(r"[.A-Za-z:/0-9_]{1,12}", prefix):
            raise ValueError(
                f"client id prefix must be 1 to 12 characters of [.A-Za-z:/0-9_], got {prefix!r}"
            )
        if run is None:
            stamp = (int(time.time() * 1000) & ((1 << 41) - 1)) << 14
            bits = stamp | (int.from_bytes(os.urandom(2), "big") & 0x3FFF)
            run = "".join(_B32[(bits >> (5 * i)) & 31] for i in reversed(range(11)))
        self.prefix = prefix
        self.run = run
        self._head = f"{prefix}-{run}-"
        self._count = itertools.count(1)
        if not CLIENT_ID_RE.match(self._head + "999999999"):
            raise ValueError(f"client ids {self._head}<n> would not match {CLIENT_ID_RE.pattern}")

    def next(self) -> str:
        cid = f"{self._head}{next(self._count)}"
        assert CLIENT_ID_RE.match(cid), cid  # noqa: S101 - the constructor guarantees it
        return cid

    def ours(self, client_id: str | None) -> bool:
        """Whether ``client_id`` was made by a broker with this prefix (this run or another)."""
        return bool(client_id) and client_id.startswith(f"{self.prefix}-")

    def this_run(self, client_id: str | None) -> bool:
        return bool(client_id) and client_id.startswith(self._head)


# -- what crosses from the loop thread --------------------------------------------------------


class St(enum.IntEnum):
    """Backtrader's order statuses (same numbers as ``bt.Order``)."""

    CREATED = 0
    SUBMITTED = 1
    ACCEPTED = 2
    PARTIAL = 3
    COMPLETED = 4
    CANCELED = 5
    EXPIRED = 6
    MARGIN = 7
    REJECTED = 8


FINAL = frozenset({St.COMPLETED, St.CANCELED, St.EXPIRED, St.MARGIN, St.REJECTED})

#: ccxt's unified order status -> ours (None: still working)
_CCXT_STATUS = {
    "open": None,
    "closed": St.COMPLETED,
    "canceled": St.CANCELED,
    "cancelled": St.CANCELED,
    "expired": St.EXPIRED,
    "rejected": St.REJECTED,
}


@dataclass(frozen=True)
class OrderReport:
    """What the exchange said about one order (a create reply, a stream event, a REST read).

    ``filled`` is the exchange's cumulative filled amount: used to order reports and to know
    that fills are still to come, never to execute anything.
    """

    client_id: str | None
    order_id: str | None
    status: str  # ccxt unified: open, closed, canceled, expired, rejected
    filled: Decimal
    amount: Decimal | None = None
    symbol: str | None = None
    side: str | None = None
    timestamp: int | None = None
    source: str = "rest"
    reason: str = ""


@dataclass(frozen=True)
class Fill:
    """One execution (one trade id) of one order."""

    trade_id: str
    order_id: str | None
    client_id: str | None
    symbol: str
    side: str
    price: Decimal
    amount: Decimal
    fee: Decimal
    fee_currency: str | None
    timestamp: int
    source: str = "rest"


def client_id_of(order: Mapping) -> str | None:
    """The order's own client id from a ccxt order: a REST cancel's reply carries the cancel's
    id in ``clientOrderId`` and the order's in ``info['origClientOrderId']``."""
    info = order.get("info") or {}
    orig = info.get("origClientOrderId") if isinstance(info, Mapping) else None
    return str(orig) if orig else (order.get("clientOrderId") or None)


def report_from_ccxt(order: Mapping, source: str = "rest") -> OrderReport:
    """An :class:`OrderReport` of a ccxt order structure."""
    info = order.get("info") or {}
    stamp = order.get("lastUpdateTimestamp") or order.get("timestamp")
    if isinstance(info, Mapping):
        # Binance: the stream's transaction time / REST updateTime order events exactly
        stamp = info.get("T") or info.get("updateTime") or info.get("transactTime") or stamp
    return OrderReport(
        client_id=client_id_of(order),
        order_id=str(order["id"]) if order.get("id") is not None else None,
        status=str(order.get("status") or "open"),
        filled=dec(order.get("filled")) or Decimal(0),
        amount=dec(order.get("amount")),
        symbol=order.get("symbol"),
        side=order.get("side"),
        timestamp=int(stamp) if stamp is not None else None,
        source=source,
    )


def fill_from_ccxt(trade: Mapping, source: str = "rest") -> Fill | None:
    """A :class:`Fill` of a ccxt trade structure (``fetch_my_trades``, ``watch_my_trades``), or
    None when it has no trade id (it cannot be counted exactly once)."""
    if trade.get("id") is None:
        return None
    info = trade.get("info") or {}
    cid = None
    if isinstance(info, Mapping):
        cid = info.get("c") or info.get("clientOrderId")
    fee = trade.get("fee") or {}
    return Fill(
        trade_id=str(trade["id"]),
        order_id=str(trade["order"]) if trade.get("order") is not None else None,
        client_id=str(cid) if cid else None,
        symbol=str(trade.get("symbol")),
        side=str(trade.get("side")),
        price=dec(trade.get("price")) or Decimal(0),
        amount=dec(trade.get("amount")) or Decimal(0),
        fee=dec(fee.get("cost")) or Decimal(0),
        fee_currency=fee.get("currency"),
        timestamp=int(trade.get("timestamp") or 0),
        source=source,
    )


# -- the ledger ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """What happened to one tracked order: ``kind`` is ``'status'`` (``status`` set),
    ``'fill'`` (``fill`` set) or ``'need_fills'`` (the exchange reports more filled than the
    fills counted: the driver should read the order's trades over REST)."""

    kind: str
    ref: int
    status: St | None = None
    fill: Fill | None = None
    reason: str = ""


@dataclass
class Tracked:
    ref: int
    client_id: str
    symbol: str
    side: str
    amount: Decimal
    order_id: str | None = None
    status: St = St.SUBMITTED
    filled: Decimal = Decimal(0)
    reported_filled: Decimal = Decimal(0)
    reported_final: St | None = None
    final_reason: str = ""
    last_stamp: int = -1
    expiring: bool = False
    #: a leg of a native order list (OCO): the venue expires it when the other leg fills
    list_leg: bool = False
    fills: list = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.status not in FINAL

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled


class OrderLedger:
    """Every order this broker sent, keyed by client id, and every fill counted (by trade id).

    Feed it :class:`OrderReport` and :class:`Fill` in any order, with duplicates; it returns
    the :class:`Event` list to apply to backtrader's orders, each at most once.
    """

    def __init__(self) -> None:
        self.by_cid: dict[str, Tracked] = {}
        self.by_ref: dict[int, Tracked] = {}
        self._by_oid: dict[str, Tracked] = {}
        self.trade_ids: set[str] = set()
        self._orphans: dict[str, list[Fill]] = {}  # fills of an order id not yet known
        self.stats: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def track(self, ref: int, client_id: str, symbol: str, side: str, amount) -> Tracked:
        if client_id in self.by_cid:
            raise ValueError(f"client id {client_id!r} is already tracked")
        t = Tracked(ref, client_id, symbol, side, dec(amount))
        self.by_cid[client_id] = t
        self.by_ref[ref] = t
        return t

    def find(self, client_id: str | None = None, order_id: str | None = None) -> Tracked | None:
        if client_id and client_id in self.by_cid:
            return self.by_cid[client_id]
        if order_id and order_id in self._by_oid:
            return self._by_oid[order_id]
        return None

    def open_orders(self) -> list[Tracked]:
        return [t for t in self.by_cid.values() if t.alive]

    def _bind(self, t: Tracked, order_id: str | None) -> list[Event]:
        if not order_id or t.order_id == order_id:
            return []
        t.order_id = order_id
        self._by_oid[order_id] = t
        events: list[Event] = []
        for f in self._orphans.pop(order_id, []):
            events += self._apply_fill(t, f)
        return events

    def forget(self, ref: int) -> bool:
        """Drop an order that certainly never reached the book (no fills), so that it can be
        sent again under a new client id."""
        t = self.by_ref.get(ref)
        if t is None or t.fills or t.order_id:
            return False
        del self.by_ref[ref]
        del self.by_cid[t.client_id]
        return True

    def mark_expiring(self, ref: int) -> None:
        """The broker cancels this order because its ``valid`` passed: its cancel is an
        expiry."""
        t = self.by_ref.get(ref)
        if t is not None:
            t.expiring = True

    def finish(self, ref: int, status: St, reason: str = "") -> list[Event]:
        """A final status decided by the broker itself (rejected before sending, margin, a
        create that certainly did not reach the book)."""
        t = self.by_ref.get(ref)
        if t is None or not t.alive:
            return []
        t.status = status
        t.final_reason = reason
        return [Event("status", t.ref, status, reason=reason)]

    def on_report(self, r: OrderReport) -> list[Event]:
        self._count(f"report_from_{r.source}")
        t = self.find(r.client_id, r.order_id)
        if t is None:
            self._count("report_foreign")
            return []
        events = self._bind(t, r.order_id)
        if not t.alive:
            self._count("report_after_final")
            return events
        final = _CCXT_STATUS.get(r.status.lower(), None)
        if r.status.lower() not in _CCXT_STATUS:
            self._count("report_unknown_status")
            return events
        stamp = r.timestamp if r.timestamp is not None else -1
        if r.filled < t.reported_filled or (t.reported_final is not None and final is None):
            self._count("report_stale")  # an older event after a newer one
            return events
        if (
            r.filled == t.reported_filled
            and final == t.reported_final
            and t.status is not St.SUBMITTED
        ):
            self._count("report_duplicate")
            return events
        if stamp < t.last_stamp and final is None:
            self._count("report_stale")
            return events
        t.last_stamp = max(t.last_stamp, stamp)
        t.reported_filled = r.filled
        if t.status is St.SUBMITTED:
            t.status = St.ACCEPTED
            events.append(Event("status", t.ref, St.ACCEPTED))
        if final is not None:
            if final is St.CANCELED and t.expiring:
                final = St.EXPIRED
            elif final is St.EXPIRED and t.list_leg and not t.expiring:
                final = St.CANCELED  # Binance expires the OCO leg that lost: backtrader cancels
            t.reported_final = final
            t.final_reason = r.reason
        return events + self._settle(t)

    def _settle(self, t: Tracked) -> list[Event]:
        """The final status, once every fill it implies is counted."""
        if not t.alive:
            return []
        if t.filled >= t.amount:
            t.status = St.COMPLETED
            return [Event("status", t.ref, St.COMPLETED)]
        if t.reported_final is None:
            return []
        if t.filled < t.reported_filled or t.reported_final is St.COMPLETED:
            self._count("fills_missing")
            return [Event("need_fills", t.ref)]
        t.status = t.reported_final
        return [Event("status", t.ref, t.status, reason=t.final_reason)]

    def on_fill(self, f: Fill) -> list[Event]:
        if f.trade_id in self.trade_ids:
            self._count("fill_duplicate")
            return []
        t = self.find(f.client_id, f.order_id)
        if t is None:
            if f.order_id and f.client_id is None:
                # the create reply (with the order id) may still be on its way
                pending = self._orphans.setdefault(f.order_id, [])
                if all(p.trade_id != f.trade_id for p in pending):
                    pending.append(f)
            self._count("fill_foreign")
            return []
        events = self._bind(t, f.order_id)
        return events + self._apply_fill(t, f)

    def _apply_fill(self, t: Tracked, f: Fill) -> list[Event]:
        if f.trade_id in self.trade_ids:
            return []
        self.trade_ids.add(f.trade_id)
        self._count(f"fill_from_{f.source}")
        if f.amount <= 0:
            self._count("fill_empty")
            return []
        events: list[Event] = []
        if t.status is St.SUBMITTED:
            t.status = St.ACCEPTED
            events.append(Event("status", t.ref, St.ACCEPTED))
        if not t.alive:
            # a fill after the broker gave up on the order (cannot happen on a venue that
            # honours recvWindow): still counted, so positions stay true
            self._count("fill_after_final")
        if f.amount > t.remaining:
            self._count("fill_overfill")
        t.filled += f.amount
        t.reported_filled = max(t.reported_filled, t.filled)
        t.fills.append(f)
        events.append(Event("fill", t.ref, fill=f))
        if t.alive and t.filled < t.amount:
            t.status = St.PARTIAL
        return events + self._settle(t)


# -- after a failed create ----------------------------------------------------------------


class Decision(enum.Enum):
    """What the driver does after ``create_order`` raised."""

    #: the exchange answered no: the order is not on the book (final: REJECTED or MARGIN)
    FINAL = "final"
    #: the answer is unknown (timeout, 429, a dropped socket): look the order up by client id
    LOOKUP = "lookup"


def after_create_error(exc: BaseException) -> tuple[Decision, St | None]:
    """Never "retry": a ``NetworkError`` (timeouts, 429, 5xx) may have booked the order."""
    if isinstance(exc, ccxt.InsufficientFunds):
        return Decision.FINAL, St.MARGIN
    if isinstance(exc, ccxt.InvalidNonce):
        # -1021 (a NetworkError in ccxt): refused for its timestamp, certainly not booked
        return Decision.FINAL, St.REJECTED
    if isinstance(exc, ccxt.NetworkError):
        return Decision.LOOKUP, None
    if isinstance(exc, ccxt.BaseError):
        # the exchange said what is wrong (bad order, bad key, bad symbol, ...)
        return Decision.FINAL, St.REJECTED
    return Decision.LOOKUP, None  # below ccxt (a reset socket): the answer is unknown


def after_lookup(found: bool, signed_ms: int, now_ms: int, recv_window_ms: int) -> str:
    """After a lookup by client id: ``'adopt'`` (found), ``'gone'`` (not found, and the request
    can no longer be accepted: its ``recvWindow`` has passed on the exchange clock) or
    ``'wait'`` (not found yet: look again later)."""
    if found:
        return "adopt"
    if now_ms > signed_ms + recv_window_ms:
        return "gone"
    return "wait"


# -- before an order leaves ---------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """Why an order was not sent: ``code`` is one of ``amount_step``, ``price_tick``,
    ``min_amount``, ``max_amount``, ``min_price``, ``max_price``, ``min_notional``,
    ``max_notional``, ``bad_size``, ``bad_price``, ``unsupported``."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def _step_of(precision, mode: int) -> Decimal | None:
    p = dec(precision)
    if p is None or p <= 0 and mode != ccxt.DECIMAL_PLACES:
        return None
    if mode == ccxt.DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(p))
    if mode == ccxt.SIGNIFICANT_DIGITS:
        return None  # no fixed step
    return p  # TICK_SIZE


def _on_grid(value: Decimal, step: Decimal | None) -> bool:
    return step is None or (value % step) == 0


def _neighbours(value: Decimal, step: Decimal) -> str:
    lo = (value // step) * step
    return f"{lo.normalize():f} or {(lo + step).normalize():f}"


def check_order(
    market: Mapping,
    amount,
    price=None,
    stop=None,
    reference_price=None,
    precision_mode: int = ccxt.TICK_SIZE,
) -> Rejection | None:
    """None when the order fits the market's precision and limits, else a :class:`Rejection`.

    ``price`` is the limit price (None for market orders); ``reference_price`` the price a
    market order is expected at (the feed's last close), for the minimum notional.
    """
    a = dec(amount)
    symbol = market.get("symbol", "?")
    if a is None or not a.is_finite() or a <= 0:
        return Rejection("bad_size", f"{symbol}: size must be a positive number, got {amount!r}")
    prec = market.get("precision") or {}
    limits = market.get("limits") or {}
    step = _step_of(prec.get("amount"), precision_mode)
    if not _on_grid(a, step):
        return Rejection(
            "amount_step",
            f"{symbol}: size {a:f} is not a multiple of the step {step.normalize():f}; "
            f"valid nearby: {_neighbours(a, step)}",
        )
    lim_a = limits.get("amount") or {}
    if lim_a.get("min") is not None and a < dec(lim_a["min"]):
        return Rejection("min_amount", f"{symbol}: size {a:f} is below the minimum {lim_a['min']}")
    if lim_a.get("max") is not None and a > dec(lim_a["max"]):
        return Rejection("max_amount", f"{symbol}: size {a:f} is above the maximum {lim_a['max']}")
    tick = _step_of(prec.get("price"), precision_mode)
    lim_p = limits.get("price") or {}
    for what, value in (("price", price), ("stop price", stop)):
        if value is None:
            continue
        p = dec(value)
        if p is None or not p.is_finite() or p <= 0:
            return Rejection("bad_price", f"{symbol}: {what} must be positive, got {value!r}")
        if not _on_grid(p, tick):
            return Rejection(
                "price_tick",
                f"{symbol}: {what} {p:f} is not a multiple of the tick {tick.normalize():f}; "
                f"valid nearby: {_neighbours(p, tick)}",
            )
        if lim_p.get("min") is not None and p < dec(lim_p["min"]):
            return Rejection("min_price", f"{symbol}: {what} {p:f} is below {lim_p['min']}")
        if lim_p.get("max") is not None and dec(lim_p["max"]) > 0 and p > dec(lim_p["max"]):
            return Rejection("max_price", f"{symbol}: {what} {p:f} is above {lim_p['max']}")
    at = dec(price if price is not None else (stop if stop is not None else reference_price))
    lim_c = limits.get("cost") or {}
    if at is not None:
        notional = a * at
        if lim_c.get("min") is not None and notional < dec(lim_c["min"]):
            return Rejection(
                "min_notional",
                f"{symbol}: notional {notional.normalize():f} (size x price) is below the "
                f"minimum {lim_c['min']}",
            )
        if lim_c.get("max") is not None and notional > dec(lim_c["max"]):
            return Rejection(
                "max_notional",
                f"{symbol}: notional {notional.normalize():f} is above the maximum {lim_c['max']}",
            )
    return None


@dataclass(frozen=True)
class OrderRequest:
    """The arguments of one ``create_order`` call."""

    symbol: str
    type: str
    side: str
    amount: float
    price: float | None
    params: Mapping

    def with_params(self, **more) -> OrderRequest:
        return replace(self, params={**self.params, **more})


#: backtrader exectype name -> Binance spot order type it needs (``market['info']['orderTypes']``)
_NEEDS = {"Market": "MARKET", "Limit": "LIMIT", "Stop": "STOP_LOSS", "StopLimit": "STOP_LOSS_LIMIT"}


def venue_types(market: Mapping) -> frozenset[str] | None:
    """The order types the venue lists for this market (Binance: ``info['orderTypes']``), or
    None when it does not say."""
    info = market.get("info") or {}
    types = info.get("orderTypes") if isinstance(info, Mapping) else None
    return frozenset(types) if isinstance(types, Iterable) and not isinstance(types, str) else None


def native_stops(market: Mapping) -> bool:
    types = venue_types(market)
    return types is None or {"STOP_LOSS", "STOP_LOSS_LIMIT"} <= types


def order_request(
    symbol: str,
    exectype: str,
    side: str,
    amount,
    client_id: str,
    price=None,
    plimit=None,
    market: Mapping | None = None,
) -> OrderRequest | Rejection:
    """The ``create_order`` arguments for a backtrader order, sent natively.

    ``exectype`` is backtrader's name (``Market``, ``Limit``, ``Stop``, ``StopLimit``); for a
    Stop ``price`` is the trigger, for a StopLimit ``price`` the trigger and ``plimit`` the
    limit. A market order is sent without a price, whatever backtrader stored in it.
    """
    types = venue_types(market or {})
    needs = _NEEDS.get(exectype)
    if needs is None:
        return Rejection(
            "unsupported",
            f"exectype {exectype} is not supported; valid choices: {', '.join(_NEEDS)}",
        )
    if types is not None and needs not in types:
        return Rejection(
            "unsupported",
            f"{symbol}: the venue offers no {needs} orders (it lists {', '.join(sorted(types))})",
        )
    params = {"clientOrderId": client_id}
    a = float(amount)
    if exectype == "Market":
        return OrderRequest(symbol, "market", side, a, None, params)
    if exectype == "Limit":
        return OrderRequest(symbol, "limit", side, a, float(price), params)
    if exectype == "Stop":
        return OrderRequest(symbol, "market", side, a, None, {**params, "triggerPrice": price})
    return OrderRequest(
        symbol, "limit", side, a, float(plimit), {**params, "triggerPrice": float(price)}
    )


@dataclass(frozen=True)
class OcoRequest:
    """Binance's native OCO (``POST /api/v3/orderList/oco``): a take-profit ``LIMIT_MAKER``
    and a ``STOP_LOSS`` (or ``STOP_LOSS_LIMIT``) leg on one locked amount. ``params`` are the
    wire parameters except the symbol's market id (the driver adds it)."""

    symbol: str
    side: str
    limit_cid: str
    stop_cid: str
    params: Mapping


def _wire(value) -> str:
    return format(dec(value).normalize(), "f")


def oco_request(
    symbol: str,
    side: str,
    amount,
    limit_price,
    stop_price,
    stop_limit_price,
    list_cid: str,
    limit_cid: str,
    stop_cid: str,
    market: Mapping | None = None,
) -> OcoRequest | Rejection:
    """A bracket's two children as one native OCO. A sell's take-profit is the leg above the
    market and its stop the leg below; a buy's the other way round. ``stop_limit_price`` None:
    a stop-market leg."""
    types = venue_types(market or {})
    stop_type = "STOP_LOSS" if stop_limit_price is None else "STOP_LOSS_LIMIT"
    if types is not None and not {"LIMIT_MAKER", stop_type} <= types:
        return Rejection("unsupported", f"{symbol}: no LIMIT_MAKER / {stop_type} for a native OCO")
    limit = {"Type": "LIMIT_MAKER", "Price": _wire(limit_price), "ClientOrderId": limit_cid}
    stop = {"Type": stop_type, "StopPrice": _wire(stop_price), "ClientOrderId": stop_cid}
    if stop_limit_price is not None:
        stop.update(Price=_wire(stop_limit_price), TimeInForce="GTC")
    above, below = (limit, stop) if side == "sell" else (stop, limit)
    params = {
        "side": side.upper(),
        "quantity": _wire(amount),
        "listClientOrderId": list_cid,
        "newOrderRespType": "FULL",
        **{f"above{k}": v for k, v in above.items()},
        **{f"below{k}": v for k, v in below.items()},
    }
    return OcoRequest(symbol, side, limit_cid, stop_cid, params)


# -- emulated stops -----------------------------------------------------------------------


def stop_triggered(side: str, stop: float, last: float) -> bool:
    """Backtrader's stop rule on a price: a buy stop triggers at or above, a sell stop at or
    below (used where the broker emulates stops)."""
    return last >= stop if side == "buy" else last <= stop
