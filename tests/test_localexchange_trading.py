"""The local exchange trades: Binance's signed REST with the real ccxt client, orders matched
on the replay's own price path (the public trade ledger), balances, fees and the ledgers as
ground truth, and the REST-side fault controls.

The exchange runs on a hand-moved clock: nothing here waits on time, every fill is at a
public trade the test reads back from ``ex.trades``."""

from __future__ import annotations

import threading
from decimal import Decimal

import ccxt
import pytest
from helpers import eventually

from backtrader_ccxt.localexchange import LocalExchange

SYMBOL = "BTC/USDT"
T0 = 1_700_000_030.5


@pytest.fixture(autouse=True)
def no_leftover_threads():
    before = threading.active_count()
    yield
    eventually(lambda: threading.active_count() == before, timeout=5)


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def venue():
    clock = Clock()
    ex = LocalExchange(symbols=(SYMBOL, "ETH/USDT"), timeframes=("1s",), history=600, clock=clock)
    acct = ex.add_account(balances={"USDT": 10_000, "BTC": 1}, fee_rate=0.001)
    with ex:
        client = ccxt.binance({**ex.ccxt_config(account=acct), "timeout": 3000})
        client.load_markets()
        yield ex, acct, client, clock


def last_price(ex, symbol=SYMBOL) -> Decimal:
    trade = ex.trades(symbol, since_ms=ex.now_ms() - 10_000)[-1]
    return Decimal(repr(trade["price"]))


def tick_round(x: Decimal, tick="0.01") -> Decimal:
    return x.quantize(Decimal(tick))


def advance_until(ex, clock, pred, step=30.0, limit=7200.0):
    """Move the clock until ``pred(trade)`` holds for a public trade after the start; that
    trade (the first). Fails if none within ``limit`` seconds."""
    start = ex.now_ms()
    while clock.t - start / 1000 < limit:
        clock.t += step
        for t in ex.trades(SYMBOL, since_ms=start + 1):
            if pred(Decimal(repr(t["price"]))):
                return t
    raise AssertionError("the price path never got there")


def test_balance_and_market_buy_at_the_current_price_with_fee(venue):
    ex, acct, client, _ = venue
    bal = client.fetch_balance()
    assert bal["USDT"] == {"free": 10_000.0, "used": 0.0, "total": 10_000.0}
    p = last_price(ex)
    order = client.create_order(SYMBOL, "market", "buy", 0.01)
    assert order["status"] == "closed" and order["filled"] == 0.01
    assert Decimal(repr(order["average"])) == p
    [fill] = ex.ledger.fills(acct)
    cost = (p * Decimal("0.01")).quantize(Decimal("1e-8"))
    assert fill["price"] == p and fill["quoteQty"] == cost
    assert fill["commission"] == (cost * Decimal("0.001")).quantize(Decimal("1e-8"))
    assert fill["commissionAsset"] == "USDT" and fill["isBuyer"] and not fill["isMaker"]
    free_usdt = Decimal(10_000) - cost - fill["commission"]
    assert ex.ledger.balances(acct)["USDT"] == (free_usdt, 0)
    assert ex.ledger.balances(acct)["BTC"] == (Decimal("1.01"), 0)
    bal = client.fetch_balance()
    assert Decimal(repr(bal["USDT"]["free"])) == free_usdt
    assert bal["BTC"]["total"] == 1.01
    [trade] = client.fetch_my_trades(SYMBOL)
    assert trade["id"] == str(fill["id"]) and trade["order"] == order["id"]
    assert trade["fee"] == {"cost": float(fill["commission"]), "currency": "USDT"}
    [snap] = ex.ledger.orders(acct)
    assert snap["status"] == "FILLED" and snap["clientOrderId"] == order["clientOrderId"]


def test_limit_rests_locks_and_fills_when_the_path_crosses_it(venue):
    ex, acct, client, clock = venue
    limit = tick_round(last_price(ex) * Decimal("0.9995"))
    order = client.create_order(SYMBOL, "limit", "buy", 0.02, float(limit))
    assert order["status"] == "open" and order["filled"] == 0
    locked = (limit * Decimal("0.02")).quantize(Decimal("1e-8"))
    locked += (locked * Decimal("0.001")).quantize(Decimal("1e-8"), rounding="ROUND_UP")
    assert ex.ledger.balances(acct)["USDT"] == (Decimal(10_000) - locked, locked)
    [open_] = client.fetch_open_orders(SYMBOL)
    assert open_["id"] == order["id"]
    crossing = advance_until(ex, clock, lambda p: p <= limit)
    fetched = client.fetch_order(order["id"], SYMBOL)
    assert fetched["status"] == "closed" and fetched["average"] == float(limit)
    [fill] = ex.ledger.fills(acct)
    assert fill["time"] == crossing["timestamp"] and fill["price"] == limit
    assert fill["isMaker"]
    assert client.fetch_open_orders(SYMBOL) == []
    free, used = ex.ledger.balances(acct)["USDT"]
    assert used == 0 and free == Decimal(10_000) - fill["quoteQty"] - fill["commission"]


def test_sell_limit_above_fills_at_its_price_and_a_marketable_limit_takes_now(venue):
    ex, acct, client, clock = venue
    p = last_price(ex)
    taker = client.create_order(
        SYMBOL, "limit", "sell", 0.01, float(tick_round(p * Decimal("0.99")))
    )
    assert taker["status"] == "closed" and taker["average"] == float(p)  # at the current price
    limit = tick_round(p * Decimal("1.0005"))
    maker = client.create_order(SYMBOL, "limit", "sell", 0.01, float(limit))
    assert ex.ledger.balances(acct)["BTC"] == (Decimal("0.98"), Decimal("0.01"))
    crossing = advance_until(ex, clock, lambda q: q >= limit)
    got = client.fetch_order(maker["id"], SYMBOL)
    assert got["status"] == "closed" and got["average"] == float(limit)
    assert ex.ledger.fills(acct)[-1]["time"] == crossing["timestamp"]


def test_cancel_reports_its_own_client_id_and_releases_the_lock(venue):
    ex, acct, client, _ = venue
    limit = tick_round(last_price(ex) * Decimal("0.9"))
    order = client.create_order(
        SYMBOL, "limit", "buy", 0.01, float(limit), {"clientOrderId": "mine-1"}
    )
    assert order["clientOrderId"] == "mine-1"
    canceled = client.cancel_order(order["id"], SYMBOL)
    assert canceled["status"] == "canceled"
    assert canceled["clientOrderId"] != "mine-1"  # the cancel's own id (ccxt's trap)
    assert canceled["info"]["origClientOrderId"] == "mine-1"
    assert ex.ledger.balances(acct)["USDT"] == (Decimal(10_000), 0)
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        client.cancel_order(order["id"], SYMBOL)
    with pytest.raises(ccxt.OrderNotFound, match="-2013"):
        client.fetch_order("99999", SYMBOL)
    by_client_id = client.fetch_order(None, SYMBOL, {"origClientOrderId": "mine-1"})
    assert by_client_id["id"] == order["id"] and by_client_id["status"] == "canceled"


def test_client_order_ids_unique_among_open_orders_only(venue):
    ex, acct, client, _ = venue
    p = last_price(ex)
    low = float(tick_round(p * Decimal("0.9")))
    client.create_order(SYMBOL, "limit", "buy", 0.01, low, {"clientOrderId": "dup"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        client.create_order(SYMBOL, "limit", "buy", 0.01, low, {"clientOrderId": "dup"})
    # the same id on a filled order is accepted again: resending a filled order duplicates it
    client.create_order(SYMBOL, "market", "buy", 0.01, None, {"clientOrderId": "filled-1"})
    client.create_order(SYMBOL, "market", "buy", 0.01, None, {"clientOrderId": "filled-1"})
    ids = [r["newClientOrderId"] for r in ex.ledger.create_requests(acct)]
    assert ids == ["dup", "filled-1", "filled-1"]
    with pytest.raises(ccxt.BadRequest, match="-1100"):
        client.create_order(
            SYMBOL, "market", "buy", 0.01, None, {"clientOrderId": "bt-" + "a" * 36}
        )
    assert len(ex.ledger.orders(acct)) == 3
    snap = ex.stats.snapshot()
    assert (snap["orders_accepted"], snap["orders_rejected"], snap["fills"]) == (3, 2, 2)


def test_market_order_given_a_price_is_sent_as_quote_order_qty(venue):
    ex, acct, client, _ = venue
    p = last_price(ex)
    price = float(tick_round(p * Decimal("1.1")))  # the caller's idea of the price
    client.create_order(SYMBOL, "market", "buy", 0.01, price)
    [req] = ex.ledger.create_requests(acct)
    tick = Decimal(repr(client.markets[SYMBOL]["precision"]["price"]))
    intended = (Decimal(repr(price)) * Decimal("0.01")).quantize(tick, "ROUND_DOWN")
    assert "quantity" not in req and Decimal(req["quoteOrderQty"]) == intended
    [fill] = ex.ledger.fills(acct)
    # quote / current price, down to the 1e-5 lot step: more than the 0.01 asked
    assert fill["qty"] == (Decimal(req["quoteOrderQty"]) / p).quantize(
        Decimal("1e-5"), "ROUND_DOWN"
    )
    assert fill["qty"] > Decimal("0.01")


def test_open_orders_all_orders_and_my_trades_per_symbol(venue):
    ex, acct, client, _ = venue
    low = float(tick_round(last_price(ex) * Decimal("0.9")))
    eth_low = float(tick_round(last_price(ex, "ETH/USDT") * Decimal("0.9")))
    a = client.create_order(SYMBOL, "limit", "buy", 0.01, low)
    b = client.create_order("ETH/USDT", "limit", "buy", 0.1, eth_low)
    c = client.create_order(SYMBOL, "market", "sell", 0.01)
    assert [o["id"] for o in client.fetch_open_orders(SYMBOL)] == [a["id"]]
    assert [o["id"] for o in client.fetch_open_orders("ETH/USDT")] == [b["id"]]
    assert [o["id"] for o in client.fetch_orders(SYMBOL)] == [a["id"], c["id"]]
    assert [t["order"] for t in client.fetch_my_trades(SYMBOL)] == [c["id"]]
    assert client.fetch_my_trades("ETH/USDT") == []
    with pytest.raises(ccxt.ArgumentsRequired):
        client.fetch_my_trades()
    snaps = ex.ledger.orders(acct)
    assert [(s["symbol"], s["status"]) for s in snaps] == [
        ("BTCUSDT", "NEW"),
        ("ETHUSDT", "NEW"),
        ("BTCUSDT", "FILLED"),
    ]


def test_insufficient_balance_is_binance_2010(venue):
    ex, acct, client, _ = venue
    with pytest.raises(ccxt.InsufficientFunds, match="insufficient balance"):
        client.create_order(SYMBOL, "market", "buy", 1)  # ~20,000 USDT
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order(SYMBOL, "limit", "sell", 2, float(tick_round(last_price(ex) * 2)))
    assert ex.ledger.orders(acct) == [] and ex.ledger.create_requests(acct) == []
    assert ex.ledger.balances(acct)["USDT"] == (Decimal(10_000), 0)


def test_filters_reject_what_binance_rejects(venue):
    ex, acct, client, _ = venue
    p = last_price(ex)
    with pytest.raises(ccxt.BadRequest, match="NOTIONAL"):  # -1013: ccxt's BadRequest
        client.create_order(SYMBOL, "limit", "buy", 0.0001, float(tick_round(p * Decimal("0.9"))))
    raw = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
    with pytest.raises(ccxt.InvalidOrder, match="PRICE_FILTER"):  # ccxt rounds; raw API
        client.privatePostOrder({**raw, "quantity": "0.01", "price": "1000.005"})
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        client.privatePostOrder({**raw, "quantity": "0.010001", "price": "1000.01"})
    with pytest.raises(ccxt.BadRequest, match="-1111"):
        client.privatePostOrder({**raw, "quantity": "0.000000001", "price": "1000.01"})
    with pytest.raises(ccxt.BadRequest, match="-1102.*timeInForce"):
        client.privatePostOrder({**raw, "timeInForce": "", "quantity": "0.01", "price": "1"})
    assert ex.ledger.orders(acct) == []


def test_signature_key_and_timestamp_checks():
    # the real clock: /api/v3/time and the signature check share it (a custom replay clock
    # moves /api/v3/time, never the wall clock clients sign with)
    ex = LocalExchange(symbols=(SYMBOL,), timeframes=("1s",), history=60)
    acct = ex.add_account(balances={"USDT": 10_000})
    with ex:
        check_signatures(ex, acct)


def check_signatures(ex, acct):
    config = ex.ccxt_config(account=acct)
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        ccxt.binance({**config, "secret": "0" * 64}).fetch_balance()
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        ccxt.binance({**config, "apiKey": "a" * 64}).fetch_balance()
    ex.faults.clock_skew(-3000)  # the server 3 s behind: every signed call is ahead of it
    client = ccxt.binance(config)
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        client.fetch_balance()
    # ccxt's time difference, loaded from /api/v3/time, cures it
    client.options["adjustForTimeDifference"] = True
    client.load_time_difference()
    assert client.fetch_balance()["USDT"]["free"] == 10_000
    ex.faults.clock_skew(0)
    assert ex.faults.counts["clock_skew"] == 2


def test_another_account_sees_only_its_own(venue):
    ex, acct, client, _ = venue
    other = ex.add_account(balances={"USDT": 50}, fee_rate=0)
    theirs = ccxt.binance(ex.ccxt_config(account=other))
    client.create_order(SYMBOL, "market", "buy", 0.01)
    assert theirs.fetch_balance()["USDT"]["free"] == 50
    assert theirs.fetch_orders(SYMBOL) == []
    assert ex.ledger.fills(other) == [] and len(ex.ledger.fills(acct)) == 1


def future_trades(since_ms: int, seconds: float = 7200.0) -> list[dict]:
    """The public trades after ``since_ms``, read from a twin exchange (same clock start,
    so the same replay) whose clock is moved ahead: the path the venue will follow."""
    clock = Clock()
    twin = LocalExchange(symbols=(SYMBOL, "ETH/USDT"), timeframes=("1s",), history=600, clock=clock)
    with twin:
        clock.t = since_ms / 1000 + seconds
        return twin.trades(SYMBOL, since_ms=since_ms + 1)


def test_stop_loss_triggers_on_the_first_trade_at_or_below_it(venue):
    ex, acct, client, clock = venue
    p = last_price(ex)
    stop = tick_round(p * Decimal("0.9995"))
    order = client.create_order(SYMBOL, "market", "sell", 0.01, None, {"stopPrice": float(stop)})
    assert order["status"] == "open" and order["info"]["type"] == "STOP_LOSS"
    assert ex.ledger.balances(acct)["BTC"] == (Decimal("0.99"), Decimal("0.01"))
    trigger = advance_until(ex, clock, lambda q: q <= stop)
    got = client.fetch_order(order["id"], SYMBOL)
    assert got["status"] == "closed"
    [fill] = ex.ledger.fills(acct)
    assert fill["price"] == Decimal(repr(trigger["price"])) and fill["time"] == trigger["timestamp"]
    assert not fill["isMaker"]
    assert ex.ledger.orders(acct)[0]["workingTime"] == trigger["timestamp"]


def test_stop_limit_buy_becomes_a_limit_when_triggered(venue):
    ex, acct, client, clock = venue
    p = last_price(ex)
    placed = ex.now_ms()
    stop = tick_round(p * Decimal("1.0005"))
    limit = tick_round(p * Decimal("1.001"))
    order = client.create_order(
        SYMBOL, "limit", "buy", 0.01, float(limit), {"stopPrice": float(stop)}
    )
    assert order["info"]["type"] == "STOP_LOSS_LIMIT" and order["status"] == "open"
    path = future_trades(placed)
    trig = next(t for t in path if Decimal(repr(t["price"])) >= stop)
    trig_price = Decimal(repr(trig["price"]))
    if trig_price <= limit:  # marketable at the trigger: taker at that trade's price
        expected = (trig_price, trig["timestamp"], False)
    else:  # a gap above the limit: it rests until a trade comes back to it
        back = next(
            t
            for t in path
            if t["timestamp"] > trig["timestamp"] and Decimal(repr(t["price"])) <= limit
        )
        expected = (limit, back["timestamp"], True)
    clock.t = path[-1]["timestamp"] / 1000
    [fill] = ex.ledger.fills(acct)
    assert (fill["price"], fill["time"], fill["isMaker"]) == expected
    assert ex.ledger.orders(acct)[0]["workingTime"] == trig["timestamp"]


def test_a_stop_that_would_trigger_now_is_rejected(venue):
    ex, acct, client, _ = venue
    above = float(tick_round(last_price(ex) * Decimal("1.01")))
    with pytest.raises(ccxt.OrderImmediatelyFillable, match="Stop price would trigger immediately"):
        client.create_order(SYMBOL, "market", "sell", 0.01, None, {"stopPrice": above})
    assert ex.ledger.orders(acct) == []


def test_partial_fills_one_trade_at_a_time(venue):
    ex, acct, client, clock = venue
    ex.max_fill_qty = "0.004"
    placed = ex.now_ms()
    limit = tick_round(last_price(ex) * Decimal("0.9995"))
    order = client.create_order(SYMBOL, "limit", "buy", 0.01, float(limit))
    crossing = [t for t in future_trades(placed) if Decimal(repr(t["price"])) <= limit][:3]
    assert len(crossing) == 3
    clock.t = crossing[0]["timestamp"] / 1000
    first = client.fetch_order(order["id"], SYMBOL)
    assert first["status"] == "open" and first["filled"] == 0.004
    assert first["info"]["status"] == "PARTIALLY_FILLED"
    clock.t = crossing[2]["timestamp"] / 1000
    fills = ex.ledger.fills(acct)
    assert [f["time"] for f in fills] == [t["timestamp"] for t in crossing]
    assert [f["qty"] for f in fills] == [Decimal("0.004"), Decimal("0.004"), Decimal("0.002")]
    assert client.fetch_order(order["id"], SYMBOL)["status"] == "closed"
    assert ex.ledger.balances(acct)["USDT"][1] == 0  # the lock fully released
    # an immediate fill comes as several executions at one price and instant
    market = client.create_order(SYMBOL, "market", "sell", 0.01)
    assert [f["qty"] for f in market["info"]["fills"]] == ["0.00400000", "0.00400000", "0.00200000"]
    assert len({f["price"] for f in market["info"]["fills"]}) == 1


def test_lose_order_reply_times_out_while_the_ledger_holds_the_order(venue):
    ex, acct, _, _ = venue
    impatient = ccxt.binance({**ex.ccxt_config(account=acct), "timeout": 500})
    impatient.load_markets()
    ex.faults.lose_order_reply(1)
    with pytest.raises(ccxt.RequestTimeout):
        impatient.create_order(SYMBOL, "market", "buy", 0.01, None, {"clientOrderId": "lost-1"})
    [req] = ex.ledger.create_requests(acct)
    assert req["newClientOrderId"] == "lost-1"
    [snap] = ex.ledger.orders(acct)
    assert snap["status"] == "FILLED" and snap["clientOrderId"] == "lost-1"
    # the way back: look it up by client id, never resend blindly
    found = impatient.fetch_order(None, SYMBOL, {"origClientOrderId": "lost-1"})
    assert found["id"] == str(snap["orderId"]) and found["status"] == "closed"
    assert ex.faults.counts["lost_order_reply"] == 1
    assert isinstance(ccxt.RequestTimeout("x"), ccxt.NetworkError)


def test_cancel_races_fill_the_fill_wins(venue):
    ex, acct, client, _ = venue
    limit = tick_round(last_price(ex) * Decimal("0.99"))
    order = client.create_order(SYMBOL, "limit", "buy", 0.01, float(limit))
    ex.faults.cancel_races_fill(1)
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        client.cancel_order(order["id"], SYMBOL)
    got = client.fetch_order(order["id"], SYMBOL)
    assert got["status"] == "closed" and got["average"] == float(limit)
    [fill] = ex.ledger.fills(acct)
    assert fill["price"] == limit and fill["qty"] == Decimal("0.01")
    assert ex.ledger.balances(acct)["USDT"][1] == 0
    assert ex.faults.counts["cancel_race"] == 1


def test_trading_is_binance_only_and_accounts_are_checked():
    with pytest.raises(ValueError, match="'binance' only; this exchange speaks 'okx'"):
        LocalExchange(symbols=(SYMBOL,), protocol="okx").add_account({"USDT": 1})
    ex = LocalExchange(symbols=(SYMBOL,), timeframes=("1s",), history=10)
    with pytest.raises(ValueError, match="fee_rate must be in"):
        ex.add_account(fee_rate=1.5)
    with pytest.raises(ValueError, match="asset must be an upper-case code"):
        ex.add_account({"usdt": 1})
    stranger = LocalExchange(symbols=(SYMBOL,)).add_account({"USDT": 1})
    with ex:
        with pytest.raises(ValueError, match="not an account of this exchange"):
            ex.ccxt_config(account=stranger)


def test_cancel_all_orders_of_a_symbol(venue):
    ex, acct, client, _ = venue
    low = float(tick_round(last_price(ex) * Decimal("0.9")))
    eth_low = float(tick_round(last_price(ex, "ETH/USDT") * Decimal("0.9")))
    a = client.create_order(SYMBOL, "limit", "buy", 0.01, low)
    b = client.create_order(SYMBOL, "limit", "buy", 0.02, low)
    e = client.create_order("ETH/USDT", "limit", "buy", 0.1, eth_low)
    canceled = client.cancel_all_orders(SYMBOL)
    assert sorted(o["id"] for o in canceled) == sorted([a["id"], b["id"]])
    with pytest.raises(ccxt.ExchangeError, match="without specifying a symbol"):
        client.fetch_open_orders()  # ccxt's own guard (the trap)
    client.options["fetchOpenOrders"] = {"warnWithoutSymbol": False}
    assert [o["id"] for o in client.fetch_open_orders()] == [e["id"]]  # served all the same
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        client.cancel_all_orders(SYMBOL)
    free, locked = ex.ledger.balances(acct)["USDT"]
    assert free + locked == Decimal(10_000) and locked > 0  # only the ETH order's lock


def test_recv_window_limits(venue):
    ex, acct, client, _ = venue
    with pytest.raises(ccxt.ExchangeError, match="-1131"):
        client.fetch_balance({"recvWindow": 60001})
    assert client.fetch_balance({"recvWindow": 60000})["USDT"]["free"] == 10_000
    ex.faults.clock_skew(-20_000)
    with pytest.raises(ccxt.InvalidNonce, match="ahead of the server"):
        client.fetch_balance({"recvWindow": 60000})
    ex.faults.clock_skew(20_000)
    with pytest.raises(ccxt.InvalidNonce, match="outside of the recvWindow"):
        client.fetch_balance()
    assert client.fetch_balance({"recvWindow": 30_000})["USDT"]["free"] == 10_000
    ex.faults.clock_skew(0)


def test_test_orders_and_a_429_book_nothing(venue):
    ex, acct, client, _ = venue
    assert client.create_order(SYMBOL, "market", "buy", 0.01, None, {"test": True})["id"] is None
    ex.faults.rest_errors("429", path="/api/v3/order")
    with pytest.raises(ccxt.DDoSProtection):  # a NetworkError, like a timeout
        client.create_order(SYMBOL, "market", "buy", 0.01)
    assert ex.ledger.orders(acct) == [] and ex.ledger.create_requests(acct) == []


def test_a_market_order_at_a_candles_start_fills_at_its_open(venue):
    ex, acct, client, clock = venue
    open_ms = (ex.now_ms() // 1000 + 2) * 1000
    clock.t = (open_ms + 1) / 1000  # just after the open: the candle's first trade only
    client.create_order(SYMBOL, "market", "buy", 0.01)
    clock.t += 2
    candle = ex.candle_at(SYMBOL, "1s", open_ms)
    [fill] = ex.ledger.fills(acct)
    assert fill["price"] == Decimal(repr(candle[1])) and fill["time"] == open_ms + 1


def oco_params(p: Decimal, side="SELL", qty="0.5", up="1.001", down="0.999") -> dict:
    above = {"aboveType": "LIMIT_MAKER", "abovePrice": str(tick_round(p * Decimal(up)))}
    below = {"belowType": "STOP_LOSS", "belowStopPrice": str(tick_round(p * Decimal(down)))}
    if side == "BUY":
        above = {"aboveType": "STOP_LOSS", "aboveStopPrice": str(tick_round(p * Decimal(up)))}
        below = {"belowType": "LIMIT_MAKER", "belowPrice": str(tick_round(p * Decimal(down)))}
    return {"symbol": "BTCUSDT", "side": side, "quantity": qty, **above, **below}


def test_oco_the_first_leg_to_activate_expires_the_other(venue):
    ex, acct, client, clock = venue
    placed = ex.now_ms()
    params = oco_params(last_price(ex))
    reply = client.privatePostOrderListOco(params)  # ccxt adds the list's and legs' client ids
    assert reply["contingencyType"] == "OCO" and reply["listOrderStatus"] == "EXECUTING"
    assert ex.ledger.balances(acct)["BTC"] == (Decimal("0.5"), Decimal("0.5"))  # locked once
    above, stop = Decimal(params["abovePrice"]), Decimal(params["belowStopPrice"])
    first = next(t for t in future_trades(placed) if not stop < Decimal(repr(t["price"])) < above)
    clock.t = first["timestamp"] / 1000 + 1
    snaps = ex.ledger.orders(acct)
    [fill] = ex.ledger.fills(acct)
    if Decimal(repr(first["price"])) >= above:  # the limit leg filled at its price
        assert [s["status"] for s in snaps] == ["FILLED", "EXPIRED"] and fill["price"] == above
    else:  # the stop triggered and sold at that trade's price
        assert [s["status"] for s in snaps] == ["EXPIRED", "FILLED"]
        assert fill["price"] == Decimal(repr(first["price"]))
    assert fill["time"] == first["timestamp"] and {s["orderListId"] for s in snaps} == {0}
    assert ex.ledger.balances(acct)["BTC"] == (Decimal("0.5"), 0)
    listed = client.privateGetOrderList({"orderListId": reply["orderListId"]})
    assert listed["listOrderStatus"] == "ALL_DONE" and client.privateGetOpenOrderList() == []
    [req] = ex.ledger.create_requests(acct)
    assert req["orderListId"] == reply["orderListId"] and req["aboveType"] == "LIMIT_MAKER"


def test_canceling_a_leg_cancels_the_oco_and_a_buy_locks_the_dearer_leg(venue):
    ex, acct, client, _ = venue
    p = last_price(ex)
    params = oco_params(p, side="BUY", qty="0.1", up="1.2", down="0.8")
    reply = client.privatePostOrderListOco(params)
    dearer = (Decimal(params["aboveStopPrice"]) * Decimal("0.1")).quantize(Decimal("1e-8"))
    dearer += (dearer * Decimal("0.001")).quantize(Decimal("1e-8"), "ROUND_UP")
    assert ex.ledger.balances(acct)["USDT"][1] == dearer
    leg = reply["orders"][1]["orderId"]
    canceled = client.cancel_order(str(leg), SYMBOL)
    assert canceled["status"] == "canceled"
    assert [s["status"] for s in ex.ledger.orders(acct)] == ["CANCELED", "CANCELED"]
    assert ex.ledger.balances(acct)["USDT"] == (Decimal(10_000), 0)
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        client.privateDeleteOrderList({"symbol": "BTCUSDT", "orderListId": reply["orderListId"]})
    with pytest.raises(ccxt.InvalidOrder, match="relationship of the prices"):
        client.privatePostOrderListOco(oco_params(p, up="0.99", down="0.98"))
    with pytest.raises(ccxt.ExchangeError, match="-1168"):
        client.privatePostOrderListOco(oco_params(p, side="BUY") | {"side": "SELL"})
