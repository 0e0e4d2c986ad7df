"""The main job: a live SMA-cross strategy, paper trading on backtrader's own broker.

Offline by default, against the package's local exchange (real Binance candles replayed on
127.0.0.1); ``--exchange binance`` runs the same on the real exchange (no keys needed: only
public market data is read and orders go to backtrader's simulated broker).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from datetime import datetime

import backtrader as bt

from .cli import check_local_market, check_timeframe, exit_status, load_config, report_error
from .errors import ConfigurationError
from .running import run_live
from .store import CCXTStore

__all__ = ["DemoStrategy", "add_arguments", "check_args", "demo_command", "run_demo"]


class DemoStrategy(bt.Strategy):
    """Buy when the fast SMA crosses above the slow one, sell on the cross below - on live
    bars only (history only warms the averages up).

    Prints every live bar, every data notification and every trade; stops cerebro after
    ``live_bars`` live bars.
    """

    params = (("fast", 3), ("slow", 8), ("live_bars", 15), ("backfill", None), ("out", None))

    def __init__(self) -> None:
        self.fast = bt.ind.SMA(period=self.p.fast)
        self.slow = bt.ind.SMA(period=self.p.slow)
        self.cross = bt.ind.CrossOver(self.fast, self.slow)
        self.live = False
        self.history_bars = 0
        self.live_seen = 0
        self.trades = []
        self.statuses = []

    def _print(self, text: str) -> None:
        print(text, file=self.p.out or sys.stdout, flush=True)

    def notify_data(self, data, status, *args, **kwargs) -> None:
        name = data._getstatusname(status)
        self.statuses.append(name)
        self._print(f"-- data {data._name}: {name} {args[0] if args and args[0] else ''}".rstrip())
        if status == data.LIVE and not self.live and self.p.backfill is not None:
            got, asked = self.history_bars, self.p.backfill
            note = "" if got >= asked else f": the exchange had only {got} of the {asked} asked"
            self._print(f"   history: {got} bars{note}")
        self.live = status == data.LIVE

    def notify_trade(self, trade) -> None:
        if trade.isclosed:
            self.trades.append(trade.pnlcomm)
            self._print(f"   trade closed: pnl {trade.pnlcomm:+.2f}")

    def notify_order(self, order) -> None:
        if order.status == order.Completed:
            side = "BUY " if order.isbuy() else "SELL"
            self._print(
                f"   {side} {order.executed.size:g} @ {order.executed.price:.2f} "
                f"(bar {bt.num2date(order.executed.dt):%H:%M:%S})"
            )

    def prenext(self) -> None:
        self.history_bars += 1  # warming up the averages

    def next(self) -> None:
        if not self.live:
            self.history_bars += 1
            return
        self.live_seen += 1
        d = self.data
        self._print(
            f"{d.datetime.datetime(0):%Y-%m-%d %H:%M:%S} UTC  O {d.open[0]:.2f}  "
            f"H {d.high[0]:.2f}  L {d.low[0]:.2f}  C {d.close[0]:.2f}  V {d.volume[0]:.4f}"
            f"  sma{self.p.fast} {self.fast[0]:.2f} sma{self.p.slow} {self.slow[0]:.2f}"
        )
        if self.cross[0] > 0 and not self.position:
            self.buy()
        elif self.cross[0] < 0 and self.position:
            self.close()
        if self.live_seen >= self.p.live_bars:
            self.env.runstop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exchange",
        default="local",
        help="ccxt exchange id, or 'local' (default) for the bundled offline exchange",
    )
    parser.add_argument(
        "--symbol",
        default="BTC/USDT",
        help="unified symbol (default BTC/USDT; the local exchange has BTC/USDT and ETH/USDT)",
    )
    parser.add_argument(
        "--timeframe",
        default=None,
        help="a ccxt timeframe the venue offers (the local exchange: Binance's); default 1s "
        "on the local exchange (a quick run), 1m elsewhere",
    )
    parser.add_argument(
        "--mode",
        choices=("websocket", "polling", "threaded"),
        default="websocket",
        help="live mode: ccxt.pro WebSocket (default), REST polling, or threaded REST polling",
    )
    parser.add_argument(
        "--bars", type=int, default=15, help="stop after this many live bars (default 15)"
    )
    parser.add_argument(
        "--backfill", type=int, default=30, help="bars of history before going live (default 30)"
    )
    parser.add_argument("--cash", type=float, default=100_000.0, help="paper cash (default 100000)")
    parser.add_argument("--size", type=float, default=0.5, help="units per trade (default 0.5)")
    parser.add_argument(
        "--config",
        default=None,
        help="ccxt constructor options as JSON, or @file.json (a real exchange only: "
        "proxies, options, urls)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=5,
        help="attempts after the first for a REST call that fails for a retryable reason "
        "(network, 429, 5xx) before the demo gives up (default 5, the store's)",
    )
    parser.add_argument(
        "--retry-delay",
        type=float,
        default=0.5,
        help="first backoff between those attempts, seconds; it doubles each time "
        "(default 0.5, the store's)",
    )
    parser.add_argument(
        "--broker",
        action="store_true",
        help="trade through CCXTBroker on the local exchange (an account holding --cash of the "
        "quote currency) instead of backtrader's simulated broker; local exchange only",
    )


def check_args(args: argparse.Namespace, store: CCXTStore | None = None) -> str:
    """Reject what the venue would reject, before anything starts; returns the timeframe.

    The local exchange accepts any symbol and interval (it derives them), so the demo checks
    them against what Binance itself offers, as the real exchange would.
    """
    for name, value, low in (("bars", args.bars, 1), ("backfill", args.backfill, 0)):
        if value < low:
            raise ConfigurationError(f"--{name} must be an integer >= {low}, got {value}")
    for name in ("cash", "size"):
        if not getattr(args, name) > 0:
            raise ConfigurationError(f"--{name} must be > 0, got {getattr(args, name)}")
    local = args.exchange == "local"
    timeframe = args.timeframe or ("1s" if local else "1m")
    if getattr(args, "broker", False) and not local:
        raise ConfigurationError(
            "--broker trades on the local exchange only; valid choices: drop --exchange, or "
            "drop --broker (real orders: samples/live_broker.py on the testnet, docs/broker.md)"
        )
    if local:
        if args.config:
            raise ConfigurationError(
                "--config is for a real exchange; the local exchange needs none "
                "(valid choices: drop --config, or add --exchange ID)"
            )
        check_local_market(args.symbol, timeframe, elsewhere="with --exchange binance")
    else:
        assert store is not None
        check_timeframe(timeframe, store.exchange.timeframes or {}, store.exchange_id)
    return timeframe


def _retry_kwargs(args: argparse.Namespace) -> dict:
    """The store's retry keywords from ``--retries`` / ``--retry-delay`` (the store checks
    them: a bad value is a ConfigurationError before anything starts)."""
    delay = getattr(args, "retry_delay", 0.5)
    return {
        "retries": getattr(args, "retries", 5),
        "retry_delay": delay,
        "retry_max_delay": max(30.0, delay),
    }


def run_demo(args: argparse.Namespace, out=None) -> DemoStrategy:
    """Run the demo; returns the strategy (for its counters). Ctrl-C stops it cleanly.
    Bad options raise a :class:`~.errors.ConfigurationError` before anything starts."""
    out = out or sys.stdout
    local = args.exchange == "local"
    store = None
    if not local:
        store = CCXTStore(
            args.exchange, config=load_config(getattr(args, "config", None)), **_retry_kwargs(args)
        )
    timeframe = check_args(args, store)
    stack = contextlib.ExitStack()
    with stack:
        if local:
            from .localexchange import LocalExchange

            # serve the history asked for (the local default is 3,000 candles), so that the
            # backfill announced below is the backfill delivered
            ex = stack.enter_context(
                LocalExchange(
                    symbols=(args.symbol,),
                    timeframes=(timeframe,),
                    history=max(3000, args.backfill + 10),
                )
            )
            acct = None
            if getattr(args, "broker", False):
                quote = args.symbol.split("/")[1]
                acct = ex.add_account(balances={quote: args.cash}, fee_rate=0.001)
            store = CCXTStore("binance", config=ex.ccxt_config(account=acct), **_retry_kwargs(args))
            print(f"local exchange (real Binance candles replayed) at {ex.rest_url}", file=out)
        assert store is not None
        stack.callback(store.stop)
        cerebro = bt.Cerebro(stdstats=False, exactbars=1)
        data = store.getdata(
            dataname=args.symbol,
            name=args.symbol,
            timeframe=timeframe,
            backfill_bars=args.backfill,
            use_websocket=args.mode == "websocket",
            use_threaded_data=args.mode == "threaded",
        )
        cerebro.adddata(data)
        if getattr(args, "broker", False):
            cerebro.setbroker(store.getbroker())
        else:
            cerebro.broker.setcash(args.cash)
        cerebro.addsizer(bt.sizers.FixedSize, stake=args.size)
        cerebro.addstrategy(DemoStrategy, live_bars=args.bars, backfill=args.backfill, out=out)
        history = (
            f"backfilling {args.backfill} bars"
            if local
            else f"asking for {args.backfill} bars of history (a venue may have fewer)"
        )
        print(
            f"{store.exchange_id} {args.symbol} {timeframe} via {args.mode}: {history}, "
            f"then {args.bars} live bars (Ctrl-C stops)",
            file=out,
        )
        started = datetime.now()
        strat = run_live(cerebro)[0]
        value = cerebro.broker.getvalue()
        print("", file=out)
        print("summary", file=out)
        print(f"  history bars   {strat.history_bars}", file=out)
        print(f"  live bars      {strat.live_seen}", file=out)
        print(f"  notifications  {' -> '.join(strat.statuses)}", file=out)
        print(f"  trades closed  {len(strat.trades)}  pnl {sum(strat.trades):+.2f}", file=out)
        print(f"  portfolio      {value:.2f} (start {args.cash:.2f})", file=out)
        print(f"  wall time      {(datetime.now() - started).total_seconds():.1f}s", file=out)
        if getattr(args, "broker", False):
            broker = cerebro.broker
            fills = ex.ledger.fills(acct)
            same = {str(f["id"]) for f in fills} == broker.ledger.trade_ids and len(
                ex.ledger.create_requests(acct)
            ) == len(broker.ledger.by_cid)
            print(
                f"  exchange       {len(ex.ledger.orders(acct))} orders, {len(fills)} fills "
                f"(broker: {len(broker.ledger.by_cid)} orders, {len(broker.ledger.trade_ids)} "
                f"fills; {'the same' if same else 'DIFFERENT'})",
                file=out,
            )
        return strat


def demo_command(args: argparse.Namespace, out=None, err=None) -> int:
    """The ``demo`` command; returns the exit status. A failure is one line on ``err``
    (the traceback too with ``-v``)."""
    err = err or sys.stderr
    try:
        run_demo(args, out)
    except KeyboardInterrupt:  # before run_live's handler is installed, or after it
        print("interrupted", file=err)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line
        report_error(exc, err, verbose=getattr(args, "verbose", False))
        return exit_status(exc)
    return 0
