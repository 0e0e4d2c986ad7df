"""Bybit v5 public trades over the ledger: REST ``market/recent-trade`` and the
``publicTrade.<symbol>`` topic on ``/v5/public/spot``.

Bybit's rules, as ``ccxt.bybit`` / ``ccxt.pro.bybit`` 4.5 read them:

* ``GET /v5/market/recent-trade?category=spot&symbol=&limit=``: the newest ``limit`` trades,
  spot ``[1, 60]`` (default 60), newest first. That is all the public REST has: no paging,
  no time window, so trades older than the newest 60 cannot be fetched again (a feed that
  misses more than that over a break reports them lost).
* The push: ``{"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts", "data": [{"T", "s",
  "S": "Buy"|"Sell", "v", "p", "L", "i", "BT": false}...]}``; ids (``execId`` / ``i``) here
  are the ledger's decimal ids.
"""

from __future__ import annotations

from aiohttp import web

from . import bybit_format as fmt
from .protocol import Reply, query_ints
from .trade_streams import TradeStreams
from .trades import LedgerTrade

__all__ = ["PATH", "parse_topic", "rest", "subscribe"]

PATH = "/v5/market/recent-trade"
SPOT_MAX = 60
TOPIC = "publicTrade"
_PUSH_MAX = 100


def _side(t: LedgerTrade) -> str:
    return "Sell" if t.buyer_maker else "Buy"


def rest(proto, request: web.Request) -> Reply:
    ledger = proto.ledger
    q = request.query
    if q.get("category", "linear") != "spot":
        return proto._error(*fmt.ERR_BAD_SYMBOL)  # only spot markets are served
    symbol = proto.by_id.get(q.get("symbol", ""))
    if symbol is None or ledger is None:
        return proto._error(*fmt.ERR_BAD_SYMBOL)
    ints, bad = query_ints(q, ("limit",))
    if bad is not None:
        return proto._error(fmt.ERR_PARAM, f"params error: {bad} invalid")
    limit = ints.get("limit", SPOT_MAX)
    if not 1 <= limit <= SPOT_MAX:
        return proto._error(fmt.ERR_PARAM, "params error: limit invalid")
    rows = ledger.recent(symbol, limit, proto.now_ms())
    mid = fmt.market_id(symbol)
    items = [
        {
            "execId": str(t.id),
            "symbol": mid,
            "price": t.price_str,
            "size": t.qty_str,
            "side": _side(t),
            "time": str(t.time_ms),
            "isBlockTrade": False,
        }
        for t in reversed(rows)  # newest first
    ]
    return proto._ok({"category": "spot", "list": items})


def render(symbol: str, kind: str, trades: list[LedgerTrade], now_ms: int) -> list[str]:
    mid = fmt.market_id(symbol)
    out = []
    for i in range(0, len(trades), _PUSH_MAX):
        data = [
            {
                "T": t.time_ms,
                "s": mid,
                "S": _side(t),
                "v": t.qty_str,
                "p": t.price_str,
                "L": "ZeroMinusTick" if t.buyer_maker else "ZeroPlusTick",
                "i": str(t.id),
                "BT": False,
            }
            for t in trades[i : i + _PUSH_MAX]
        ]
        out.append(
            fmt.dumps({"topic": f"{TOPIC}.{mid}", "type": "snapshot", "ts": now_ms, "data": data})
        )
    return out


def parse_topic(proto, conn, topic) -> str | None:
    """``'publicTrade.BTCUSDT'`` -> ``'BTC/USDT'`` on the spot socket; None otherwise."""
    if not isinstance(topic, str) or not topic.startswith(TOPIC + "."):
        return None
    if proto.ledger is None or not conn.request.path.endswith("/spot"):
        return None
    return proto.by_id.get(topic[len(TOPIC) + 1 :])


def subscribe(proto, hub, conn, op: str, symbols: list[str]) -> None:
    streams = getattr(proto, "_bybit_trade_streams", None)
    if streams is None:
        streams = proto._bybit_trade_streams = TradeStreams(hub, proto.ledger, render)
    keys = [(s, TOPIC) for s in symbols]
    if op == "subscribe":
        streams.add(conn, keys)
    else:
        streams.remove(conn, keys)
