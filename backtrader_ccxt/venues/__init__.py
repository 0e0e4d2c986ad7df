"""Venue adapters: one module per venue family, behind :class:`~.base.VenueAdapter`.

:func:`adapter_for` gives the adapter of a ccxt exchange id (the generic one, timing rule,
for venues not listed). ``python -m backtrader_ccxt.venues`` prints the venue table of
docs/venues.md: for every ccxt.pro exchange with ``watchOHLCV``, which close rule applies.
"""

from __future__ import annotations

from . import binance, bybit, gate, kraken, okx
from .base import FlagReader, VenueAdapter

__all__ = ["ADAPTERS", "GENERIC", "FlagReader", "VenueAdapter", "adapter_for", "venue_table"]

GENERIC = VenueAdapter(
    name="generic",
    rule="timing",
    notes="no flag known: the timing rule (a change seen after the close, then the successor)",
)

ADAPTERS: tuple[VenueAdapter, ...] = (
    binance.ADAPTER,
    okx.ADAPTER,
    bybit.ADAPTER,
    gate.ADAPTER,
    kraken.ADAPTER,
)

_BY_ID = {i: a for a in ADAPTERS for i in a.ids}


def adapter_for(exchange_id: str) -> VenueAdapter:
    """The adapter of ``exchange_id`` (a ccxt id), :data:`GENERIC` if none is known."""
    return _BY_ID.get(exchange_id, GENERIC)


_RULE_TEXT = {
    "flag": "venue's closed flag",
    "flag-or-timing": "closed flag where sent, else timing",
    "timing": "timing rule",
}


def venue_table() -> str:
    """The markdown table of docs/venues.md, from ccxt.pro's list and these adapters."""
    import ccxt.pro as ccxtpro

    rows = []
    for exchange_id in sorted(ccxtpro.exchanges):
        cls = getattr(ccxtpro, exchange_id, None)
        try:
            has = cls().has if cls is not None else {}
        except Exception:  # noqa: BLE001 - a class that cannot be built has no stream for us
            has = {}
        if not has.get("watchOHLCV"):
            continue
        adapter = adapter_for(exchange_id)
        multi = "yes" if has.get("watchOHLCVForSymbols") else "no"
        rows.append(
            f"| `{exchange_id}` | {adapter.name} | {_RULE_TEXT[adapter.rule]} | {multi} | "
            f"{adapter.notes} |"
        )
    head = [
        "| ccxt id | adapter | close rule | one connection for many symbols | notes |",
        "|---|---|---|---|---|",
    ]
    return "\n".join(head + rows) + "\n"
