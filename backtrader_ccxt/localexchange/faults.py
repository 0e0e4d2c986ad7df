"""Fault controls: what the tests ask for, and counters of what was really applied.

:class:`FaultState` is owned by the server thread, which reads and consumes it while serving.
:class:`Faults` is the thread-safe facade tests call; every change runs on the server thread
(and waits for it) while the exchange is running.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAULT_KINDS", "MALFORMED_KINDS", "REST_FAULT_KINDS", "FaultState", "Faults"]

#: Keys of :attr:`Faults.counts`.
FAULT_KINDS = (
    "drop",
    "stall",
    "skip_final",
    "malformed",
    "duplicate",
    "out_of_order",
    "rest_429",
    "rest_5xx",
    "rest_timeout",
    "rest_truncated",
    "rest_busy",
    "omitted",
    "max_age",
    "trades_lost",
    "trades_duplicated",
    "burst_drop",
)

REST_FAULT_KINDS = ("429", "5xx", "timeout", "truncated", "busy")

#: Kinds of :meth:`Faults.send_malformed` (each protocol builds its own frame).
MALFORMED_KINDS = {
    # Starts like the venue's JSON push but is cut: ccxt's WebSocket client fails to decode it.
    "json": "truncated JSON",
    # Not JSON at all: ccxt hands the raw string to the exchange's message handler.
    "text": "malformed frame",
    # Valid JSON candle push of the venue without candle fields.
    "kline": "candle push without candle fields",
}


@dataclass
class RestFault:
    kind: str
    remaining: int
    path: str | None
    retry_after: float
    status: int
    hold: float | None


@dataclass
class SkipFinal:
    remaining: int
    symbol: str | None
    timeframe: str | None

    def matches(self, symbol: str, timeframe: str) -> bool:
        return (self.symbol is None or self.symbol == symbol) and (
            self.timeframe is None or self.timeframe == timeframe
        )


class FaultState:
    """Pending faults and counters; touched only by the server thread while running."""

    def __init__(self):
        self.counts = dict.fromkeys(FAULT_KINDS, 0)
        self.omit_empty = False
        self.stall_until_ms = 0
        self.skip_finals: list[SkipFinal] = []
        self.malformed: list[str] = []  # kinds, consumed one per frame
        self.duplicate = 0
        self.out_of_order = 0
        self.rest: list[RestFault] = []
        self.max_age_ms: int | None = None  # close WebSocket connections older than this
        self.trade = TradeFaults()

    def stalled(self, now_ms: int) -> bool:
        return now_ms < self.stall_until_ms

    def take_rest(self, path: str) -> RestFault | None:
        for fault in self.rest:
            if fault.remaining > 0 and (fault.path is None or fault.path == path):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self.rest.remove(fault)
                return fault
        return None

    def skip_final_for(self, symbol: str, timeframe: str) -> SkipFinal | None:
        for rule in self.skip_finals:
            if rule.remaining > 0 and rule.matches(symbol, timeframe):
                return rule
        return None

    def pending(self) -> dict:
        return {
            "stall_until_ms": self.stall_until_ms,
            "skip_final": sum(r.remaining for r in self.skip_finals),
            "malformed": len(self.malformed),
            "duplicate": self.duplicate,
            "out_of_order": self.out_of_order,
            "rest": sum(r.remaining for r in self.rest),
            "max_age_ms": self.max_age_ms,
            **self.trade.pending(),
        }

    def clear(self) -> None:
        self.stall_until_ms = 0
        self.skip_finals.clear()
        self.malformed.clear()
        self.duplicate = 0
        self.out_of_order = 0
        self.rest.clear()
        self.max_age_ms = None
        self.trade = TradeFaults()


@dataclass
class TradeFaults:
    """Pending faults of the public trade streams (``trade_streams.py`` consumes them)."""

    lose: int = 0  # the next n trades are not streamed (an id gap; REST still has them)
    duplicate: int = 0  # the next n trades are streamed twice
    burst_min: int = 0  # drop every connection halfway through the next burst this big

    def pending(self) -> dict:
        return {
            "trades_lost": self.lose,
            "trades_duplicated": self.duplicate,
            "burst_drop": self.burst_min,
        }


def _positive(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class Faults:
    """Fault controls of a :class:`LocalExchange` (``ex.faults``). Safe to call from any thread.

    Every ``count`` budget is consumed as the fault is really applied, and each application
    increments :attr:`counts`. Faults asked for while no client is listening stay pending.
    """

    def __init__(self, owner):
        self._owner = owner
        self._state = FaultState()

    def _run(self, fn, *args):
        return self._owner._call(fn, *args)

    # -- WebSocket --------------------------------------------------------------------------

    def drop_connections(self, clean: bool = False) -> int:
        """Close every WebSocket connection now; returns how many were closed.

        ``clean=False`` aborts the TCP connection without a close frame, like a network drop;
        ``clean=True`` sends a close frame (code 1001, going away) first.
        """
        return self._run(self._owner._drop_connections, bool(clean))

    def max_connection_age(self, seconds: float | None) -> None:
        """Close (code 1001, cleanly) every WebSocket connection once it is ``seconds`` old on
        the exchange clock, as Binance does after 24 hours; ``None`` turns it off. Applies to
        connections already open too; ``counts['max_age']`` counts the closes."""
        if seconds is not None and not seconds > 0:
            raise ValueError(f"seconds must be > 0 or None, got {seconds!r}")
        ms = None if seconds is None else max(int(seconds * 1000), 1)
        self._run(self._owner._set_max_age, ms)

    def stall(self, seconds: float) -> None:
        """Keep sockets open but send nothing (klines, replies, pings, pongs) for ``seconds``
        of the exchange clock. Frames due meanwhile are lost, like a silent hang."""
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds!r}")

        def apply():
            st = self._state
            st.stall_until_ms = max(st.stall_until_ms, self._owner.now_ms() + int(seconds * 1000))
            st.counts["stall"] += 1

        self._run(apply)

    def skip_final(
        self, count: int = 1, symbol: str | None = None, timeframe: str | None = None
    ) -> None:
        """Do not send the final update (Binance ``x: true``, OKX confirm ``"1"``, Bybit
        ``confirm: true``) of the next ``count`` candle closes.

        A close is one timeframe boundary: with ``symbol=None`` every subscribed symbol loses
        that final; with a symbol only that one does. ``counts['skip_final']`` counts the
        finals really withheld (one per symbol and timeframe, whatever the connections).
        REST still serves the real values.
        """
        rule = SkipFinal(_positive("count", count), symbol, timeframe)
        self._run(self._state.skip_finals.append, rule)

    def send_malformed(self, count: int = 1, kind: str = "text") -> None:
        """Send ``count`` bad frames, each just before the next candle frame sent, in
        the venue's format.

        ``kind``: ``"text"`` (not JSON), ``"json"`` (truncated JSON), ``"kline"`` (valid JSON
        kline event without its candle fields).
        """
        if kind not in MALFORMED_KINDS:
            raise ValueError(f"kind must be one of {sorted(MALFORMED_KINDS)}, got {kind!r}")
        self._run(self._state.malformed.extend, [kind] * _positive("count", count))

    def send_duplicate(self, count: int = 1) -> None:
        """Send the next ``count`` candle frames twice in a row."""
        n = _positive("count", count)

        def apply():
            self._state.duplicate += n

        self._run(apply)

    def send_out_of_order(self, count: int = 1) -> None:
        """After each of the next ``count`` candle frames, send an older frame of that stream:
        the previous candle's last partial update (with its original event time)."""
        n = _positive("count", count)

        def apply():
            self._state.out_of_order += n

        self._run(apply)

    # -- public trades ----------------------------------------------------------------------

    def lose_trades(self, count: int = 1) -> None:
        """Do not stream the next ``count`` trades (on every connection): an id gap for the
        client; REST still serves them. ``counts['trades_lost']``."""
        n = _positive("count", count)

        def apply():
            self._state.trade.lose += n

        self._run(apply)

    def duplicate_trades(self, count: int = 1) -> None:
        """Stream each of the next ``count`` trades twice. ``counts['trades_duplicated']``."""
        n = _positive("count", count)

        def apply():
            self._state.trade.duplicate += n

        self._run(apply)

    def drop_in_burst(self, min_trades: int = 4) -> None:
        """Cut every WebSocket connection (a network drop) halfway through the next burst
        of at least ``min_trades`` trades sent at once for a symbol (a fast clock, or the
        catch-up after a stall): the rest of the burst is never streamed, REST has it.
        ``counts['burst_drop']``."""
        n = _positive("min_trades", min_trades)

        def apply():
            self._state.trade.burst_min = n

        self._run(apply)

    # -- REST -------------------------------------------------------------------------------

    def rest_errors(
        self,
        kind: str,
        count: int = 1,
        retry_after: float = 1,
        path: str | None = None,
        status: int = 503,
        hold: float | None = None,
    ) -> None:
        """Make the next ``count`` REST requests (only those for ``path`` if given) fail.

        Bodies are in the venue's own format (``protocol``).

        kind:
            ``"429"``: HTTP 429, ``Retry-After: <retry_after>`` header, body: Binance
            ``{"code":-1003,...}``, OKX ``{"code":"50011",...}``, Bybit ``{"retCode":10006,...}``.
            ``"busy"``: the venue's "try again later": Binance HTTP 503 ``{"code":-1001,...}``,
            OKX HTTP 200 ``{"code":"50013",...}``, Bybit HTTP 200 ``{"retCode":10016,...}``.
            ``"5xx"``: HTTP ``status`` (500, 502, 503 or 504) with a plain-text body.
            ``"timeout"``: hold the response for ``hold`` seconds (default: the exchange's
            ``rest_timeout_hold``), longer than the client's timeout; ended at shutdown.
            ``"truncated"``: HTTP 200 with the JSON body cut in half.
        """
        if kind not in REST_FAULT_KINDS:
            raise ValueError(f"kind must be one of {list(REST_FAULT_KINDS)}, got {kind!r}")
        if kind == "5xx" and status not in (500, 502, 503, 504):
            raise ValueError(f"status must be 500, 502, 503 or 504, got {status!r}")
        fault = RestFault(kind, _positive("count", count), path, retry_after, status, hold)
        self._run(self._state.rest.append, fault)

    # -- data -------------------------------------------------------------------------------

    @property
    def omit_empty(self) -> bool:
        """When True, candles without trades are left out of REST and WebSocket output."""
        return self._state.omit_empty

    @omit_empty.setter
    def omit_empty(self, value: bool) -> None:
        self._run(setattr, self._state, "omit_empty", bool(value))

    def make_empty(self, symbol: str, timeframe: str, open_ms: int) -> None:
        """Turn the candle opening at ``open_ms`` into one without trades (flat, volume 0).

        This changes the served series (REST, WebSocket and :meth:`LocalExchange.candles`).
        """
        self._run(self._owner._make_empty, symbol, timeframe, open_ms)

    # -- bookkeeping ------------------------------------------------------------------------

    @property
    def counts(self) -> dict:
        """``{kind: times applied}`` for every kind in :data:`FAULT_KINDS`."""
        return dict(self._state.counts)

    def pending(self) -> dict:
        """Budgets not consumed yet."""
        return self._run(self._state.pending)

    def clear(self) -> None:
        """Cancel every pending fault and end a stall (counters are kept)."""
        self._run(self._state.clear)

    def reset_counts(self) -> None:
        def apply():
            for key in self._state.counts:
                self._state.counts[key] = 0

        self._run(apply)
