"""OKX v5 public trades over the ledger: REST ``market/trades`` and ``market/history-trades``,
and the ``trades`` channel on ``/ws/v5/public``.

OKX's rules, as ``ccxt.okx`` / ``ccxt.pro.okx`` 4.5 read them:

* ``GET /api/v5/market/trades?instId=&limit=``: the newest ``limit`` trades (default 100,
  max 500), **newest first**. No paging: ccxt's ``fetch_trades(since=...)`` calls it and
  filters by ``since`` itself, so it never reaches further back than one page.
* ``GET /api/v5/market/history-trades?instId=&type=&after=&before=&limit=`` (default 100,
  max 100), newest first. ``type=1`` (default): ``after`` = records *older* than that
  tradeId, ``before`` = *newer* than that tradeId (alone: the newest ones, not the ones right
  after it: OKX's own trap, like Binance's window); ``type=2``: ``after`` is a timestamp.
  Paging is backwards: ``after`` = the oldest id seen.
* The ``trades`` push: ``{"arg": {"channel": "trades", "instId"}, "data": [{"instId",
  "tradeId", "px", "sz", "side", "ts", "count"}...]}``, all strings; only on ``/public``.
  Real OKX may aggregate several fills of one taker order into one push entry (``count``
  > 1, the first fill's id); the local exchange sends every trade on its own (``count``
  "1"), as ``trades-all`` would (which ccxt.pro reaches only with credentials).
"""

from __future__ import annotations

from aiohttp import web

from . import okx_format as fmt
from .protocol import Reply, query_ints
from .trade_streams import TradeStreams
from .trades import LedgerTrade

__all__ = ["PATHS", "is_trades_arg", "on_arg", "rest"]

PATHS = ("/api/v5/market/trades", "/api/v5/market/history-trades")
CHANNEL = "trades"
RECENT_MAX = 500
HISTORY_MAX = 100
DEFAULT_LIMIT = 100
_PUSH_MAX = 100  # trades in one push


def trade_row(symbol: str, t: LedgerTrade) -> dict:
    return {
        "instId": fmt.inst_id(symbol),
        "side": t.side,
        "sz": t.qty_str,
        "px": t.price_str,
        "source": "0",
        "tradeId": str(t.id),
        "ts": str(t.time_ms),
    }


def rest(proto, request: web.Request) -> Reply:
    """The answer to one of :data:`PATHS` (``proto`` is the :class:`OkxProtocol`)."""
    ledger = proto.ledger
    q = request.query
    inst = q.get("instId")
    if not inst:
        return proto._error(fmt.ERR_EMPTY, "Parameter instId can not be empty.", 400)
    symbol = proto.by_id.get(inst)
    if symbol is None or ledger is None:
        return proto._error(*fmt.ERR_BAD_INST)
    ints, bad = query_ints(q, ("after", "before", "limit", "type"))
    if bad is not None:
        return proto._error(fmt.ERR_PARAM, f"Parameter {bad} error")
    history = request.path.endswith("history-trades")
    limit = ints.get("limit", DEFAULT_LIMIT)
    if limit < 1:
        return proto._error(fmt.ERR_PARAM, "Parameter limit error")
    limit = min(limit, HISTORY_MAX if history else RECENT_MAX)
    now = proto.now_ms()
    if not history:
        rows = ledger.recent(symbol, limit, now)
    else:
        kind = ints.get("type", 1)
        after, before = ints.get("after"), ints.get("before")
        if kind not in (1, 2):
            return proto._error(fmt.ERR_PARAM, "Parameter type error")
        if kind == 2:
            if before is not None:
                return proto._error(fmt.ERR_PARAM, "Parameter before error")
            end = now if after is None else after - 1
            rows = ledger.last_between(symbol, None, end, limit, now)
        elif after is not None:
            low = after - limit if before is None else max(before + 1, after - limit)
            rows = [t for t in ledger.from_id(symbol, max(low, 0), limit, now) if t.id < after]
        else:
            rows = ledger.recent(symbol, limit, now)  # before alone: the newest ones
            if before is not None:
                rows = [t for t in rows if t.id > before]
    return proto._ok([trade_row(symbol, t) for t in reversed(rows)])  # newest first


def render(symbol: str, kind: str, trades: list[LedgerTrade], now_ms: int) -> list[str]:
    arg = {"channel": CHANNEL, "instId": fmt.inst_id(symbol)}
    out = []
    for i in range(0, len(trades), _PUSH_MAX):
        data = [{**trade_row(symbol, t), "count": "1"} for t in trades[i : i + _PUSH_MAX]]
        for d in data:
            del d["source"]
        out.append(fmt.dumps({"arg": arg, "data": data}))
    return out


def is_trades_arg(arg) -> bool:
    return isinstance(arg, dict) and arg.get("channel") == CHANNEL


def on_arg(proto, hub, conn, op: str, arg: dict, extra: dict, cid: str) -> None:
    """Subscribe or unsubscribe one ``trades`` argument (OKX answers each on its own)."""
    inst = arg.get("instId")
    symbol = proto.by_id.get(inst) if isinstance(inst, str) else None
    if symbol is None or proto.ledger is None or not conn.request.path.endswith("/public"):
        hub.send(conn, fmt.ws_error(fmt.WS_NO_CHANNEL, proto._no_channel(arg), cid))
        return
    streams = getattr(proto, "_okx_trade_streams", None)
    if streams is None:
        streams = proto._okx_trade_streams = TradeStreams(hub, proto.ledger, render)
    if op == "subscribe":
        streams.add(conn, [(symbol, CHANNEL)])
    else:
        streams.remove(conn, [(symbol, CHANNEL)])
    reply_arg = {"channel": CHANNEL, "instId": inst}
    hub.send(conn, fmt.dumps({**extra, **fmt.event(op, reply_arg, cid)}))
