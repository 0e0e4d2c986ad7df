"""Accounts and the trading ledger of the local exchange: balances, orders, fills and the
create requests accepted. Pure bookkeeping, no I/O, no clock; venue-neutral (the wire shapes
are ``binance_private.py``'s).

Amounts are :class:`~decimal.Decimal` everywhere, quantized to 8 decimals (1e-8, Binance's
precision) where they are booked, so sums are exact and a balance never drifts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_UP, Decimal, InvalidOperation

__all__ = ["Q8", "Account", "Fill", "Ledger", "Order", "OrderList", "dec", "fmt8"]

Q8 = Decimal("0.00000001")
ZERO = Decimal(0)

#: Order statuses (Binance's names, which every venue's terms map onto).
OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")


def dec(value) -> Decimal:
    """A Decimal from an int, float (through its shortest repr), str or Decimal."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise TypeError(f"not an amount: {value!r}")
    if isinstance(value, float):
        value = repr(value)
    try:
        out = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"not an amount: {value!r}") from None
    if not out.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    return out


def q8(value: Decimal, rounding=ROUND_DOWN) -> Decimal:
    return value.quantize(Q8, rounding=rounding)


def q8_up(value: Decimal) -> Decimal:
    return value.quantize(Q8, rounding=ROUND_UP)


def fmt8(value: Decimal | None) -> str:
    """Binance's 8-decimal string: ``Decimal('0.1')`` -> ``'0.10000000'``."""
    return f"{q8(value if value is not None else ZERO):f}"


class Account:
    """One trading account: credentials, fee rate, number. Balances live in the ledger.

    ``secret`` is never shown by ``repr``.
    """

    __slots__ = ("api_key", "secret", "fee_rate", "name", "number")

    def __init__(self, number: int, api_key: str, secret: str, fee_rate: Decimal, name: str):
        self.number = number
        self.api_key = api_key
        self.secret = secret
        self.fee_rate = fee_rate
        self.name = name

    def __repr__(self) -> str:
        return f"Account({self.name!r}, fee_rate={self.fee_rate}, api_key={self.api_key[:6]}...)"


@dataclass(eq=False)
class Order:
    """One order, mutable while open. Prices and quantities are Decimals."""

    account: Account
    symbol: str
    order_id: int
    client_order_id: str
    side: str  # BUY / SELL
    type: str  # LIMIT, MARKET, STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT, LIMIT_MAKER
    time_in_force: str | None
    orig_qty: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    time: int
    orig_quote_qty: Decimal = ZERO
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    status: str = "NEW"
    update_time: int = 0
    working_time: int = -1  # when it went on the book (a stop: when it triggered)
    locked: Decimal = ZERO  # amount of lock_asset still locked for it
    lock_asset: str = ""
    cancel_client_order_id: str | None = None
    max_fill_qty: Decimal | None = None  # this order's partial fill size (None: the engine's)
    list_id: int = -1  # the OCO it belongs to (-1: none)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    @property
    def is_stop(self) -> bool:
        return self.stop_price is not None

    @property
    def triggered(self) -> bool:
        return self.working_time >= 0

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1]

    def snapshot(self) -> dict:
        """Binance's order shape (``GET /api/v3/order``); ``symbol`` is the market id."""
        return {
            "symbol": self.symbol.replace("/", ""),
            "orderId": self.order_id,
            "orderListId": self.list_id,
            "clientOrderId": self.client_order_id,
            "price": fmt8(self.price),
            "origQty": fmt8(self.orig_qty),
            "executedQty": fmt8(self.executed_qty),
            "cummulativeQuoteQty": fmt8(self.cum_quote),
            "status": self.status,
            "timeInForce": self.time_in_force or "GTC",
            "type": self.type,
            "side": self.side,
            "stopPrice": fmt8(self.stop_price),
            "icebergQty": fmt8(ZERO),
            "time": self.time,
            "updateTime": self.update_time,
            "isWorking": self.working_time >= 0,
            "workingTime": self.working_time,
            "origQuoteOrderQty": fmt8(self.orig_quote_qty),
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }


@dataclass(eq=False)
class OrderList:
    """An OCO: two orders of one account and symbol, either's activation cancels the other."""

    account: Account
    symbol: str
    list_id: int
    list_client_order_id: str
    orders: list[Order]
    time: int
    status: str = "EXECUTING"  # listOrderStatus: EXECUTING, ALL_DONE
    update_time: int = 0

    def snapshot(self) -> dict:
        """Binance's order list shape (``GET /api/v3/orderList``)."""
        done = self.status == "ALL_DONE"
        return {
            "orderListId": self.list_id,
            "contingencyType": "OCO",
            "listStatusType": "ALL_DONE" if done else "EXEC_STARTED",
            "listOrderStatus": self.status,
            "listClientOrderId": self.list_client_order_id,
            "transactionTime": self.update_time or self.time,
            "symbol": self.symbol.replace("/", ""),
            "orders": [
                {
                    "symbol": self.symbol.replace("/", ""),
                    "orderId": o.order_id,
                    "clientOrderId": o.client_order_id,
                }
                for o in self.orders
            ],
        }


@dataclass(frozen=True)
class Fill:
    """One execution of one order."""

    trade_id: int
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    is_maker: bool
    time: int

    @property
    def is_buyer(self) -> bool:
        return self.side == "BUY"

    def row(self) -> dict:
        """Binance's ``GET /api/v3/myTrades`` row."""
        return {
            "symbol": self.symbol.replace("/", ""),
            "id": self.trade_id,
            "orderId": self.order_id,
            "orderListId": -1,
            "price": fmt8(self.price),
            "qty": fmt8(self.qty),
            "quoteQty": fmt8(self.quote_qty),
            "commission": fmt8(self.commission),
            "commissionAsset": self.commission_asset,
            "time": self.time,
            "isBuyer": self.is_buyer,
            "isMaker": self.is_maker,
            "isBestMatch": True,
        }

    def ledger_row(self) -> dict:
        """The row :meth:`LocalExchange.ledger.fills` returns."""
        return {
            "id": self.trade_id,
            "orderId": self.order_id,
            "clientOrderId": self.client_order_id,
            "symbol": self.symbol,
            "side": self.side,
            "price": self.price,
            "qty": self.qty,
            "quoteQty": self.quote_qty,
            "commission": self.commission,
            "commissionAsset": self.commission_asset,
            "isBuyer": self.is_buyer,
            "isMaker": self.is_maker,
            "time": self.time,
        }


@dataclass
class _Book:
    balances: dict[str, list[Decimal]] = field(default_factory=dict)  # asset -> [free, locked]
    orders: list[Order] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    creates: list[dict] = field(default_factory=list)
    update_time: int = 0


class Ledger:
    """Every account's balances, orders, fills and accepted create requests."""

    def __init__(self):
        self._books: dict[Account, _Book] = {}
        self.by_key: dict[str, Account] = {}
        self._by_id: dict[tuple[str, int], Order] = {}
        self._next_order_id: dict[str, int] = {}
        self._next_trade_id: dict[str, int] = {}
        self._lists: dict[tuple[str, int], OrderList] = {}
        self._next_list_id = 0

    # -- accounts ---------------------------------------------------------------------------

    def add_account(
        self,
        balances: dict | None = None,
        fee_rate=Decimal("0.001"),
        api_key: str | None = None,
        secret: str | None = None,
        name: str | None = None,
    ) -> Account:
        fee = dec(fee_rate)
        if not ZERO <= fee < 1:
            raise ValueError(f"fee_rate must be in [0, 1), got {fee_rate!r}")
        key = api_key if api_key is not None else secrets.token_hex(32)
        if not isinstance(key, str) or not key or not key.isascii() or len(key) > 64:
            raise ValueError("api_key must be a non-empty ASCII string of at most 64 characters")
        if key in self.by_key:
            raise ValueError("api_key is already used by another account")
        sec = secret if secret is not None else secrets.token_hex(32)
        if not isinstance(sec, str) or not sec:
            raise ValueError("secret must be a non-empty string")
        number = len(self._books) + 1
        account = Account(number, key, sec, fee, name or f"account-{number}")
        book = _Book()
        for asset, amount in (balances or {}).items():
            if not isinstance(asset, str) or not asset.isalnum() or asset.upper() != asset:
                raise ValueError(f"asset must be an upper-case code like 'USDT', got {asset!r}")
            value = q8(dec(amount))
            if value < 0:
                raise ValueError(f"balance of {asset} must be >= 0, got {amount!r}")
            book.balances[asset] = [value, ZERO]
        self._books[account] = book
        self.by_key[key] = account
        return account

    def accounts(self) -> list[Account]:
        return list(self._books)

    def book(self, account: Account) -> _Book:
        try:
            return self._books[account]
        except KeyError:
            raise ValueError(f"{account!r} is not an account of this exchange") from None

    # -- balances ---------------------------------------------------------------------------

    def _bal(self, account: Account, asset: str) -> list[Decimal]:
        return self.book(account).balances.setdefault(asset, [ZERO, ZERO])

    def free(self, account: Account, asset: str) -> Decimal:
        return self._bal(account, asset)[0]

    def lock(self, account: Account, asset: str, amount: Decimal) -> bool:
        """Move ``amount`` from free to locked; False (nothing moved) if free is short."""
        bal = self._bal(account, asset)
        if amount > bal[0]:
            return False
        bal[0] -= amount
        bal[1] += amount
        return True

    def unlock(self, account: Account, asset: str, amount: Decimal) -> None:
        bal = self._bal(account, asset)
        bal[1] -= amount
        bal[0] += amount

    def spend_locked(self, account: Account, asset: str, amount: Decimal) -> None:
        self._bal(account, asset)[1] -= amount

    def debit(self, account: Account, asset: str, amount: Decimal) -> None:
        self._bal(account, asset)[0] -= amount

    def credit(self, account: Account, asset: str, amount: Decimal) -> None:
        self._bal(account, asset)[0] += amount

    def balances(self, account: Account) -> dict[str, tuple[Decimal, Decimal]]:
        return {a: (f, lk) for a, (f, lk) in self.book(account).balances.items()}

    def touch(self, account: Account, now: int) -> None:
        self.book(account).update_time = now

    # -- orders and fills -------------------------------------------------------------------

    def new_order_id(self, symbol: str) -> int:
        n = self._next_order_id.get(symbol, 1)
        self._next_order_id[symbol] = n + 1
        return n

    def new_trade_id(self, symbol: str) -> int:
        n = self._next_trade_id.get(symbol, 1)
        self._next_trade_id[symbol] = n + 1
        return n

    def add_order(self, order: Order) -> None:
        self.book(order.account).orders.append(order)
        self._by_id[(order.symbol, order.order_id)] = order

    def new_list_id(self) -> int:
        n = self._next_list_id
        self._next_list_id = n + 1
        return n

    def add_list(self, order_list: OrderList) -> None:
        self._lists[(order_list.symbol, order_list.list_id)] = order_list

    def order_list(self, account: Account, symbol: str | None, list_id: int) -> OrderList | None:
        for (sym, lid), ol in self._lists.items():
            if lid == list_id and ol.account is account and symbol in (None, sym):
                return ol
        return None

    def order_list_by_client_id(self, account: Account, client_id: str) -> OrderList | None:
        found = None
        for ol in self._lists.values():
            if ol.account is account and ol.list_client_order_id == client_id:
                if ol.status == "EXECUTING":
                    return ol
                found = ol
        return found

    def order_lists(self, account: Account) -> list[OrderList]:
        return [ol for ol in self._lists.values() if ol.account is account]

    def add_fill(self, account: Account, fill: Fill) -> None:
        self.book(account).fills.append(fill)

    def add_create(self, account: Account, request: dict) -> None:
        self.book(account).creates.append(dict(request))

    def order(self, account: Account, symbol: str, order_id: int) -> Order | None:
        o = self._by_id.get((symbol, order_id))
        return o if o is not None and o.account is account else None

    def order_by_client_id(self, account: Account, symbol: str, client_id: str) -> Order | None:
        """The open order with that client id, else the newest one (Binance's lookup)."""
        found = None
        for o in self.book(account).orders:
            if o.symbol == symbol and o.client_order_id == client_id:
                if o.is_open:
                    return o
                found = o
        return found

    def orders(self, account: Account, symbol: str | None = None) -> list[Order]:
        return [o for o in self.book(account).orders if symbol is None or o.symbol == symbol]

    def open_orders(self, account: Account | None = None) -> list[Order]:
        books = [self.book(account)] if account is not None else self._books.values()
        return [o for b in books for o in b.orders if o.is_open]

    def fills(self, account: Account, symbol: str | None = None) -> list[Fill]:
        return [f for f in self.book(account).fills if symbol is None or f.symbol == symbol]

    def creates(self, account: Account) -> list[dict]:
        return [dict(r) for r in self.book(account).creates]
