"""
The admin listener (`gateway.operations.admin`) on a loopback port, over a
store (SQLite ``:memory:``, run inline) and a scriptable stand-in for the upstream client: liveness,
readiness (the sidecar's, which never asks the CA, and ``?upstream=1``)
and what makes it fail (with the reason), metrics, and the migration
report as a page and as JSON.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address

from gateway.operations.admin import Admin, Readiness
from gateway.keys.jose import AccountKey
from gateway.keys.keystore import KeyStore
from gateway.operations.metrics import Metrics
from gateway.store import ClientVisit
from gateway.store.records import format_timestamp
from gateway.store.sqlite import SQLiteStore
from gateway.upstream.errors import UpstreamUnavailable

UA = "CertbotACMEClient/1.32.0 (certbot; admin-test)"


class StandInUpstream:
    """
    The part of `UpstreamClient` readiness uses: ``directory(refresh)``,
    which answers, fails, or hangs as the test says, and counts calls.
    """

    directory_url = "https://ca.test/dir"

    def __init__(self):
        self.mode = "up"
        self.calls = 0

    async def directory(self, refresh=False):
        self.calls += 1
        if self.mode == "down":
            raise UpstreamUnavailable("cannot reach https://ca.test/dir: Connection refused")
        if self.mode == "hang":
            await defer.Deferred()
        return {"newNonce": "…"}


class StandInListener:
    """
    What readiness asks of a listening port: ``connected`` and ``getHost``.
    """

    connected = True

    def getHost(self):
        return IPv4Address("TCP", "127.0.0.1", 4000)


@pytest_twisted.async_yield_fixture
async def admin():
    """
    An admin listener on 127.0.0.1 with a fresh store, stand-in upstream
    and v1 listener, and a key store of one key; yields (base URL, admin,
    upstream, store).
    """
    store = SQLiteStore.inline(clock=reactor)
    upstream = StandInUpstream()
    metrics = Metrics(process=False)
    keys = KeyStore.from_keys([AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))])
    readiness = Readiness(upstream, store, reactor, metrics=metrics, max_age=0, timeout=0.2,
                          listeners=(("v1", StandInListener()),), keys=keys)
    service = Admin(store, reactor, metrics, readiness)
    port = reactor.listenTCP(0, service.site(), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}", service, upstream, store
    await port.stopListening()


async def get(url, headers=None, method="GET"):
    response = await treq.request(method, url, headers=headers or {})
    return response.code, response.headers, (await response.content()).decode()


@pytest_twisted.ensureDeferred
async def test_healthz(admin):
    """
    ``/healthz`` answers 200 whatever the upstream does: a slow CA must not
    get the gateway restarted.
    """
    base, _, upstream, _ = admin
    upstream.mode = "down"
    status, headers, body = await get(base + "/healthz")
    assert (status, body) == (200, "ok\n")
    assert headers.getRawHeaders("cache-control") == ["no-store"]
    status, _, body = await get(base + "/healthz", method="HEAD")
    assert (status, body) == (200, "")


@pytest_twisted.ensureDeferred
async def test_readyz_names_each_check(admin):
    """
    ``/readyz`` (a sidecar's readiness) checks what serving needs — the v1
    listener, a store write, the keys — and never the CA: a CA that is
    down leaves it 200.  Each local failure makes it 503, naming the check
    and the reason.
    """
    base, service, upstream, store = admin
    upstream.mode = "down"
    status, _, body = await get(base + "/readyz")
    assert status == 200, body
    assert body.splitlines() == ["ready", "listening: ok: v1 on 127.0.0.1:4000", "store: ok: writable",
                                 "keys: ok: 1 account key(s) loaded"]
    assert upstream.calls == 0

    listener = service.readiness.listeners[0][1]
    listener.connected = False
    status, _, body = await get(base + "/readyz")
    assert status == 503 and "listening: FAILED: not listening: v1 (stopping?)" in body
    listener.connected = True

    keys = service.readiness.keys
    service.readiness.keys = KeyStore.from_keys([])
    status, _, body = await get(base + "/readyz")
    assert status == 503 and "keys: FAILED: no usable account key" in body
    service.readiness.managed = True
    status, _, body = await get(base + "/readyz")
    assert status == 200 and "managed mode serves unknown keys" in body
    service.readiness.keys, service.readiness.managed = keys, False

    await store.close()
    status, _, body = await get(base + "/readyz")
    assert status == 503
    assert "store: FAILED: cannot commit a write: the store is closed" in body
    assert upstream.calls == 0


@pytest_twisted.ensureDeferred
async def test_readyz_upstream_names_the_ca(admin):
    """
    ``/readyz?upstream=1`` adds the CA: 200 while it answers; a CA that
    refuses or hangs makes it 503, naming the upstream and the reason.
    """
    base, _, upstream, _ = admin
    status, _, body = await get(base + "/readyz?upstream=1")
    assert status == 200, body
    assert "upstream: ok: directory https://ca.test/dir answered" in body
    assert "store: ok: writable" in body and "listening: ok" in body

    upstream.mode = "down"
    status, _, body = await get(base + "/readyz?upstream=1")
    assert status == 503
    assert "upstream: FAILED: directory https://ca.test/dir did not answer: cannot reach" in body
    assert "Connection refused" in body and "store: ok" in body
    assert (await get(base + "/readyz"))[0] == 200

    upstream.mode = "hang"
    status, _, body = await get(base + "/readyz?upstream=1")
    assert status == 503 and "no answer within 0.2s" in body


@pytest_twisted.ensureDeferred
async def test_recent_upstream_answer_is_reused(admin):
    """
    Within ``max_age`` of a good answer, probes do not ask the CA again.
    """
    _, service, upstream, _ = admin
    service.readiness.max_age = 60
    for _ in range(3):
        results = await service.readiness.check(upstream=True)
        assert all(r.ok for r in results)
    assert upstream.calls == 1


@pytest_twisted.ensureDeferred
async def test_metrics_page(admin):
    """
    ``/metrics`` is Prometheus text (OpenMetrics when asked), with the
    store-backed gauges refreshed for the scrape.
    """
    base, _, upstream, store = admin
    await store.record_client(ClientVisit(UA, "127.0.0.1", format_timestamp(reactor.seconds()),
                                          "tp-1"))
    await get(base + "/readyz")
    status, headers, body = await get(base + "/metrics")
    assert status == 200
    assert headers.getRawHeaders("content-type")[0].startswith("text/plain; version=0.0.4")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(body) for s in f.samples}
    assert samples[("acme_gateway_pending_authorizations", ())] == 0
    assert samples[("acme_gateway_legacy_clients", (("state", "active"),))] == 1
    assert samples[("acme_gateway_ready", (("check", "store"),))] == 1
    # The scrape itself asks the CA (at most every ready-max-age): alerts see it.
    assert samples[("acme_gateway_ready", (("check", "upstream"),))] == 1
    upstream.mode = "down"
    _, _, body = await get(base + "/metrics")
    assert 'acme_gateway_ready{check="upstream"} 0.0' in body
    upstream.mode = "up"
    status, headers, body = await get(
        base + "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert headers.getRawHeaders("content-type")[0].startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")


@pytest_twisted.ensureDeferred
async def test_status_page_and_json(admin):
    """
    ``/status`` is a self-contained HTML page naming each client, under a
    policy that forbids scripts; ``/status.json`` carries the same data.
    """
    base, _, upstream, store = admin
    await store.record_client(ClientVisit(UA, "127.0.0.1", format_timestamp(reactor.seconds()),
                                          "tp-123456789012345", ("a.example.test",)))
    status, headers, body = await get(base + "/status")
    assert status == 200
    assert headers.getRawHeaders("content-type") == ["text/html; charset=utf-8"]
    assert "default-src 'none'" in headers.getRawHeaders("content-security-policy")[0]
    assert UA in body.replace("&amp;", "&")
    assert "1 legacy client still on ACME v1" in body
    status, headers, body = await get(base + "/status.json")
    data = json.loads(body)
    assert data["counts"]["active"] == 1
    assert data["clients"][0]["names"] == ["a.example.test"]
    status, _, body = await get(base + "/")
    assert status == 200 and 'href="status"' in body


@pytest.mark.parametrize("path", ["/nope", "/status/extra"])
@pytest_twisted.ensureDeferred
async def test_unknown_admin_paths(admin, path):
    """
    Anything else is a 404.
    """
    base = admin[0]
    status, _, _ = await get(base + path)
    assert status == 404
