"""
Retries, crashes and lost answers never hand a client a certificate for a
key it did not send, and never strand it: the gateway as a process, in
front of a real Pebble, behind a TLS pass-through (`UpstreamProxy`) that
loses chosen answers, with the gateway ended abruptly at named crash points
(``ACME_GATEWAY_CRASH_AT``) or by ``kill -9`` at random moments.

After each run the state file passes ``PRAGMA integrity_check`` and
``acme-gateway check``, and the gateway knows every order and
authorization it made at the CA (so the abandoned-authorization sweep and
the rate-limit budget see them).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet import defer

from gateway.crashpoints import CRASH_AT_VARIABLE, CRASH_STATUS
from gateway.upstream.client import UpstreamClient
from tests.e2e.test_legacy_clients import assert_issued, write_pem
from tests.e2e.test_resilience import proxied
from tests.e2e.test_revalidation import http01_flag
from tests.support.gateway_process import _child_env, gateway_command
from tests.support.legacy import off_reactor
from tests.support.stack import free_port
from tests.support.v1_client import V1TestClient
from tests.support.v1_flows import new_account_key, new_authz, new_cert, obtain, pause

pytestmark = pytest.mark.e2e


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def run_check(state: str) -> subprocess.CompletedProcess:
    """``acme-gateway check --state STATE``."""
    return subprocess.run([*gateway_command(), "check", "--state", state], env=_child_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def assert_state_sound(state: str) -> None:
    """
    SQLite finds the file intact, and the gateway's own consistency check
    finds nothing (no partial or orphaned rows).
    """
    connection = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        connection.close()
    checked = run_check(state)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def stored_upstream_urls(state: str) -> tuple:
    """``(order URLs, authorization URLs)`` the gateway's state holds."""
    connection = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        orders = {row[0] for row in connection.execute("SELECT upstream_url FROM orders")}
        authorizations = {row[0] for row in connection.execute(
            "SELECT upstream_url FROM authorizations")}
        return orders, authorizations
    finally:
        connection.close()


async def orders_at_ca(pebble, key, proxy_port: int) -> dict:
    """
    Every order Pebble holds for the account of ``key`` (from the account's
    ``orders`` list), as order URL -> its authorization URLs, spelled as the
    gateway sees them (through the proxy).
    """
    from twisted.internet import reactor

    client = UpstreamClient.create(reactor, pebble.directory_url, ca_bundle=pebble.ca_bundle)
    account = await client.find_account(key)
    assert account is not None and "orders" in account.body, account
    # Pebble spells the URLs it made for the gateway with the proxy's port.
    direct = lambda url: url.replace(f"localhost:{proxy_port}/", f"localhost:{pebble.port}/")
    listing = (await client.post_as_get(account, direct(account.body["orders"]))).json()
    found = {}
    for url in listing.get("orders") or []:
        order = (await client.post_as_get(account, direct(url))).json()
        found[_through_proxy(url, pebble, proxy_port)] = {
            _through_proxy(a, pebble, proxy_port) for a in order["authorizations"]}
    return found


def _through_proxy(url: str, pebble, proxy_port: int) -> str:
    return url.replace(f"localhost:{pebble.port}/", f"localhost:{proxy_port}/")


async def assert_gateway_knows_every_order(gateway, pebble, key, proxy_port: int) -> None:
    """
    Every order the CA holds for the account, and each of its
    authorizations, is in the gateway's state: nothing it created upstream
    is invisible to the sweep or the budget.
    """
    at_ca = await orders_at_ca(pebble, key, proxy_port)
    orders, authorizations = stored_upstream_urls(gateway.state)
    assert set(at_ca) <= orders, f"orders the gateway lost: {set(at_ca) - orders}"
    missing = set().union(*at_ca.values()) - authorizations if at_ca else set()
    assert not missing, f"authorizations the gateway lost: {missing}"


def assert_own_key(issued, pebble, names) -> None:
    assert issued.ok, issued.reply.body
    assert issued.leaf_key() == issued.csr_key, "a certificate for a key the client did not send"
    chain = []
    assert_issued(issued.reply.body, chain + [_intermediate(pebble)], pebble, names)


def _intermediate(pebble) -> bytes:
    from tests.e2e.test_legacy_clients import pebble_intermediate

    return pebble_intermediate(pebble)


def report_json(gateway) -> dict:
    result = subprocess.run([*gateway_command(), "report", "--json", "--state", gateway.state],
                            env=_child_env(), stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=60, check=True)
    return json.loads(result.stdout)


def serial_of(der: bytes) -> str:
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


# --------------------------------------------------------------------------
# Lost answers: finalize, then the certificate download
# --------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_lost_finalize_then_lost_downloads_retry_with_new_key_gets_its_own(
        tmp_path, pebble_factory, gateways):
    """
    The CA issues, but finalize's answer is lost once, then the certificate
    download three times (its first try and both retries).  The client's
    third new-cert, with a new CSR key as certbot makes on every run, gets a
    certificate for that key — not the one the CA issued for the first key,
    which is kept as an orphan, listed in the migration report, and never
    handed out.
    """
    pebble = pebble_factory(http_port=free_port())
    proxy, listening, upstream = await proxied(pebble)
    try:
        key = new_account_key()
        keys_dir = str(tmp_path / "keys")
        write_pem(os.path.join(keys_dir, "account.pem"), key.private_key)
        gateway = await off_reactor(gateways, upstream, keys_dir, extra_args=http01_flag(pebble))
        names = ["lost-answers.example.test"]
        client = V1TestClient(gateway.url, key)
        directory = await client.directory()
        authorized = await new_authz(client, directory, names[0])
        assert authorized.json()["status"] == "valid", authorized.body

        proxy.lose_answers("/finalize-order/", 1)
        first = await new_cert(client, directory, names)
        assert first.reply.status >= 500, first.reply.body
        proxy.lose_answers("/certZ/", 3)
        second = await new_cert(client, directory, names)
        assert second.reply.status >= 500, second.reply.body
        assert proxy.lost == {"finalize-order": 1, "certZ": 3}

        third = await new_cert(client, directory, names)
        assert_own_key(third, pebble, names)

        orphans = report_json(gateway)["orphaned_certificates"]
        assert len(orphans) == 1, orphans
        (orphan,) = orphans
        assert orphan["names"] == names and orphan["serial"] != serial_of(third.reply.body)
        assert orphan["thumbprint"] == key.thumbprint
        fetched = await client.get(third.reply.header("location"))
        assert fetched.status == 200 and fetched.body == third.reply.body
        gateway.stop()
        assert_state_sound(gateway.state)
    finally:
        await listening.stopListening()


# --------------------------------------------------------------------------
# Crash points
# --------------------------------------------------------------------------

#: (crash point, the request it happens in).
CRASH_POINTS = [
    ("after-new-order", "new-authz"),
    ("order-row", "new-authz"),
    ("authorization-row", "new-authz"),
    ("after-finalize", "new-cert"),
    ("issuer-row", "new-cert"),
]


@pytest.mark.parametrize("point,during", CRASH_POINTS, ids=[p for p, _ in CRASH_POINTS])
@pytest_twisted.ensureDeferred
async def test_crash_point_then_restart_and_retry_completes(
        point, during, tmp_path, pebble_factory, gateways):
    """
    The gateway ends abruptly at ``point`` in the middle of a client's flow.
    After a restart on the same state, the client's retry (the whole flow
    again, with a new CSR key) completes with a certificate for its own key;
    the state is sound, and every order and authorization the gateway made
    at the CA is in it.
    """
    pebble = pebble_factory(http_port=free_port())
    proxy, listening, upstream = await proxied(pebble)
    try:
        key = new_account_key()
        keys_dir = str(tmp_path / "keys")
        write_pem(os.path.join(keys_dir, "account.pem"), key.private_key)
        gateway = await off_reactor(gateways, upstream, keys_dir, start=False,
                                    extra_args=http01_flag(pebble))
        names = [f"crash-{point}.example.test"]
        if during == "new-cert":
            await off_reactor(gateway.start)
            client = V1TestClient(gateway.url, key)
            directory = await client.directory()
            authorized = await new_authz(client, directory, names[0])
            assert authorized.json()["status"] == "valid", authorized.body
            await off_reactor(gateway.stop)
        gateway.env[CRASH_AT_VARIABLE] = point
        await off_reactor(gateway.start)
        with pytest.raises(Exception):
            await obtain(gateway.url, key, names, authorize=during == "new-authz")
        assert await off_reactor(gateway.wait_for_exit) == CRASH_STATUS
        assert f"crash point {point}" in gateway.log()

        del gateway.env[CRASH_AT_VARIABLE]
        await off_reactor(gateway.start)
        retried = await obtain(gateway.url, key, names)
        assert_own_key(retried, pebble, names)
        await assert_gateway_knows_every_order(gateway, pebble, key, listening.getHost().port)
        await off_reactor(gateway.stop)
        assert_state_sound(gateway.state)
    finally:
        await listening.stopListening()


def key_change_payload(new, registration_url: str) -> dict:
    from gateway.keys.jose import sign_flattened

    inner = sign_flattened(new, {"account": registration_url, "newKey": new.public_jwk_json},
                           {"jwk": new.public_jwk_json})
    return dict(inner, resource="key-change")


@pytest_twisted.ensureDeferred
async def test_crash_in_key_change_then_retry_completes(tmp_path, pebble_factory, gateways):
    """
    The gateway ends between rolling the account over at the CA and
    recording it (the new key on the registration, the old key retired).
    The client's retried key-change completes: the gateway sees at the CA
    that the rollover is done and records it; the new key then works, the
    old one is refused.
    """
    pebble = pebble_factory(http_port=free_port())
    old, new = new_account_key(), new_account_key()
    keys_dir = str(tmp_path / "keys")
    write_pem(os.path.join(keys_dir, "old.pem"), old.private_key)
    write_pem(os.path.join(keys_dir, "new.pem"), new.private_key)
    gateway = await off_reactor(gateways, pebble, keys_dir, start=False,
                                env={CRASH_AT_VARIABLE: "account-row"})
    await off_reactor(gateway.start)
    client = V1TestClient(gateway.url, old)
    directory = await client.directory()
    registered = await client.post(directory["new-reg"], {"resource": "new-reg"})
    assert registered.status == 201, registered.body
    registration_url = registered.header("location")
    with pytest.raises(Exception):
        await client.post(directory["key-change"], key_change_payload(new, registration_url))
    assert await off_reactor(gateway.wait_for_exit) == CRASH_STATUS

    del gateway.env[CRASH_AT_VARIABLE]
    await off_reactor(gateway.start)
    client = V1TestClient(gateway.url, old)
    reply = await client.post(directory["key-change"], key_change_payload(new, registration_url))
    assert reply.status == 200, reply.body
    assert reply.json()["key"] == new.public_jwk_json
    refused = await client.post(directory["new-authz"], {
        "resource": "new-authz", "identifier": {"type": "dns", "value": "kc.example.test"}})
    assert refused.status == 403, refused.body
    works = await V1TestClient(gateway.url, new).post(directory["new-authz"], {
        "resource": "new-authz", "identifier": {"type": "dns", "value": "kc.example.test"}})
    assert works.status == 201, works.body
    await off_reactor(gateway.stop)
    assert_state_sound(gateway.state)


# --------------------------------------------------------------------------
# kill -9 chaos
# --------------------------------------------------------------------------

#: Where the chaos run kills the gateway: right after the CA answered one of
#: these requests (before the gateway can store the answer), or after a
#: random delay.
KILL_MOMENTS = ("finalize-order", "finalize-order", "order-plz", "authZ", "certZ", "chalZ", "timer")


@pytest_twisted.ensureDeferred
async def test_kill9_chaos_with_concurrent_clients(tmp_path, pebble_factory, gateways):
    """
    Four v1 clients get certificates concurrently (two validate through
    new-authz, two rely on the gateway's revalidation) while the gateway is
    killed with SIGKILL six times — right after the CA answered a finalize,
    newOrder, authorization read, challenge or download, or at a random
    moment — and restarted.  No client ever receives a certificate for a key
    it did not send, every client gets its certificates, and the state file
    is sound afterwards.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    seed = random.randrange(1 << 30)
    print(f"chaos seed {seed}")
    chance = random.Random(seed)
    pebble = pebble_factory(http_port=free_port())
    proxy, listening, upstream = await proxied(pebble)
    keys_dir = str(tmp_path / "keys")
    clients = [new_account_key() for _ in range(4)]
    for index, key in enumerate(clients):
        write_pem(os.path.join(keys_dir, f"client-{index}.pem"), key.private_key)
    gateway = await off_reactor(gateways, upstream, keys_dir, extra_args=http01_flag(pebble))
    wrong_keys, issued, attempts = [], [], []
    rounds, kills = 2, 6
    restarting, killer_done = [], []

    async def client_run(index: int, key) -> None:
        round_ = 0
        # At least `rounds` certificates each, and more while kills go on.
        while round_ < rounds or (not killer_done and round_ < 30):
            names = [f"chaos{index}-{round_}.example.test"]
            if index % 2:
                names.append(f"chaos{index}-{round_}-b.example.test")
            for attempt in range(40):
                attempts.append(index)
                try:
                    outcome = await obtain(gateway.url, key, names, authorize=index % 2 == 0)
                except Exception:
                    outcome = None
                if outcome is not None and outcome.ok:
                    if outcome.leaf_key() != outcome.csr_key:
                        wrong_keys.append((index, round_, serial_of(outcome.reply.body)))
                    issued.append((index, round_))
                    break
                await pause(0.2 + chance.random() * 0.3)
            else:
                raise AssertionError(f"client {index} stranded on round {round_}")
            round_ += 1

    def kill_now():
        if gateway.running and not restarting:
            restarting.append(True)
            gateway.kill()

    async def killer() -> None:
        for _ in range(kills):
            moment = chance.choice(KILL_MOMENTS)
            if moment == "timer":
                await pause(0.3 + chance.random())
                kill_now()
            else:
                armed = defer.Deferred()

                def answered(method, path, status, moment=moment, armed=armed):
                    if not armed.called and path.strip("/").split("/")[0] == moment:
                        kill_now()
                        armed.callback(None)

                proxy.answered_hook = answered
                timeout = deferLater(reactor, 4.0, kill_now)
                await defer.DeferredList([armed, timeout], fireOnOneCallback=True,
                                         consumeErrors=True)
                if timeout.called is False:
                    timeout.cancel()
                proxy.answered_hook = None
            if restarting:
                await pause(0.2)
                await off_reactor(gateway.start)
                restarting.clear()
            await pause(0.5 + chance.random())

    try:
        work = [defer.ensureDeferred(client_run(i, key)) for i, key in enumerate(clients)]
        await defer.ensureDeferred(killer())
        killer_done.append(True)
        results = await defer.DeferredList(work, consumeErrors=True)
        failures = [r for ok, r in results if not ok]
        print(f"chaos: {len(issued)} certificates, {len(attempts)} attempts, "
              f"{len(wrong_keys)} for a key the client did not send, {len(failures)} stranded")
        assert wrong_keys == [], f"certificates for another key: {wrong_keys}"
        assert not failures, failures[0]
        assert len(issued) >= len(clients) * rounds
        await off_reactor(gateway.stop)
        assert_state_sound(gateway.state)
    finally:
        proxy.answered_hook = None
        await listening.stopListening()


# --------------------------------------------------------------------------
# Names compared as the CA compares them
# --------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_csr_name_with_a_trailing_dot_is_refused_before_any_order(
        tmp_path, pebble_factory, gateways):
    """
    A CSR naming ``name.`` (a trailing dot) can never be finalized: the CA
    compares the CSR's names with the order's as they are, and no CA takes
    an order identifier ending in a dot.  The gateway cannot rewrite the
    client's signed CSR, so it refuses it with a v1 ``malformed`` naming the
    name — before any order or finalize is spent.
    """
    pebble = pebble_factory(http_port=free_port())
    proxy, listening, upstream = await proxied(pebble)
    try:
        key = new_account_key()
        keys_dir = str(tmp_path / "keys")
        write_pem(os.path.join(keys_dir, "account.pem"), key.private_key)
        gateway = await off_reactor(gateways, upstream, keys_dir, extra_args=http01_flag(pebble))
        client = V1TestClient(gateway.url, key)
        directory = await client.directory()
        authorized = await new_authz(client, directory, "dot.example.test")
        assert authorized.json()["status"] == "valid", authorized.body
        spent = (proxy.counts["order-plz"], proxy.counts["finalize-order"])

        refused = await new_cert(client, directory, ["dot.example.test."])
        assert refused.reply.status == 400, refused.reply.body
        problem = refused.reply.json()
        assert problem["type"] == "urn:acme:error:malformed"
        assert "dot.example.test." in problem["detail"] and "dot" in problem["detail"]
        assert (proxy.counts["order-plz"], proxy.counts["finalize-order"]) == spent

        issued = await new_cert(client, directory, ["dot.example.test"])
        assert_own_key(issued, pebble, ["dot.example.test"])
    finally:
        await listening.stopListening()
