"""Live sources: where a feed's bars and status events come from in each mode.

- :mod:`.polling`: REST polling rules (sans-I/O) with a blocking driver (default mode);
- :mod:`.loopthread`: the store's background thread running its own asyncio loop;
- :mod:`.manager`: the store-owned manager, the thin driver that runs subscriptions on that
  loop (threaded polling and WebSocket streaming);
- :mod:`.streammachine`: the WebSocket rules (sans-I/O): backfill, closes by the venue's flag
  or by timing, REST fills and confirmations, the end;
- :mod:`.transport` and :mod:`.tap`: watch calls, reconnects, watchdog, and every candle
  frame as it arrives (the only WebSocket I/O);
- :mod:`.events`: what the transport tells a stream machine.

Every source hands the feed immutable :class:`~backtrader_ccxt.bars.Bar` and
:class:`~backtrader_ccxt.bars.Status` items through ``get(timeout)``.
"""
