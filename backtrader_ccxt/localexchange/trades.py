"""The trade ledger: public trades derived from the replayed candles of one timeframe.

Pure computation, no networking. Every trade is a function of ``(symbol, candle index)`` and
the replay, so REST, the WebSocket streams and :meth:`LocalExchange.trades` always agree, and
aggregating the trades of a candle reproduces that candle **exactly**:

* a candle with volume has ``4 + (k + shift) % 9`` trades (4..12, fewer only if its volume
  has fewer units of 1e-8); an empty candle (volume 0, ``empty_every``, ``make_empty``) has
  none, as a venue's empty candle has no trade;
* prices walk open -> first extreme -> second extreme -> close (the low first on an up
  candle), on the symbol's tick between the anchors, so the first trade is the open, the last
  the close, and the high and low are each traded once at least;
* amounts split the volume in integers of 1e-8 (in whole lot steps where the volume allows),
  so their decimal sum is the candle's volume to the last digit;
* trade ``i`` of ``n`` is stamped ``open + i * length // n``: strictly increasing, inside its
  candle, so a trade exists (is served) once the exchange clock reaches its time;
* ids are per symbol, consecutive from 0 at the oldest history candle, in time order
  (Binance's are increasing integers); a lost trade therefore shows as an id gap;
* the taker side follows the tick rule (a rise is a buy, a fall a sell, unchanged keeps the
  previous side; the first trade buys on an up candle).

Only the ledger's own timeframe matches: candles of another timeframe show other source rows
(see ``data.py``), so bars of e.g. 5s built from 1s trades are the resampling of the 1s
candles, not the replay's 5s candles. :meth:`LocalExchange.trades` documents which timeframe.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

from .data import _STEP_UNITS, _UNITS, Replay, Timeframe, fmt_units

__all__ = ["LedgerTrade", "TradeLedger"]

_MIN_TRADES = 4  # open, two extremes, close
_EXTRA_TRADES = 9  # 0..8 more, varying with the candle


@dataclass(frozen=True, slots=True)
class LedgerTrade:
    """One trade; ``price`` and ``qty`` in integers of 1e-8."""

    id: int
    time_ms: int
    price: int
    qty: int
    buyer_maker: bool  # Binance's flag: True when the taker sold

    @property
    def side(self) -> str:
        return "sell" if self.buyer_maker else "buy"

    @property
    def price_str(self) -> str:
        return fmt_units(self.price)

    @property
    def qty_str(self) -> str:
        return fmt_units(self.qty)

    @property
    def quote_qty_str(self) -> str:
        return fmt_units(self.price * self.qty // _UNITS)

    def ccxt(self) -> dict:
        """The trade as a ccxt trade dict (the fields this package reads)."""
        return {
            "id": str(self.id),
            "timestamp": self.time_ms,
            "price": float(self.price_str),
            "amount": float(self.qty_str),
            "side": self.side,
        }


def _split(total: int, n: int, salt: int) -> list[int]:
    """``total`` in ``n`` positive parts, in lot steps when ``total`` has enough of them."""
    quantum = _STEP_UNITS if total // _STEP_UNITS >= n else 1
    units, rest = divmod(total, quantum)
    weights = [1 + (salt + 7 * i) % 5 for i in range(n)]
    spare = units - n
    w_sum = sum(weights)
    parts = [1 + spare * w // w_sum for w in weights]
    parts[-1] += units - sum(parts)
    out = [p * quantum for p in parts]
    out[-1] += rest
    return out


def _anchors(n: int) -> list[int]:
    a1 = max(1, (n - 1) // 3)
    a2 = max(a1 + 1, 2 * (n - 1) // 3)
    return [0, a1, a2, n - 1]


class TradeLedger:
    """All trades of every served symbol, derived from the candles of ``timeframe``.

    Params:
        replay: the exchange's replay. timeframe: the candles the trades reproduce
            (``LocalExchange(trades_timeframe=...)``).
    """

    def __init__(self, replay: Replay, timeframe: str):
        self.replay = replay
        self.tf: Timeframe = replay.timeframe(timeframe)
        self.timeframe = self.tf.name
        self.k0 = self.tf.index(replay.first_open(self.tf))
        # per symbol: cum[j] = trades in candles k0 .. k0 + j - 1, and the empties it saw
        self._cum: dict[str, list[int]] = {}
        self._marks: dict[str, int] = {}

    # -- per candle -------------------------------------------------------------------------

    def count(self, symbol: str, k: int) -> int:
        """Number of trades in candle ``k``."""
        if self.replay.is_empty(symbol, self.tf, k):
            return 0
        v = self.replay.units(symbol, self.tf, k)[4]
        shift = self.replay.series[symbol].shift
        return min(_MIN_TRADES + (k + shift) % _EXTRA_TRADES, v)

    def candle_trades(self, symbol: str, k: int) -> list[LedgerTrade]:
        """The trades of candle ``k`` in order (no bounds check, no clock)."""
        n = self.count(symbol, k)
        if n == 0:
            return []
        series = self.replay.series[symbol]
        o, h, lo, c, v = self.replay.units(symbol, self.tf, k)
        prices = self._prices(o, h, lo, c, n, series.tick_units)
        qtys = _split(v, n, k + series.shift)
        first = self.first_id(symbol, k)
        open_ms = self.tf.open_of(k)
        out = []
        sell = c < o
        prev = o
        for i in range(n):
            p = prices[i]
            if i:
                if p > prev:
                    sell = False
                elif p < prev:
                    sell = True
            prev = p
            out.append(LedgerTrade(first + i, open_ms + i * self.tf.ms // n, p, qtys[i], sell))
        return out

    @staticmethod
    def _prices(o: int, h: int, lo: int, c: int, n: int, tick: int) -> list[int]:
        if n < _MIN_TRADES:  # unreachable with the bundled volumes (>= one lot step)
            return ([o, c] * n)[:n] if n > 1 else [c]
        e1, e2 = (lo, h) if c >= o else (h, lo)
        anchors = _anchors(n)
        points = (o, e1, e2, c)
        prices = [0] * n
        for seg in range(3):
            ia, ib = anchors[seg], anchors[seg + 1]
            pa, pb = points[seg], points[seg + 1]
            for i in range(ia, ib + 1):
                p = pa + (pb - pa) * (i - ia) // (ib - ia)
                if i not in (ia, ib):
                    p = min(max((p + tick // 2) // tick * tick, lo), h)
                prices[i] = p
        return prices

    # -- ids --------------------------------------------------------------------------------

    def _table(self, symbol: str, k: int) -> list[int]:
        """The prefix counts, extended to cover candle ``k``."""
        marked = self.replay._empties.get((symbol, self.tf.name))
        marks = len(marked) if marked else 0
        cum = self._cum.get(symbol)
        if cum is None or self._marks.get(symbol) != marks:
            # make_empty changed the ledger: ids after that candle move (documented)
            cum = self._cum[symbol] = [0]
            self._marks[symbol] = marks
        while len(cum) <= k - self.k0 + 1:
            cum.append(cum[-1] + self.count(symbol, self.k0 + len(cum) - 1))
        return cum

    def first_id(self, symbol: str, k: int) -> int:
        """Id of candle ``k``'s first trade (the next id if it has none)."""
        return self._table(symbol, k)[k - self.k0]

    def _candle_of_id(self, symbol: str, trade_id: int, now_k: int) -> int:
        cum = self._table(symbol, now_k)
        return self.k0 + bisect.bisect_right(cum, trade_id) - 1

    # -- ranges (what the REST endpoints serve) -------------------------------------------

    def _forward(self, symbol: str, k: int, now_ms: int) -> Iterator[LedgerTrade]:
        now_k = self.tf.index(now_ms)
        for kk in range(max(k, self.k0), now_k + 1):
            for t in self.candle_trades(symbol, kk):
                if t.time_ms > now_ms:
                    return
                yield t

    def _backward(self, symbol: str, k: int, now_ms: int) -> Iterator[LedgerTrade]:
        for kk in range(min(k, self.tf.index(now_ms)), self.k0 - 1, -1):
            for t in reversed(self.candle_trades(symbol, kk)):
                if t.time_ms <= now_ms:
                    yield t

    def from_id(self, symbol: str, from_id: int, limit: int, now_ms: int) -> list[LedgerTrade]:
        """The first ``limit`` trades with id >= ``from_id`` that exist by ``now_ms``."""
        now_k = self.tf.index(now_ms)
        k = self._candle_of_id(symbol, max(from_id, 0), now_k)
        out = []
        for t in self._forward(symbol, k, now_ms):
            if t.id >= from_id:
                out.append(t)
                if len(out) >= limit:
                    break
        return out

    def recent(self, symbol: str, limit: int, now_ms: int) -> list[LedgerTrade]:
        """The newest ``limit`` trades, oldest first."""
        return self.last_between(symbol, None, now_ms, limit, now_ms)

    def first_between(
        self, symbol: str, start_ms: int, end_ms: int | None, limit: int, now_ms: int
    ) -> list[LedgerTrade]:
        """The oldest ``limit`` trades with time in ``[start, end]``, oldest first."""
        out = []
        for t in self._forward(symbol, self.tf.index(start_ms), now_ms):
            if end_ms is not None and t.time_ms > end_ms:
                break
            if t.time_ms >= start_ms:
                out.append(t)
                if len(out) >= limit:
                    break
        return out

    def last_between(
        self, symbol: str, start_ms: int | None, end_ms: int, limit: int, now_ms: int
    ) -> list[LedgerTrade]:
        """The newest ``limit`` trades with time in ``[start, end]``, oldest first."""
        out = []
        for t in self._backward(symbol, self.tf.index(end_ms), now_ms):
            if start_ms is not None and t.time_ms < start_ms:
                break
            if t.time_ms <= end_ms:
                out.append(t)
                if len(out) >= limit:
                    break
        out.reverse()
        return out

    def between(
        self, symbol: str, since_ms: int | None, until_ms: int | None, now_ms: int
    ) -> list[LedgerTrade]:
        """Every trade with time in ``[since, until)`` that exists by ``now_ms``."""
        start = self.tf.open_of(self.k0) if since_ms is None else since_ms
        out = []
        for t in self._forward(symbol, self.tf.index(start), now_ms):
            if until_ms is not None and t.time_ms >= until_ms:
                break
            if t.time_ms >= start:
                out.append(t)
        return out
