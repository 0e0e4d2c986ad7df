"""What a feed asks of a live source: an immutable description shared by every mode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .timeframes import Timeframe

__all__ = ["FeedSpec"]


@dataclass(frozen=True)
class FeedSpec:
    """Everything a source needs to produce one feed's bars.

    Times are exchange ms. ``since_ms`` is the open time the backfill starts at; ``until_ms``
    the exclusive open-time bound (``todate``); ``historical`` ends the feed after backfill.
    ``ohlcv_params`` are venue params (the feed's ``fetch_ohlcv_params``, read-only) passed
    to every REST candle request (``fetch_ohlcv(..., params=dict(spec.ohlcv_params))``) and
    to the stream's watch where the venue takes them, e.g. ``{'price': 'mark'}``.
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
    ohlcv_params: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    @property
    def label(self) -> str:
        return f"{self.symbol} {self.tf}"
