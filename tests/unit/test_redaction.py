"""What the credential filter masks in ccxt's request log lines (pure)."""

from __future__ import annotations

import logging

from backtrader_ccxt.redaction import CredentialFilter, scrub

LINE = (
    "GET http://h/api/v3/account?timestamp=1&recvWindow=10000&signature=9f86d08, Request: "
    "{'X-MBX-APIKEY': 'k3y-value', 'User-Agent': 'python-requests'} None"
)


def test_signatures_and_key_headers_are_masked_and_the_rest_kept():
    out = scrub(LINE, [])
    assert "9f86d08" not in out and "k3y-value" not in out
    assert "signature=***" in out and "'X-MBX-APIKEY': '***'" in out
    assert "timestamp=1&recvWindow=10000" in out and "'User-Agent': 'python-requests'" in out


def test_other_venues_headers_and_json_fields():
    okx = "{'OK-ACCESS-KEY': 'a1', 'OK-ACCESS-SIGN': 'b2', 'OK-ACCESS-PASSPHRASE': 'c3'}"
    bybit = '{"X-BAPI-API-KEY": "d4", "X-BAPI-SIGN": "e5", "X-BAPI-TIMESTAMP": "6"}'
    out = scrub(okx + bybit, [])
    for value in ("a1", "b2", "c3", "d4", "e5"):
        assert f"'{value}'" not in out and f'"{value}"' not in out
    assert '"X-BAPI-TIMESTAMP": "6"' in out


def test_known_secrets_are_masked_anywhere():
    assert (
        scrub("body mentions s3cr3t-value inline", ["s3cr3t-value"]) == "body mentions *** inline"
    )


def test_candle_bodies_pass_unchanged():
    body = '[[1700000000000,"42000.1","42001.0","41999.0","42000.5","1.2",1700000059999]]'
    assert scrub(body, []) == body


def test_the_filter_rewrites_the_record_and_never_drops_it():
    record = logging.LogRecord(
        "ccxt.base.exchange",
        logging.DEBUG,
        __file__,
        1,
        "%s %s, Request: %s %s",
        ("GET", "http://h/x?signature=abc", {"X-MBX-APIKEY": "kk"}, None),
        None,
    )
    assert CredentialFilter().filter(record) is True
    assert (
        record.getMessage() == "GET http://h/x?signature=***, Request: {'X-MBX-APIKEY': '***'} None"
    )
