"""Run the local exchange until Ctrl-C.

python -m backtrader_ccxt.localexchange [--protocol binance|okx|bybit] [--port N]
                                        [--symbols BTC/USDT ETH/USDT] [--timeframes 1s 1m]
                                        [--history 3000]
"""

from __future__ import annotations

import argparse
import json
import signal
import threading

from .exchange import LocalExchange
from .protocol import PROTOCOLS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backtrader_ccxt.localexchange",
        description="Serve a local spot exchange speaking Binance's, OKX v5's or Bybit v5's "
        "protocol (REST + WebSocket candles), replaying real candles on the current clock.",
    )
    parser.add_argument("--protocol", choices=PROTOCOLS, default="binance")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--symbols", nargs="+", default=["BTC/USDT", "ETH/USDT"])
    parser.add_argument("--timeframes", nargs="+", default=["1s", "1m"])
    parser.add_argument("--history", type=int, default=3000)
    parser.add_argument("--updates-per-candle", type=int, default=4)
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        ex = LocalExchange(
            symbols=args.symbols,
            timeframes=args.timeframes,
            history=args.history,
            updates_per_candle=args.updates_per_candle,
            host=args.host,
            port=args.port,
            protocol=args.protocol,
        )
    except (TypeError, ValueError) as e:
        parser.error(str(e))
    with ex:
        print(f"REST URL: {ex.rest_url}")
        print(f"WS URL:   {ex.ws_url}")
        name = args.protocol
        print(f"ccxt config (ccxt.{name}(config) / ccxt.pro.{name}(config)):")
        print(json.dumps(ex.ccxt_config(), indent=2))
        print("Serving; press Ctrl-C to stop.", flush=True)
        while not stop.wait(1.0):
            pass
    print("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
