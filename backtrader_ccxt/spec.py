"""What a feed asks of a live source: an immutable description shared by every mode."""

from __future__ import annotations

from dataclasses import dataclass

from .timeframes import Timeframe

__all__ = ["FeedSpec"]


@dataclass(frozen=True)
class FeedSpec:
    """Everything a source needs to produce one feed's bars.

    Times are exchange ms. ``since_ms`` is the open time the backfill starts at; ``until_ms``
    the exclusive open-time bound (``todate``); ``historical`` ends the feed after backfill.
    """

    symbol: str
    tf: Timeframe
    since_ms: int
    page_limit: int
    until_ms: int | None = None
    historical: bool = False
    drop_newest: bool = False
    grace_ms: int = 1000
    retries: int = 5
    reconnect_delay: float = 1.0
    max_reconnect_delay: float = 30.0
    stall_timeout: float = 30.0

    @property
    def label(self) -> str:
        return f"{self.symbol} {self.tf}"
