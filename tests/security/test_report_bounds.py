"""
What requests may store (issue 18 item 2): no row without a valid JWS, and
bounded rows with one.

50,000 ``HEAD /directory`` with distinct User-Agents once made 50,003
report rows, a 38 MB state file and a 37 MB ``/status`` page, and five
requests from a key not in the store put 225 KB into one row.  Now an
unsigned request only counts toward a client already recorded (and is
dropped in memory when there is none), requested names are cut at 255
characters, and signed requests by ever new keys and User-Agents fill at
most `MAX_CLIENTS` rows, then one overflow row.

The soak test of a real gateway process (10,000 such requests) is in
``tests/e2e/test_soak.py``.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor

from gateway.store import ClientVisit
from gateway.store.records import format_timestamp
from gateway.store.sqlite import SQLiteStore
from tests.security.harness import KEY, STRANGER, Harness, fired
from tests.support.v1_signing import sign_v1

UA = "CertbotACMEClient/1.32.0 (certbot; bounds-test)"


def flush(harness: Harness) -> None:
    fired(harness.gateway.gateway.recorder.flush())


def clients(harness: Harness) -> list:
    return harness.snapshot()["store"]["clients"]


def test_unsigned_requests_write_no_row():
    """
    Unsigned requests of every kind — directory reads, nonce fetches, 404s,
    unknown authorizations, a POST without a JWS — with a fresh User-Agent
    each leave every table as it was (the directory read asks the CA for
    its directory once: the terms URL).
    """
    harness = Harness.fresh()
    before = harness.snapshot()
    for i in range(300):
        agent = {"User-Agent": [f"flood/{i} (distinct {i})"]}
        harness.request("HEAD", "/directory", headers=agent)
        harness.request("GET", "/directory", headers=agent)
        harness.request("GET", f"/acme/authz/{i:032x}", headers=agent)
        harness.request("GET", f"/no/such/path/{i}", headers=agent)
        harness.request("POST", "/acme/new-reg", b"not a jws", headers=agent)
    flush(harness)
    assert harness.snapshot()["store"] == before["store"]


def test_unsigned_requests_count_toward_a_client_that_signed():
    """
    The client that signed is counted for its unsigned polls too, and
    nobody else's unsigned requests make a row.
    """
    harness = Harness.fresh()
    agent = {"User-Agent": [UA]}
    harness.request("GET", "/directory", headers=agent)
    reply = harness.request("POST", "/acme/new-reg", sign_v1(
        KEY, {"resource": "new-reg", "contact": ["mailto:a@example.test"]}, harness.nonce()),
        headers=agent)
    assert reply.status == 201, reply.body
    for _ in range(3):
        harness.request("GET", "/directory", headers=agent)
    harness.request("GET", "/directory", headers={"User-Agent": ["somebody/1.0"]})
    flush(harness)
    rows = fired(harness.gateway.store.list_clients())
    assert [row.user_agent for row in rows] == [UA]
    assert rows[0].successes == 4  # new-reg and the three reads after it


def test_requested_names_are_clipped():
    """
    Five requests from a key the gateway does not hold, each naming a
    45,000-character identifier, keep the row small (it held 225 KB).
    """
    harness = Harness.fresh()
    for i in range(5):
        name = f"{i}" + "a" * 45_000 + ".example.test"
        body = sign_v1(STRANGER, {"resource": "new-authz",
                                  "identifier": {"type": "dns", "value": name}}, harness.nonce())
        reply = harness.request("POST", "/acme/new-authz", body, headers={"User-Agent": [UA]})
        assert reply.status in (400, 403), reply.body
    flush(harness)
    (row,) = clients(harness)
    assert len(json.dumps(row)) < 5_000, len(json.dumps(row))


@pytest_twisted.ensureDeferred
async def test_signed_rows_are_bounded(monkeypatch):
    """
    Signed visits by ever new keys and User-Agents make at most
    `MAX_CLIENTS` rows; the rest count in one overflow row, and a client
    already recorded keeps its own.
    """
    from gateway.store.records import OVERFLOW_USER_AGENT

    monkeypatch.setattr("gateway.store.sql.MAX_CLIENTS", 5)
    store = SQLiteStore.inline(clock=reactor)
    at = format_timestamp(reactor.seconds())
    for i in range(12):
        await store.record_client(ClientVisit(f"agent/{i}", "192.0.2.1", at, f"tp-{i}"))
    await store.record_client(ClientVisit("agent/0", "192.0.2.1", at, "tp-0"))
    rows = {row.user_agent: row for row in await store.list_clients()}
    assert len(rows) == 6
    assert rows[OVERFLOW_USER_AGENT].successes == 7
    assert rows["agent/0"].successes == 2
    await store.close()


@pytest.mark.parametrize("signed", [False, True])
def test_store_makes_no_row_for_an_unsigned_visit(signed):
    """
    The store's own rule, whatever calls it: an unsigned visit of a client
    never seen makes no row.
    """
    store = SQLiteStore.inline()
    visit = ClientVisit(UA, "192.0.2.7", "2026-11-28T17:00:00Z",
                        thumbprint="tp-1" if signed else None)
    recorded = fired(store.record_client(visit))
    assert (recorded is not None) == signed
    assert len(fired(store.list_clients())) == (1 if signed else 0)
