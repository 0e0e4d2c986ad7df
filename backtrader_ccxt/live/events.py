"""What the stream transport tells a feed's stream machine: immutable events, loop thread only.

The transport (:mod:`.transport`) turns what ccxt.pro does into these; the stream machine
(:mod:`.streammachine`) decides what they mean for bars. Neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Broken", "Fatal", "Frame", "Healthy", "StreamEvent", "Trades"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One candle state the venue sent, in arrival order.

    ``row`` is ccxt's parsed ``[open_ms, o, h, l, c, v]`` (a copy). ``final`` is the venue's
    own closed flag read from the raw frame: True (the venue says this is the candle's final
    state), False (the venue says it is a partial update), None (the venue sends no flag, or
    this frame did not carry one). ``recv_ms`` is the exchange-clock time at which the frame
    arrived; ``epoch`` names the connection that carried it (equal epochs: the same
    connection; see ``WatchGroup._frame_epoch``).
    """

    row: list
    final: bool | None
    recv_ms: int
    epoch: int


@dataclass(frozen=True, slots=True)
class Trades:
    """Public trades a trade stream brought, in arrival order: ccxt trade dicts (copies of
    ``id``, ``timestamp``, ``price``, ``amount``, ``side``), stamped like :class:`Frame`."""

    trades: tuple
    recv_ms: int
    epoch: int


@dataclass(frozen=True, slots=True)
class Broken:
    """The connection carrying this stream was lost (or declared dead by the watchdog)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Healthy:
    """The stream talks: the first frame or answer of a connection, sent to every stream of
    its watch call. After a break, everything between the break and now must come from
    REST; at the start, the backfill can begin."""

    epoch: int


@dataclass(frozen=True, slots=True)
class Fatal:
    """The stream failed for good (bad symbol, no such channel, credentials...)."""

    reason: str


StreamEvent = Frame | Trades | Broken | Healthy | Fatal
