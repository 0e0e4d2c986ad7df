"""What a feed asks of a live source: an immutable description shared by every mode."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .timeframes import Timeframe

__all__ = ["FeedSpec", "VenueParams"]


class VenueParams(Mapping):
    """A read-only copy of a dict of venue params (unlike ``MappingProxyType``, it can be
    copied and pickled with the spec). ``dict(params)`` gives a fresh dict to hand to ccxt."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        self._items = dict(items or {})

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"VenueParams({self._items!r})"

    def __getstate__(self):
        return self._items

    def __setstate__(self, state) -> None:
        self._items = dict(state)


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
    max_connection_age: float | None = 12 * 3600.0
    reconnections: int | None = None
    ohlcv_params: Mapping[str, Any] = field(default_factory=VenueParams, hash=False)

    @property
    def label(self) -> str:
        return f"{self.symbol} {self.tf}"
