"""Fault controls of the trading side: lost order replies, user-stream drops, duplicated and
out-of-order execution reports, fills while disconnected, cancels racing fills, clock skew.

:class:`TradingFaultState` is owned by the server thread (the trading desk reads and
consumes it); :class:`Faults` extends the shared facade (``faults.py``) with the trading
controls, so ``ex.faults.<control>`` holds every fault and ``ex.faults.counts`` every counter.
"""

from __future__ import annotations

from .faults import Faults as _SharedFaults
from .faults import _positive

__all__ = ["TRADING_FAULT_KINDS", "Faults", "TradingFaultState"]

#: Keys added to :attr:`Faults.counts` by the trading controls.
TRADING_FAULT_KINDS = (
    "lost_order_reply",
    "user_stream_drop",
    "drop_during_fill",
    "duplicate_report",
    "reordered_report",
    "fill_while_disconnected",
    "cancel_race",
    "clock_skew",
)


class TradingFaultState:
    """Pending trading faults; touched only by the server thread while running."""

    def __init__(self, counts: dict):
        self.counts = counts
        for kind in TRADING_FAULT_KINDS:
            counts.setdefault(kind, 0)
        self.lose_reply = 0
        self.drop_during_fill = 0
        self.duplicate_reports = 0
        self.reorder_reports = 0
        self.disconnected_fills = 0
        self.cancel_race = 0
        self.skew_ms = 0

    def pending(self) -> dict:
        return {
            "lose_order_reply": self.lose_reply,
            "drop_user_stream_during_fill": self.drop_during_fill,
            "duplicate_execution_reports": self.duplicate_reports,
            "reorder_execution_reports": self.reorder_reports,
            "fill_while_disconnected": self.disconnected_fills,
            "cancel_races_fill": self.cancel_race,
            "clock_skew_ms": self.skew_ms,
        }

    def clear(self) -> None:
        self.lose_reply = self.drop_during_fill = 0
        self.duplicate_reports = self.reorder_reports = 0
        self.disconnected_fills = self.cancel_race = 0
        self.skew_ms = 0


class Faults(_SharedFaults):
    """``ex.faults``: the shared controls (``faults.py``) plus the trading ones below.

    Each trading budget is consumed as the fault really happens; ``counts`` counts each
    application under the keys of :data:`TRADING_FAULT_KINDS`.
    """

    def __init__(self, owner):
        super().__init__(owner)
        self.trading = TradingFaultState(self._state.counts)

    def _add(self, attr: str, n: int) -> None:
        def apply():
            setattr(self.trading, attr, getattr(self.trading, attr) + n)

        self._run(apply)

    def lose_order_reply(self, n: int = 1) -> None:
        """The next ``n`` accepted new orders (``POST /api/v3/order``) are booked and
        executed, but their HTTP reply is never sent: the connection is held, then cut, so
        the client times out (ccxt: ``RequestTimeout``, a ``NetworkError``) while the ledger
        holds the order. Counted as ``lost_order_reply``."""
        self._add("lose_reply", _positive("n", n))

    def drop_user_stream(self) -> int:
        """Cut every user-data connection now (WebSocket-API sessions that subscribed a user
        stream, and listenKey streams); returns how many. Counted as ``user_stream_drop``."""
        return self._run(self._owner._drop_user_streams)

    def drop_user_stream_during_fill(self, n: int = 1) -> None:
        """At each of the next ``n`` instants with a fill for an account that has a user-data
        connection, cut that account's user-data connections before the fill's reports are
        sent: the fill is in REST only. Counted as ``drop_during_fill``."""
        self._add("drop_during_fill", _positive("n", n))

    def duplicate_execution_reports(self, n: int = 1) -> None:
        """Send each of the next ``n`` execution reports that have a listener twice.
        Counted as ``duplicate_report``."""
        self._add("duplicate_reports", _positive("n", n))

    def reorder_execution_reports(self, n: int = 1) -> None:
        """The next ``n`` times an account gets two or more execution reports at once (a
        market order's NEW and TRADE, several partial fills), send the newest before the one
        before it: an older report after a newer one. Counted as ``reordered_report``."""
        self._add("reorder_reports", _positive("n", n))

    def fill_while_disconnected(self, n: int = 1) -> None:
        """Cut every user-data connection now and refuse new ones (connections are cut as
        they open) until ``n`` executions have happened: those fills are in REST only.
        Counted as ``fill_while_disconnected`` (one per fill)."""
        n = _positive("n", n)

        def apply():
            self.trading.disconnected_fills += n
            self._owner._drop_user_streams(count=False)

        self._run(apply)

    def cancel_races_fill(self, n: int = 1) -> None:
        """The next ``n`` cancels of an open order lose a race: the order fills in full (at
        its limit price, or the current price) in the same instant, then the cancel gets
        ``-2011 Unknown order sent.``. Counted as ``cancel_race``."""
        self._add("cancel_race", _positive("n", n))

    def clock_skew(self, ms: int) -> None:
        """Offset the server clock by ``ms`` (negative: behind) for what signed requests are
        checked against (``timestamp`` vs ``recvWindow``), for ``/api/v3/time`` and for the
        event times of user-data pushes. ``0`` ends it. Counted as ``clock_skew``."""
        if not isinstance(ms, int) or isinstance(ms, bool):
            raise ValueError(f"ms must be an int, got {ms!r}")

        def apply():
            self.trading.skew_ms = ms
            self.trading.counts["clock_skew"] += 1

        self._run(apply)

    def pending(self) -> dict:
        out = super().pending()
        out.update(self._run(self.trading.pending))
        return out

    def clear(self) -> None:
        super().clear()
        self._run(self.trading.clear)
