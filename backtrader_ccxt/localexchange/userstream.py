"""User-data streams: which connections receive which account's pushes, and the stream faults
(drop during a fill, duplicated and reordered execution reports, fills while disconnected).

Runs on the server thread; connections are the stream hub's (``streams.py``), frames go
through ``hub.send`` (so a stall loses them as it loses candles). What a push looks like is
the venue's business: :meth:`UserStreams.publish` gets the rendered payloads.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from .accounts import Account
from .trading_faults import TradingFaultState

__all__ = ["Push", "UserStreams"]

log = logging.getLogger(__name__)


class Push:
    """One rendered user-data event: ``payload`` (a JSON-able dict); ``report``: an
    execution report (the faults' unit); ``fill``: a report of an execution."""

    __slots__ = ("payload", "report", "fill")

    def __init__(self, payload: dict, report: bool, fill: bool):
        self.payload = payload
        self.report = report
        self.fill = fill


class UserStreams:
    """Subscriptions ``account -> {connection: {subscription id}}``; a ``None`` id is a
    raw stream (Binance's listenKey ``/ws/<key>``), an int a WebSocket-API subscription whose
    pushes are wrapped by ``wrap(subscription_id, payload)``."""

    def __init__(self, faults: TradingFaultState, wrap: Callable[[int, dict], dict]):
        self.faults = faults
        self.wrap = wrap
        self.subs: dict[Account, dict[object, set]] = {}
        self._next_id: dict[object, int] = {}

    # -- subscriptions ----------------------------------------------------------------------

    @property
    def refusing(self) -> bool:
        """True while ``fill_while_disconnected`` keeps user streams away."""
        return self.faults.disconnected_fills > 0

    def subscribe(self, conn, account: Account, raw: bool = False) -> int | None:
        """Add a subscription; its id (None for a raw stream). One per account and
        connection: subscribing again returns the one held."""
        self._prune()
        held = self.subs.setdefault(account, {}).setdefault(conn, set())
        if raw:
            held.add(None)
            return None
        for sid in held:
            if sid is not None:
                return sid
        sid = self._next_id.get(conn, 0)
        self._next_id[conn] = sid + 1
        held.add(sid)
        return sid

    def unsubscribe(self, conn, sid: int | None = None) -> list[int]:
        """Remove ``conn``'s subscription ``sid`` (all of them if None); the ids removed."""
        removed = []
        for conns in self.subs.values():
            held = conns.get(conn)
            if not held:
                continue
            for s in list(held):
                if s is not None and (sid is None or s == sid):
                    held.discard(s)
                    removed.append(s)
        self._prune()
        return removed

    def held(self, conn) -> list[int]:
        return sorted(
            s for conns in self.subs.values() for s in conns.get(conn, ()) if s is not None
        )

    def connections(self, account: Account | None = None) -> list:
        self._prune()
        accounts = [account] if account is not None else list(self.subs)
        out = []
        for a in accounts:
            for conn in self.subs.get(a, {}):
                if conn not in out:
                    out.append(conn)
        return out

    def _prune(self) -> None:
        for account in list(self.subs):
            conns = self.subs[account]
            for conn in [c for c, held in conns.items() if c.closed or not held]:
                del conns[conn]
            if not conns:
                del self.subs[account]
        for conn in [c for c in self._next_id if c.closed]:
            del self._next_id[conn]

    # -- faults -----------------------------------------------------------------------------

    def drop(self, hub, account: Account | None = None) -> int:
        """Cut the user-data connections (of ``account``, or all) like a network drop."""
        conns = self.connections(account)
        for conn in conns:
            hub._forget(conn)
            hub._abort(conn)
        self._prune()
        return len(conns)

    # -- pushes -----------------------------------------------------------------------------

    def publish(self, hub, account: Account, pushes: list[Push]) -> None:
        """Send one account's pushes of one instant, applying the pending stream faults."""
        if hub is None or not pushes:
            return
        st = self.faults
        if not self.connections(account):
            return  # nobody listens: pending faults wait for a listener
        conns = self.subs[account]
        if st.drop_during_fill > 0 and any(p.fill for p in pushes):
            st.drop_during_fill -= 1
            st.counts["drop_during_fill"] += 1
            st.counts["user_stream_drop"] += self.drop(hub, account)
            return
        pushes = list(pushes)
        reports = [i for i, p in enumerate(pushes) if p.report]
        if st.reorder_reports > 0 and len(reports) >= 2:
            i, j = reports[-2], reports[-1]
            pushes[i], pushes[j] = pushes[j], pushes[i]
            st.reorder_reports -= 1
            st.counts["reordered_report"] += 1
        for push in pushes:
            times = 1
            if push.report and st.duplicate_reports > 0:
                st.duplicate_reports -= 1
                st.counts["duplicate_report"] += 1
                times = 2
            for conn, held in list(conns.items()):
                if conn.closed:
                    continue
                for sid in held:
                    body = push.payload if sid is None else self.wrap(sid, push.payload)
                    text = json.dumps(body, separators=(",", ":"))
                    for _ in range(times):
                        hub.send(conn, text)
                        hub.stats.user_events_sent += 1
