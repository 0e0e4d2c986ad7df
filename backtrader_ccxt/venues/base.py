"""The one small interface every venue adapter implements.

An adapter holds what is particular to one venue family and nothing else: how to read the
venue's own "candle closed" flag from a raw WebSocket frame (ccxt.pro parses it away), how
long after a candle's close the flagged final may still arrive, and how many streams one
connection may carry. The stream core stays venue-blind: it asks the adapter, never the
exchange id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["EventTimeReader", "FlagReader", "VenueAdapter", "unified_names"]

_MEMO = "_backtrader_ccxt_names"  # attribute set on each ccxt instance a reader sees


def unified_names(exchange, key: tuple, lookup: Callable[[], tuple]) -> tuple:
    """``lookup()`` (the unified symbol and timeframe of a frame's venue ids, found with
    ccxt's ``safe_symbol`` / ``find_timeframe``), remembered per instance under ``key`` until
    its markets are reloaded. Every candle frame needs them: with 1,000 streams, ccxt's
    lookups were a tenth of the loop thread's time at each close."""
    markets = getattr(exchange, "markets", None)
    memo = getattr(exchange, _MEMO, None)
    if memo is None or memo[0] is not markets:
        memo = (markets, {})
        try:
            setattr(exchange, _MEMO, memo)
        except AttributeError:  # an instance that takes no attributes: no memo
            return lookup()
    names = memo[1].get(key)
    if names is None:
        names = memo[1][key] = lookup()
    return names


#: ``(exchange, client, message) -> {open_ms: final}`` for a raw candle frame, or None when
#: the message is not one of the candle frames the feeds watch. ``final`` is True for a frame
#: the venue marks final, False for one it marks partial, None where the frame has no flag.
FlagReader = Callable[[object, object, object], "dict[int, bool | None] | None"]

#: ``(message) -> ms`` the venue's own send time of a raw candle frame, or None without one
EventTimeReader = Callable[[object], "int | None"]


@dataclass(frozen=True)
class VenueAdapter:
    """What the stream core needs to know about one venue family.

    - ``name``: the family, for logs and the venue table.
    - ``rule``: ``"flag"`` where :attr:`read_flags` reads a closed flag the venue always sends
      (a candle closed without a flagged final then comes from REST), ``"flag-or-timing"``
      where the flag may be missing (frames without it fall back to the timing rule),
      ``"timing"`` where the venue sends no flag (the generic rule of
      :mod:`..live.streammachine`).
    - ``read_flags``: see :data:`FlagReader`; None for ``"timing"`` venues.
    - ``read_event_ms``: see :data:`EventTimeReader`; None where the venue's candle frames
      carry no send time (OKX). With it, a feed knows how far its connection has been read:
      a confirmation over REST waits until the loop has read the frames the venue sent up to
      the confirmation's due time (a busy loop reads the final late; REST cannot beat it).
    - ``final_lag_ms``: how long after a candle's close its flagged final may still arrive on
      a healthy connection (OKX sends it after the successor's first update at times). The
      stream waits that long (at least the feed's grace) before confirming over REST.
    - ``streams_per_watch``: how many streams one watch call carries (ccxt.pro sends one
      subscribe message per call: Bybit spot takes 10 topics a message; ccxt's Binance puts
      each call on a connection of its own, 200 streams each by default, the venue's cap is
      1,024). Larger sets are split over several calls.
    - ``subscribe_interval``: seconds between two watch calls' first subscribe messages on
      one instance (venues cap subscribe messages per second: Binance 5 per connection).
    - ``streams_per_instance``: the most streams one ccxt.pro instance may carry (ccxt's
      Binance puts all of an instance's watch calls on one connection, capped at 1,024
      streams); more go to another instance. None: no cap.
    - ``ws_timeframes``: ccxt timeframe -> venue channel overrides for the WebSocket
      instances (OKX: the UTC-aligned channels for days and longer, as its REST uses).
    - ``one_timeframe_per_connection``: ccxt.pro cannot tell two timeframes of one symbol
      apart on one connection (Kraken): each timeframe gets a ccxt.pro instance of its own.
    - ``notes``: one line for the venue table (routing or REST quirks).
    """

    name: str
    rule: str = "timing"
    read_flags: FlagReader | None = None
    read_event_ms: EventTimeReader | None = None
    final_lag_ms: int = 0
    streams_per_watch: int = 200
    subscribe_interval: float = 0.25
    streams_per_instance: int | None = None
    ws_timeframes: dict = field(default_factory=dict)
    one_timeframe_per_connection: bool = False
    notes: str = ""
    ids: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.rule not in ("flag", "flag-or-timing", "timing"):
            raise ValueError(
                f"rule must be 'flag', 'flag-or-timing' or 'timing', not {self.rule!r}"
            )
        if (self.read_flags is None) != (self.rule == "timing"):
            raise ValueError(f"{self.name}: read_flags is required exactly for flag rules")
