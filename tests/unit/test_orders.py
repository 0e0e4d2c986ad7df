"""The broker's sans-I/O rules (backtrader_ccxt/orders.py), one test per rule and per trap."""

from __future__ import annotations

from decimal import Decimal as D

import ccxt
import pytest

from backtrader_ccxt.orders import (
    CLIENT_ID_RE,
    ClientIds,
    Decision,
    Fill,
    OrderLedger,
    OrderReport,
    Rejection,
    St,
    after_create_error,
    after_lookup,
    check_order,
    client_id_of,
    fill_from_ccxt,
    order_request,
    report_from_ccxt,
    stop_triggered,
)

# -- client ids ---------------------------------------------------------------------------


def test_client_ids_match_binance_rule_and_are_unique():
    ids = ClientIds()
    made = [ids.next() for _ in range(2000)]
    assert len(set(made)) == 2000
    assert all(CLIENT_ID_RE.match(c) for c in made)
    assert all(len(c) <= 36 for c in made)
    assert ids.ours(made[0]) and ids.this_run(made[-1])


def test_uuid4_ids_would_be_too_long():
    # the trap: 'bt-' + uuid4 is 39 characters
    import uuid

    assert not CLIENT_ID_RE.match("bt-" + str(uuid.uuid4()))


def test_a_restart_makes_new_ids():
    first, second = ClientIds(), ClientIds()
    assert first.run != second.run
    a = {first.next() for _ in range(50)}
    b = {second.next() for _ in range(50)}
    assert not a & b
    assert first.ours(b.pop()) and not first.this_run(second.next())


@pytest.mark.parametrize("prefix", ["", "a b", "x" * 13, "é", None])
def test_bad_prefix_is_refused_with_the_rule(prefix):
    with pytest.raises(ValueError, match="prefix"):
        ClientIds(prefix)


# -- reports and fills from ccxt -----------------------------------------------------------


def test_cancel_reply_is_matched_by_the_original_client_id():
    # the trap: a REST cancel's clientOrderId is the cancel's own id
    reply = {
        "id": "7",
        "clientOrderId": "cancel-own-id",
        "status": "canceled",
        "filled": 0.0,
        "info": {"origClientOrderId": "bt-run-1", "clientOrderId": "cancel-own-id"},
    }
    assert client_id_of(reply) == "bt-run-1"
    assert report_from_ccxt(reply).client_id == "bt-run-1"


def test_fill_from_ccxt_reads_trade_id_client_id_and_fee():
    f = fill_from_ccxt(
        {
            "id": 55,
            "order": 7,
            "symbol": "BTC/USDT",
            "side": "buy",
            "price": 100.1,
            "amount": 0.3,
            "timestamp": 1000,
            "fee": {"cost": 0.03003, "currency": "USDT"},
            "info": {"c": "bt-x-1", "l": "0.3"},
        }
    )
    assert f == Fill("55", "7", "bt-x-1", "BTC/USDT", "buy", D("100.1"), D("0.3"), D("0.03003"),
                     "USDT", 1000)  # fmt: skip
    assert fill_from_ccxt({"id": None, "amount": 1}) is None


# -- the ledger ---------------------------------------------------------------------------


def _ledger(amount="1"):
    led = OrderLedger()
    led.track(1, "bt-r-1", "BTC/USDT", "buy", D(amount))
    return led


def _rep(status="open", filled="0", ts=1, cid="bt-r-1", oid="7"):
    return OrderReport(cid, oid, status, D(filled), D("1"), "BTC/USDT", "buy", ts)


def _fill(tid, amount, cid="bt-r-1", oid="7", price="100"):
    return Fill(tid, oid, cid, "BTC/USDT", "buy", D(price), D(amount), D("0.1"), "USDT", 1)


def _statuses(events):
    return [e.status for e in events if e.kind == "status"]


def test_status_path_accepted_partial_completed():
    led = _ledger()
    assert _statuses(led.on_report(_rep())) == [St.ACCEPTED]
    ev = led.on_fill(_fill("a", "0.4"))
    assert [e.kind for e in ev] == ["fill"]
    assert led.by_ref[1].status is St.PARTIAL
    ev = led.on_fill(_fill("b", "0.6"))
    assert [e.kind for e in ev] == ["fill", "status"] and _statuses(ev) == [St.COMPLETED]
    assert led.on_report(_rep("closed", "1", 3)) == []  # after final: nothing


def test_duplicate_fills_counted_once():
    led = _ledger()
    led.on_report(_rep())
    assert len(led.on_fill(_fill("a", "0.5"))) == 1
    assert led.on_fill(_fill("a", "0.5")) == []
    assert led.by_ref[1].filled == D("0.5")
    assert led.stats["fill_duplicate"] == 1


def test_fills_never_come_from_cumulative_fields():
    # a report saying 0.5 filled executes nothing; only the trade does
    led = _ledger()
    ev = led.on_report(_rep("open", "0.5", 2))
    assert [e.kind for e in ev] == ["status"]
    assert led.by_ref[1].filled == 0


def test_stale_report_after_newer_is_ignored():
    led = _ledger()
    led.on_report(_rep("open", "0.5", 5))
    assert led.on_report(_rep("open", "0.2", 4)) == []
    assert led.stats["report_stale"] == 1
    led.on_fill(_fill("a", "0.5"))
    led.on_report(_rep("canceled", "0.5", 6))
    assert led.by_ref[1].status is St.CANCELED
    assert led.on_report(_rep("open", "0.5", 5)) == []  # an open after the final


def test_open_after_reported_final_is_stale_even_before_settling():
    led = _ledger()
    ev = led.on_report(_rep("closed", "1", 5))
    assert [e.kind for e in ev] == ["status", "need_fills"]  # final waits for the trades
    assert led.on_report(_rep("open", "0.5", 4)) == []
    ev = led.on_fill(_fill("a", "1"))
    assert _statuses(ev) == [St.COMPLETED]


def test_canceled_waits_for_the_partial_fill_it_implies():
    led = _ledger()
    led.on_report(_rep())
    ev = led.on_report(_rep("canceled", "0.3", 3))
    assert [e.kind for e in ev] == ["need_fills"]
    assert led.by_ref[1].alive
    ev = led.on_fill(_fill("a", "0.3"))
    assert [e.kind for e in ev] == ["fill", "status"] and _statuses(ev) == [St.CANCELED]


def test_cancel_racing_a_fill_ends_completed():
    led = _ledger()
    led.on_report(_rep())
    ev = led.on_fill(_fill("a", "1"))
    assert _statuses(ev) == [St.COMPLETED]
    assert led.on_report(_rep("canceled", "1", 9)) == []


def test_fill_before_the_create_reply_is_held_until_the_order_id_is_known():
    led = _ledger()
    # a stream trade without the client id, ahead of the create reply
    assert led.on_fill(_fill("a", "1", cid=None, oid="7")) == []
    ev = led.on_report(_rep("closed", "1", 2))
    assert [(e.kind, e.status) for e in ev] == [
        ("status", St.ACCEPTED),
        ("fill", None),
        ("status", St.COMPLETED),
    ]
    assert led.by_ref[1].status is St.COMPLETED and led.by_ref[1].filled == 1
    assert led.on_fill(_fill("a", "1")) == []  # and once


def test_expiry_cancel_maps_to_expired():
    led = _ledger()
    led.on_report(_rep())
    led.mark_expiring(1)
    assert _statuses(led.on_report(_rep("canceled", "0", 3))) == [St.EXPIRED]


def test_foreign_reports_and_fills_are_ignored():
    led = _ledger()
    assert led.on_report(_rep(cid="someone-else", oid="99")) == []
    assert led.on_fill(_fill("z", "1", cid="someone-else", oid="99")) == []
    assert led.by_ref[1].filled == 0


# -- after a failed create ----------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        ccxt.RequestTimeout("timeout"),
        ccxt.RateLimitExceeded("429"),  # the trap: a 429 is a NetworkError too
        ccxt.DDoSProtection("418"),
        ccxt.ExchangeNotAvailable("503"),
        ConnectionResetError("reset"),
    ],
)
def test_unknown_outcome_is_looked_up_never_resent(exc):
    assert after_create_error(exc) == (Decision.LOOKUP, None)


def test_definite_answers_are_final():
    assert after_create_error(ccxt.InsufficientFunds("-2010")) == (Decision.FINAL, St.MARGIN)
    assert after_create_error(ccxt.InvalidOrder("-1013")) == (Decision.FINAL, St.REJECTED)
    assert after_create_error(ccxt.AuthenticationError("-2015")) == (Decision.FINAL, St.REJECTED)
    # -1021 is a NetworkError in ccxt, yet the order was certainly refused
    assert isinstance(ccxt.InvalidNonce("-1021"), ccxt.NetworkError)
    assert after_create_error(ccxt.InvalidNonce("-1021")) == (Decision.FINAL, St.REJECTED)


def test_not_found_means_gone_only_after_recv_window():
    assert after_lookup(True, 1000, 1001, 5000) == "adopt"
    assert after_lookup(False, 1000, 5999, 5000) == "wait"
    assert after_lookup(False, 1000, 6001, 5000) == "gone"


# -- checks before sending ----------------------------------------------------------------

MARKET = {
    "symbol": "BTC/USDT",
    "precision": {"amount": 0.0001, "price": 0.01},
    "limits": {
        "amount": {"min": 0.0001, "max": 1000},
        "price": {"min": 0.01, "max": 1000000},
        "cost": {"min": 5},
    },
    "info": {"orderTypes": ["LIMIT", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "LIMIT_MAKER"]},
}


def test_checks_pass_a_good_order():
    assert check_order(MARKET, 0.01, price=1000.01) is None
    assert check_order(MARKET, 0.01, reference_price=1000) is None


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"amount": 0.00015, "price": 100000}, "amount_step"),
        ({"amount": 0.01, "price": 1000.005}, "price_tick"),
        ({"amount": 0.01, "price": 100, "stop": 100.001}, "price_tick"),
        ({"amount": 0.001, "price": 1000}, "min_notional"),
        ({"amount": 0.001, "reference_price": 1000}, "min_notional"),
        ({"amount": 2000, "price": 1}, "max_amount"),
        ({"amount": 0, "price": 1}, "bad_size"),
        ({"amount": float("nan"), "price": 1}, "bad_size"),
        ({"amount": 1, "price": -1}, "bad_price"),
    ],
)
def test_checks_reject_with_a_typed_reason(kwargs, code):
    r = check_order(MARKET, **kwargs)
    assert isinstance(r, Rejection) and r.code == code


def test_step_rejection_names_the_nearby_valid_sizes():
    r = check_order(MARKET, 0.00015, price=100000)
    assert "0.0001 or 0.0002" in r.message


def test_decimal_places_precision_mode():
    m = dict(MARKET, precision={"amount": 3, "price": 2})
    assert check_order(m, 0.001, price=10000.25, precision_mode=ccxt.DECIMAL_PLACES) is None
    r = check_order(m, 0.0015, price=10000, precision_mode=ccxt.DECIMAL_PLACES)
    assert r.code == "amount_step"


def test_market_order_is_sent_without_a_price():
    # the trap: ccxt's Binance turns a market order's price into quoteOrderQty
    req = order_request("BTC/USDT", "Market", "buy", 0.5, "bt-r-1", price=123.0, market=MARKET)
    assert req.price is None and req.type == "market"
    assert req.params == {"clientOrderId": "bt-r-1"}


def test_stop_and_stop_limit_are_native_binance_types():
    stop = order_request("BTC/USDT", "Stop", "sell", 1, "c1", price=90.0, market=MARKET)
    assert (stop.type, stop.price, stop.params["triggerPrice"]) == ("market", None, 90.0)
    sl = order_request("BTC/USDT", "StopLimit", "buy", 1, "c2", 110.0, 111.0, market=MARKET)
    assert (sl.type, sl.price, sl.params["triggerPrice"]) == ("limit", 111.0, 110.0)


def test_unsupported_types_are_rejected_with_a_reason():
    r = order_request("BTC/USDT", "StopTrail", "buy", 1, "c", market=MARKET)
    assert r.code == "unsupported" and "valid choices" in r.message
    no_stops = dict(MARKET, info={"orderTypes": ["LIMIT", "MARKET"]})
    r = order_request("BTC/USDT", "Stop", "buy", 1, "c", price=1.0, market=no_stops)
    assert r.code == "unsupported" and "STOP_LOSS" in r.message


def test_stop_rule():
    assert stop_triggered("buy", 100, 100) and not stop_triggered("buy", 100, 99.9)
    assert stop_triggered("sell", 100, 99) and not stop_triggered("sell", 100, 100.1)


def test_native_oco_legs_of_a_sell_and_a_buy():
    from backtrader_ccxt.orders import oco_request

    types = dict(MARKET, info={"orderTypes": ["LIMIT", "MARKET", "STOP_LOSS", "LIMIT_MAKER"]})
    sell = oco_request("BTC/USDT", "sell", 0.1, 105.5, 99.25, None, "l", "a", "b", types)
    p = sell.params
    assert (p["side"], p["quantity"]) == ("SELL", "0.1")
    assert (p["aboveType"], p["abovePrice"], p["aboveClientOrderId"]) == (
        "LIMIT_MAKER",
        "105.5",
        "a",
    )
    assert (p["belowType"], p["belowStopPrice"], p["belowClientOrderId"]) == (
        "STOP_LOSS",
        "99.25",
        "b",
    )
    buy = oco_request("BTC/USDT", "buy", 0.1, 95, 101, None, "l", "a", "b", types)
    assert buy.params["aboveType"] == "STOP_LOSS" and buy.params["belowType"] == "LIMIT_MAKER"
    r = oco_request("BTC/USDT", "sell", 0.1, 105, 99, 98.5, "l", "a", "b", types)
    assert isinstance(r, Rejection) and "STOP_LOSS_LIMIT" in r.message


def test_the_losing_oco_leg_expires_and_is_notified_canceled():
    led = _ledger()
    led.by_ref[1].list_leg = True
    led.on_report(_rep())
    assert _statuses(led.on_report(_rep("expired", "0", 3))) == [St.CANCELED]


def test_forget_only_what_never_reached_the_book():
    led = _ledger()
    assert led.forget(1) and led.find("bt-r-1") is None
    led = _ledger()
    led.on_report(_rep())  # booked: it has an order id
    assert not led.forget(1)
