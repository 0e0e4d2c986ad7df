"""Live sources: where a feed's bars and status events come from in each mode.

- :mod:`.polling`: REST polling rules (sans-I/O) with a blocking driver (default mode);
- :mod:`.loopthread`: the store's background thread running its own asyncio loop;
- :mod:`.manager`: the store-owned manager that runs subscriptions on that loop
  (threaded polling and WebSocket streaming);
- :mod:`.assembler`: which streamed candles are closed and whose values can be trusted.

Every source hands the feed immutable :class:`~backtrader_ccxt.bars.Bar` and
:class:`~backtrader_ccxt.bars.Status` items through ``get(timeout)``.
"""
