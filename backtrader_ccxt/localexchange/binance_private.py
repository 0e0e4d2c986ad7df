"""Binance SPOT private API over the trading desk: signed REST (``/api/v3/account``,
``order``, ``openOrders``, ``allOrders``, ``myTrades``), the listenKey endpoints
(``/api/v3/userDataStream``) and the WebSocket API's user-data subscription
(``/ws-api/v3``, ``userDataStream.subscribe.signature``, what ccxt.pro 4.5 uses for spot).

The wire rules, as Binance's SPOT API documents them and ccxt 4.5.90 sends them:

* ``X-MBX-APIKEY`` header: missing or malformed -> ``-2014``, unknown -> ``-2015`` (HTTP 401);
* HMAC-SHA256 (hex) of the request's parameters in the order sent (query string, then the
  body), without ``signature``; wrong -> ``-1022``; the WebSocket API signs its ``params``
  sorted by name;
* ``timestamp`` mandatory (``-1102``); ``recvWindow`` (default 5000, at most 60000: ``-1131``);
  a timestamp more than 1000 ms ahead of the server, or older than ``recvWindow`` ->
  ``-1021``. The server clock here is the machine's wall clock plus ``faults.clock_skew``;
* ``newClientOrderId`` must match ``^[.A-Z:/a-z0-9_-]{1,36}$`` (``-1100``); unique among the
  account's OPEN orders of the symbol only (``-2010 Duplicate order sent.``);
* a cancel's ``clientOrderId`` is the cancel's own id (``newClientOrderId``, else random);
  the order's is ``origClientOrderId``;
* numbers must match ``^([0-9]{1,20})(\\.[0-9]{1,20})?$`` (``-1100``) with at most 8
  decimals (``-1111``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import string
from decimal import Decimal
from urllib.parse import parse_qsl

from aiohttp import web

from . import binance_format as fmt
from .accounts import Account, Order, fmt8
from .matching import (
    LIMIT_PRICED,
    ORDER_TYPES,
    STOP_TYPES,
    TIME_IN_FORCE,
    Event,
    OrderRequest,
    Rejected,
    SymbolRules,
)
from .protocol import REQUEST_BODY, Reply
from .trading import TradingDesk
from .userstream import Push

__all__ = ["PATHS", "WS_API_PATH", "BinancePrivate", "symbol_rules"]

PATHS = (
    "/api/v3/account",
    "/api/v3/order",
    "/api/v3/order/test",
    "/api/v3/openOrders",
    "/api/v3/allOrders",
    "/api/v3/myTrades",
    "/api/v3/orderList/oco",
    "/api/v3/orderList",
    "/api/v3/openOrderList",
    "/api/v3/allOrderList",
    "/api/v3/userDataStream",
)
WS_API_PATH = "/ws-api/v3"

_CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_NUMBER = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
_KEY_CHARS = string.ascii_letters + string.digits

ERR_KEY_FORMAT = (-2014, "API-key format invalid.")
ERR_KEY_INVALID = (-2015, "Invalid API-key, IP, or permissions for action.")
ERR_SIGNATURE = (-1022, "Signature for this request is not valid.")
ERR_OUTSIDE_WINDOW = (-1021, "Timestamp for this request is outside of the recvWindow.")
ERR_AHEAD = (-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
ERR_RECV_WINDOW = (-1131, "recvWindow must be less than 60000")
ERR_NO_ORDER = (-2013, "Order does not exist.")
ERR_NO_LISTEN_KEY = (-1125, "This listenKey does not exist.")


def symbol_rules(series) -> SymbolRules:
    """The filters ``binance_format.exchange_info`` publishes for a symbol."""
    return SymbolRules(
        tick=Decimal(series.tick_size),
        step=Decimal(fmt.LOT_STEP),
        min_qty=Decimal(fmt.LOT_STEP),
        min_notional=Decimal(fmt.MIN_NOTIONAL),
    )


class _Bad(Exception):
    def __init__(self, code: int, msg: str, status: int = 400):
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def _mandatory(name: str) -> _Bad:
    return _Bad(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _random_id() -> str:
    return "".join(secrets.choice(_KEY_CHARS) for _ in range(22))


class BinancePrivate:
    """The private endpoints of one :class:`~.binance_api.BinanceProtocol`."""

    def __init__(self, proto, desk: TradingDesk):
        self.proto = proto
        self.desk = desk
        self.listen_keys: dict[str, Account] = {}

    # -- signing ----------------------------------------------------------------------------

    def _account_for_key(self, key: str | None) -> Account:
        if not key or not key.isascii() or not key.isalnum() or len(key) > 64:
            raise _Bad(*ERR_KEY_FORMAT, status=401)
        account = self.desk.ledger.by_key.get(key)
        if account is None:
            raise _Bad(*ERR_KEY_INVALID, status=401)
        return account

    def _check_time(self, params: dict) -> None:
        raw = params.get("timestamp")
        if not raw:
            raise _mandatory("timestamp")
        ts = self._int(params, "timestamp")
        window = 5000
        if params.get("recvWindow"):
            window = self._int(params, "recvWindow")
            if window > 60000:
                raise _Bad(*ERR_RECV_WINDOW)
        server = self.desk.signing_ms()
        if ts >= server + 1000:
            raise _Bad(*ERR_AHEAD)
        if server - ts > window:
            raise _Bad(*ERR_OUTSIDE_WINDOW)

    @staticmethod
    def _check_signature(account: Account, payload: str, signature: str) -> None:
        good = hmac.new(account.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(good, signature.lower()):
            raise _Bad(*ERR_SIGNATURE)

    def _signed(self, request: web.Request) -> tuple[Account, dict]:
        account = self._account_for_key(request.headers.get("X-MBX-APIKEY"))
        parts = [p for p in (request.query_string, request.get(REQUEST_BODY, "")) if p]
        items = "&".join(parts).split("&") if parts else []
        signature = None
        kept = []
        for item in items:
            if item.startswith("signature="):
                signature = item[len("signature=") :]
            else:
                kept.append(item)
        params = dict(parse_qsl("&".join(kept), keep_blank_values=True))
        if not signature:
            raise _mandatory("signature")
        self._check_time(params)
        self._check_signature(account, "&".join(kept), signature)
        return account, params

    # -- parameters -------------------------------------------------------------------------

    @staticmethod
    def _int(params: dict, name: str) -> int:
        raw = params[name]
        if not raw.isdigit() or len(raw) > 20:
            raise _Bad(
                -1100,
                f"Illegal characters found in parameter '{name}'; legal range is "
                "'^[0-9]{1,20}$'.",
            )
        return int(raw)

    @staticmethod
    def _num(params: dict, name: str) -> Decimal | None:
        raw = params.get(name)
        if raw is None or raw == "":
            return None
        if not _NUMBER.match(raw):
            raise _Bad(
                -1100,
                f"Illegal characters found in parameter '{name}'; legal range is "
                "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
            )
        value = Decimal(raw)
        if value.normalize().as_tuple().exponent < -8:
            raise _Bad(-1111, "Precision is over the maximum defined for this asset.")
        return value

    def _symbol(self, params: dict, required: bool = True) -> str | None:
        raw = params.get("symbol")
        if not raw:
            if required:
                raise _mandatory("symbol")
            return None
        symbol = self.proto.by_id.get(raw)
        if symbol is None:
            raise _Bad(*fmt.ERR_BAD_SYMBOL)
        return symbol

    def _opt_int(self, params: dict, name: str) -> int | None:
        return self._int(params, name) if params.get(name) else None

    def _limit(self, params: dict, default: int = 500) -> int:
        limit = self._opt_int(params, "limit") or default
        if not 1 <= limit <= 1000:
            raise _Bad(fmt.ERR_BAD_PARAM, "Data sent for parameter 'limit' is not valid.")
        return limit

    # -- REST -------------------------------------------------------------------------------

    def rest(self, request: web.Request) -> Reply:
        try:
            return self._rest(request)
        except _Bad as e:
            return Reply(e.status, fmt.error_body(e.code, e.msg))
        except Rejected as e:
            return Reply(400, fmt.error_body(e.code, e.msg))

    def _rest(self, request: web.Request) -> Reply:
        path, method = request.path, request.method
        if path == "/api/v3/userDataStream":
            return self._listen_key(request)
        account, params = self._signed(request)
        desk = self.desk
        desk.sync()
        if path == "/api/v3/account" and method == "GET":
            return self._json(self._account(account, params))
        if path == "/api/v3/order/test" and method == "POST":
            self._request(params)  # the parameters' checks only: nothing is booked
            return self._json({})
        if path == "/api/v3/order":
            if method == "POST":
                return self._new_order(account, params)
            if method == "GET":
                return self._json(self._find(account, params).snapshot())
            if method == "DELETE":
                return self._json(self._cancel(account, params))
        if path == "/api/v3/openOrders":
            symbol = self._symbol(params, required=method == "DELETE")
            if method == "GET":
                orders = [o for o in desk.ledger.open_orders(account)]
                if symbol is not None:
                    orders = [o for o in orders if o.symbol == symbol]
                return self._json([o.snapshot() for o in orders])
            if method == "DELETE":
                assert symbol is not None
                targets = [o for o in desk.ledger.open_orders(account) if o.symbol == symbol]
                if not targets:
                    raise Rejected(-2011, "Unknown order sent.")
                out = []
                for o in targets:
                    p = {"symbol": params["symbol"], "orderId": str(o.order_id)}
                    out.append(self._cancel(account, p))
                return self._json(out)
        if path == "/api/v3/orderList/oco" and method == "POST":
            return self._json(self._new_oco(account, params))
        if path == "/api/v3/orderList":
            if method == "GET":
                return self._json(self._find_list(account, params).snapshot())
            if method == "DELETE":
                return self._json(self._cancel_list(account, params))
        if path == "/api/v3/openOrderList" and method == "GET":
            lists = desk.ledger.order_lists(account)
            return self._json([ol.snapshot() for ol in lists if ol.status == "EXECUTING"])
        if path == "/api/v3/allOrderList" and method == "GET":
            limit = self._limit(params)
            return self._json([ol.snapshot() for ol in desk.ledger.order_lists(account)][-limit:])
        if path == "/api/v3/allOrders" and method == "GET":
            return self._json([o.snapshot() for o in self._all_orders(account, params)])
        if path == "/api/v3/myTrades" and method == "GET":
            return self._json([f.row() for f in self._my_trades(account, params)])
        return Reply(405, fmt.error_body(-1, "Method not allowed."))

    @staticmethod
    def _json(obj) -> Reply:
        return Reply(200, fmt.dumps(obj))

    def _account(self, account: Account, params: dict) -> dict:
        omit = params.get("omitZeroBalances", "false").lower() == "true"
        rate = int(account.fee_rate * 10000)
        balances = []
        for asset, (free, locked) in sorted(self.desk.ledger.balances(account).items()):
            if omit and free == 0 and locked == 0:
                continue
            balances.append({"asset": asset, "free": fmt8(free), "locked": fmt8(locked)})
        return {
            "makerCommission": rate,
            "takerCommission": rate,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": fmt8(account.fee_rate),
                "taker": fmt8(account.fee_rate),
                "buyer": fmt8(Decimal(0)),
                "seller": fmt8(Decimal(0)),
            },
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": self.desk.ledger.book(account).update_time,
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": 100_000_000 + account.number,
        }

    def _request(self, params: dict) -> OrderRequest:
        symbol = self._symbol(params)
        assert symbol is not None
        for name in ("side", "type"):
            if not params.get(name):
                raise _mandatory(name)
        side, otype = params["side"], params["type"]
        if side not in ("BUY", "SELL"):
            raise _Bad(-1117, "Invalid side.")
        if otype not in ORDER_TYPES:
            raise _Bad(-1116, "Invalid orderType.")
        qty = self._num(params, "quantity")
        quote_qty = self._num(params, "quoteOrderQty")
        price = self._num(params, "price")
        stop = self._num(params, "stopPrice")
        tif = params.get("timeInForce") or None
        if otype == "MARKET":
            if qty is None and quote_qty is None:
                raise _Bad(
                    -1102,
                    "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty!",
                )
            if qty is not None and quote_qty is not None:
                raise _Bad(-1106, "Parameter 'quoteOrderQty' sent when not required.")
            if price is not None:
                raise _Bad(-1106, "Parameter 'price' sent when not required.")
        else:
            if quote_qty is not None:
                raise _Bad(-1106, "Parameter 'quoteOrderQty' sent when not required.")
            if qty is None:
                raise _mandatory("quantity")
        if otype in LIMIT_PRICED and price is None:
            raise _mandatory("price")
        if otype not in LIMIT_PRICED and price is not None:
            raise _Bad(-1106, "Parameter 'price' sent when not required.")
        if otype in STOP_TYPES and stop is None:
            raise _mandatory("stopPrice")
        if otype not in STOP_TYPES and stop is not None:
            raise _Bad(-1106, "Parameter 'stopPrice' sent when not required.")
        if otype in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"):
            if tif is None:
                raise _mandatory("timeInForce")
            if tif not in TIME_IN_FORCE:
                raise _Bad(-1115, "Invalid timeInForce.")
        elif tif is not None:
            raise _Bad(-1106, "Parameter 'timeInForce' sent when not required.")
        cid = params.get("newClientOrderId")
        if cid is None or cid == "":
            cid = _random_id()
        elif not _CLIENT_ID.match(cid):
            raise _Bad(
                -1100,
                "Illegal characters found in parameter 'newClientOrderId'; legal range is "
                "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
            )
        resp_type = params.get("newOrderRespType") or "FULL"
        if resp_type not in ("ACK", "RESULT", "FULL"):
            raise _Bad(-1177, "Invalid newOrderRespType.")
        return OrderRequest(
            symbol=symbol,
            side=side,
            type=otype,
            qty=qty,
            quote_qty=quote_qty,
            price=price,
            stop_price=stop,
            time_in_force=tif,
            client_order_id=cid,
        )

    def _new_order(self, account: Account, params: dict) -> Reply:
        body, lose = self._place(account, params)
        return Reply(200, fmt.dumps(body), lose=lose)

    def _place(self, account: Account, params: dict) -> tuple[dict, bool]:
        """Book an order; its reply and whether ``lose_order_reply`` eats that reply."""
        try:
            req = self._request(params)
        except _Bad:
            if self.desk.stats is not None:
                self.desk.stats.orders_rejected += 1
            raise
        order = self.desk.place(account, req, params)
        body = self._order_reply(order, params.get("newOrderRespType") or "FULL")
        st = self.desk.faults
        if st.lose_reply > 0:
            st.lose_reply -= 1
            st.counts["lost_order_reply"] += 1
            return body, True
        return body, False

    def _new_oco(self, account: Account, params: dict) -> dict:
        for name in ("quantity", "aboveType", "belowType"):
            if not params.get(name):
                raise _mandatory(name)
        legs = []
        for leg in ("above", "below"):
            one = {
                "symbol": params.get("symbol", ""),
                "side": params.get("side", ""),
                "type": params[f"{leg}Type"],
                "quantity": params["quantity"],
            }
            for wire, name in (
                ("price", "Price"),
                ("stopPrice", "StopPrice"),
                ("timeInForce", "TimeInForce"),
                ("newClientOrderId", "ClientOrderId"),
            ):
                if params.get(leg + name):
                    one[wire] = params[leg + name]
            legs.append(self._request(one))
        cid = params.get("listClientOrderId") or _random_id()
        if not _CLIENT_ID.match(cid):
            raise _Bad(
                -1100,
                "Illegal characters found in parameter 'listClientOrderId'; legal range is "
                "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
            )
        order_list = self.desk.place_oco(account, legs[0], legs[1], cid, params)
        resp_type = params.get("newOrderRespType") or "FULL"
        reports = [
            self._order_reply(o, "RESULT" if resp_type == "FULL" else resp_type)
            for o in order_list.orders
        ]
        return {**order_list.snapshot(), "orderReports": reports}

    def _find_list(self, account: Account, params: dict):
        list_id = self._opt_int(params, "orderListId")
        orig = params.get("origClientOrderId") or params.get("listClientOrderId") or None
        if list_id is None and orig is None:
            raise _Bad(
                -1102,
                "Param 'origClientOrderId' or 'orderListId' must be sent, but both were empty!",
            )
        ledger = self.desk.ledger
        found = (
            ledger.order_list(account, None, list_id)
            if list_id is not None
            else ledger.order_list_by_client_id(account, str(orig))
        )
        if found is None:
            raise _Bad(*ERR_NO_ORDER)
        return found

    def _cancel_list(self, account: Account, params: dict) -> dict:
        symbol = self._symbol(params)
        assert symbol is not None
        list_id = self._opt_int(params, "orderListId")
        cid = params.get("listClientOrderId") or None
        if list_id is None and cid is None:
            raise _Bad(
                -1102,
                "Param 'listClientOrderId' or 'orderListId' must be sent, but both were empty!",
            )
        order_list = self.desk.cancel_list(
            account, symbol, list_id=list_id, list_client_order_id=cid
        )
        reports = [self._cancel_reply(o, o.cancel_client_order_id or "") for o in order_list.orders]
        return {**order_list.snapshot(), "orderReports": reports}

    def _order_reply(self, order: Order, resp_type: str) -> dict:
        ack = {
            "symbol": fmt.market_id(order.symbol),
            "orderId": order.order_id,
            "orderListId": order.list_id,
            "clientOrderId": order.client_order_id,
            "transactTime": order.time,
        }
        if resp_type == "ACK":
            return ack
        snap = order.snapshot()
        out = {
            **ack,
            **_order_state(snap),
            "workingTime": snap["workingTime"],
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        if order.stop_price is not None:
            out["stopPrice"] = snap["stopPrice"]
        if resp_type == "FULL":
            out["fills"] = [
                {
                    "price": fmt8(f.price),
                    "qty": fmt8(f.qty),
                    "commission": fmt8(f.commission),
                    "commissionAsset": f.commission_asset,
                    "tradeId": f.trade_id,
                }
                for f in self.desk.ledger.fills(account=order.account, symbol=order.symbol)
                if f.order_id == order.order_id and f.time == order.time
            ]
        return out

    def _ids(self, params: dict) -> tuple[int | None, str | None]:
        order_id = self._opt_int(params, "orderId")
        orig = params.get("origClientOrderId") or None
        if order_id is None and orig is None:
            raise _Bad(
                -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty!"
            )
        return order_id, orig

    def _find(self, account: Account, params: dict) -> Order:
        symbol = self._symbol(params)
        assert symbol is not None
        order_id, orig = self._ids(params)
        order = self.desk.engine.find(account, symbol, order_id, orig)
        if order is None:
            raise _Bad(*ERR_NO_ORDER)
        return order

    def _cancel(self, account: Account, params: dict) -> dict:
        symbol = self._symbol(params)
        assert symbol is not None
        order_id, orig = self._ids(params)
        cancel_id = params.get("newClientOrderId") or _random_id()
        if not _CLIENT_ID.match(cancel_id):
            raise _Bad(
                -1100,
                "Illegal characters found in parameter 'newClientOrderId'; legal range is "
                "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
            )
        order = self.desk.cancel(
            account,
            symbol,
            order_id=order_id,
            orig_client_order_id=orig,
            cancel_client_order_id=cancel_id,
        )
        return self._cancel_reply(order, cancel_id)

    def _cancel_reply(self, order: Order, cancel_id: str) -> dict:
        snap = order.snapshot()
        return {
            "symbol": snap["symbol"],
            "origClientOrderId": order.client_order_id,
            "orderId": order.order_id,
            "orderListId": order.list_id,
            "clientOrderId": cancel_id,
            "transactTime": order.update_time,
            **_order_state(snap),
            "selfTradePreventionMode": "EXPIRE_MAKER",
            **({"stopPrice": snap["stopPrice"]} if order.stop_price is not None else {}),
        }

    def _window(self, params: dict) -> tuple[int | None, int | None]:
        start, end = self._opt_int(params, "startTime"), self._opt_int(params, "endTime")
        if start is not None and end is not None and start > end:
            raise _Bad(*fmt.ERR_START_AFTER_END)
        return start, end

    def _all_orders(self, account: Account, params: dict) -> list[Order]:
        symbol = self._symbol(params)
        limit = self._limit(params)
        from_id = self._opt_int(params, "orderId")
        start, end = self._window(params)
        orders = self.desk.ledger.orders(account, symbol)
        return _page(orders, lambda o: o.order_id, from_id, start, end, limit)

    def _my_trades(self, account: Account, params: dict) -> list:
        symbol = self._symbol(params)
        limit = self._limit(params)
        order_id = self._opt_int(params, "orderId")
        from_id = self._opt_int(params, "fromId")
        start, end = self._window(params)
        fills = self.desk.ledger.fills(account, symbol)
        if order_id is not None:
            fills = [f for f in fills if f.order_id == order_id]
        return _page(fills, lambda f: f.trade_id, from_id, start, end, limit)

    # -- listenKey --------------------------------------------------------------------------

    def _listen_key(self, request: web.Request) -> Reply:
        account = self._account_for_key(request.headers.get("X-MBX-APIKEY"))
        method = request.method
        if method == "POST":
            for key, owner in self.listen_keys.items():
                if owner is account:
                    return self._json({"listenKey": key})
            key = "".join(secrets.choice(_KEY_CHARS) for _ in range(60))
            self.listen_keys[key] = account
            return self._json({"listenKey": key})
        params = dict(parse_qsl(request.query_string + "&" + request.get(REQUEST_BODY, "")))
        key = params.get("listenKey")
        if not key:
            raise _mandatory("listenKey")
        if self.listen_keys.get(key) is not account:
            raise _Bad(*ERR_NO_LISTEN_KEY)
        if method == "PUT":
            return self._json({})
        if method == "DELETE":
            del self.listen_keys[key]
            hub = self.desk.hub
            if hub is not None:
                for conn in self.desk.streams.connections(account):
                    if getattr(conn.request, "path", "").endswith(key):
                        hub._forget(conn)
                        hub._abort(conn)
            return self._json({})
        return Reply(405, fmt.error_body(-1, "Method not allowed."))

    def open_listen_key(self, hub, conn, key: str) -> bool:
        """A ``/ws/<listenKey>`` connection; False if the key is unknown."""
        account = self.listen_keys.get(key)
        if account is None:
            return False
        if self.desk.streams.refusing:
            hub._forget(conn)
            hub._abort(conn)
            return True
        self.desk.streams.subscribe(conn, account, raw=True)
        return True

    # -- WebSocket API ----------------------------------------------------------------------

    def ws_open(self, hub, conn) -> None:
        if self.desk.streams.refusing:
            hub._forget(conn)
            hub._abort(conn)

    def ws_text(self, hub, conn, data: str) -> None:
        try:
            req = json.loads(data)
        except ValueError:
            hub.send(conn, fmt.dumps(_ws_error(None, 400, -1100, "Malformed request.")))
            return
        if not isinstance(req, dict):
            hub.send(conn, fmt.dumps(_ws_error(None, 400, -1100, "Malformed request.")))
            return
        rid = req.get("id")
        method = req.get("method")
        params = req.get("params") or {}
        try:
            if not isinstance(params, dict):
                raise _Bad(-1100, "Malformed request: 'params' must be an object.")
            result = self._ws_call(hub, conn, method, params)
            if result is _LOST:
                return  # lose_order_reply: booked, never answered
        except (_Bad, Rejected) as e:
            status = getattr(e, "status", 400)
            hub.send(conn, fmt.dumps(_ws_error(rid, status, e.code, e.msg)))
            return
        hub.send(
            conn,
            fmt.dumps({"id": rid, "status": 200, "result": result, "rateLimits": _WS_LIMITS}),
        )

    def _ws_call(self, hub, conn, method, params: dict):
        desk = self.desk
        if method == "ping":
            return {}
        if method == "time":
            return {"serverTime": desk.server_ms()}
        if method == "userDataStream.subscribe.signature":
            account, _ = self._ws_signed(params)
            if desk.streams.refusing:
                hub._forget(conn)
                hub._abort(conn)
                return {}
            return {"subscriptionId": desk.streams.subscribe(conn, account)}
        if method == "userDataStream.unsubscribe":
            sid = params.get("subscriptionId")
            removed = desk.streams.unsubscribe(conn, None if sid is None else int(sid))
            if sid is not None and not removed:
                raise _Bad(-2035, "User Data Stream subscription not found.")
            return {}
        if method == "session.subscriptions":
            return [{"subscriptionId": s} for s in desk.streams.held(conn)]
        if method in ("order.place", "order.cancel", "order.status"):
            account, strs = self._ws_signed(params)
            desk.sync()
            if method == "order.place":
                body, lose = self._place(account, strs)
                return _LOST if lose else body
            if method == "order.cancel":
                return self._cancel(account, strs)
            return self._find(account, strs).snapshot()
        raise _Bad(-1020, "This operation is not supported.")

    def _ws_signed(self, params: dict) -> tuple[Account, dict]:
        """A signed WebSocket-API request: the account and its params as strings."""
        account = self._account_for_key(params.get("apiKey"))
        signature = params.get("signature")
        if not signature:
            raise _mandatory("signature")
        strs = {k: _ws_str(v) for k, v in params.items() if k != "signature"}
        self._check_time(strs)
        payload = "&".join(f"{k}={strs[k]}" for k in sorted(strs))
        self._check_signature(account, payload, str(signature))
        for key in ("apiKey", "timestamp", "recvWindow", "returnRateLimits"):
            strs.pop(key, None)
        return account, strs

    # -- user-data pushes -------------------------------------------------------------------

    def render(self, event: Event) -> Push | None:
        """An engine event as Binance's ``executionReport`` / ``outboundAccountPosition``."""
        e_ms = self.desk.server_ms()
        if event.kind == "balance":
            if not event.assets:
                return None
            payload = {
                "e": "outboundAccountPosition",
                "E": e_ms,
                "u": event.time,
                "B": [
                    {"a": a, "f": fmt8(free), "l": fmt8(locked)}
                    for a, (free, locked) in event.assets.items()
                ],
            }
            return Push(payload, report=False, fill=False)
        if event.kind == "list":
            st = event.state
            payload = {
                "e": "listStatus",
                "E": e_ms,
                "s": st["symbol"],
                "g": st["orderListId"],
                "c": st["contingencyType"],
                "l": st["listStatusType"],
                "L": st["listOrderStatus"],
                "r": "NONE",
                "C": st["listClientOrderId"],
                "T": event.time,
                "O": [
                    {"s": o["symbol"], "i": o["orderId"], "c": o["clientOrderId"]}
                    for o in st["orders"]
                ],
            }
            return Push(payload, report=False, fill=False)
        st, fill, order = event.state, event.fill, event.order
        assert order is not None
        canceled = event.exec_type == "CANCELED"
        payload = {
            "e": "executionReport",
            "E": e_ms,
            "s": st["symbol"],
            "c": (order.cancel_client_order_id or "") if canceled else st["clientOrderId"],
            "S": st["side"],
            "o": st["type"],
            "f": st["timeInForce"],
            "q": st["origQty"],
            "p": st["price"],
            "P": st["stopPrice"],
            "F": "0.00000000",
            "g": st["orderListId"],
            "C": st["clientOrderId"] if canceled else "",
            "x": event.exec_type,
            "X": st["status"],
            "r": "NONE",
            "i": st["orderId"],
            "l": fmt8(fill.qty) if fill else "0.00000000",
            "z": st["executedQty"],
            "L": fmt8(fill.price) if fill else "0.00000000",
            "n": fmt8(fill.commission) if fill else "0",
            "N": fill.commission_asset if fill else None,
            "T": event.time,
            "t": fill.trade_id if fill else -1,
            "I": 0,
            "w": st["status"] in ("NEW", "PARTIALLY_FILLED") and st["isWorking"],
            "m": fill.is_maker if fill else False,
            "M": False,
            "O": st["time"],
            "Z": st["cummulativeQuoteQty"],
            "Y": fmt8(fill.quote_qty) if fill else "0.00000000",
            "Q": st["origQuoteOrderQty"],
            "W": st["workingTime"],
            "V": "EXPIRE_MAKER",
        }
        return Push(payload, report=True, fill=fill is not None)

    @staticmethod
    def wrap(sid: int, payload: dict) -> dict:
        return {"subscriptionId": sid, "event": payload}


_LOST = object()  # a WebSocket-API answer that lose_order_reply eats

_WS_LIMITS = [
    {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 6000,
        "count": 2,
    }
]


def _ws_error(rid, status: int, code: int, msg: str) -> dict:
    return {"id": rid, "status": status, "error": {"code": code, "msg": msg}}


def _ws_str(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _page(items: list, id_of, from_id, start, end, limit: int) -> list:
    """Binance's paging of allOrders and myTrades: from an id onwards; else the first
    ``limit`` from ``startTime`` (within ``endTime``), or the last ``limit`` before
    ``endTime``; else the newest ``limit``."""
    if from_id is not None:
        return [x for x in items if id_of(x) >= from_id][:limit]
    if start is not None or end is not None:
        items = [
            x
            for x in items
            if (start is None or x.time >= start) and (end is None or x.time <= end)
        ]
        return items[:limit] if start is not None else items[-limit:]
    return items[-limit:]


_STATE_KEYS = (
    "price",
    "origQty",
    "executedQty",
    "origQuoteOrderQty",
    "cummulativeQuoteQty",
    "status",
    "timeInForce",
    "type",
    "side",
)


def _order_state(snap: dict) -> dict:
    """The fields of an order's state that its create and cancel answers repeat."""
    return {k: snap[k] for k in _STATE_KEYS}
