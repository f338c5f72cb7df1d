"""
Readiness against a real upstream: the gateway, in process, in front of a
Pebble of the test's own.  When that Pebble stops, ``/readyz?upstream=1``
and the readiness gauge turn unready and say that the upstream is why,
while ``/readyz`` — the sidecar's readiness probe — stays ready: the
gateway still serves.
"""

import os

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, threads

from cryptography.hazmat.primitives.asymmetric import ec

from gateway.process import serve
from gateway.process.wiring import ServeConfig
from gateway.keys.jose import AccountKey
from gateway.keys.keystore import KeyStore

pytestmark = pytest.mark.integration


async def get(url):
    response = await treq.get(url)
    return response.code, (await response.content()).decode()


@pytest_twisted.ensureDeferred
async def test_readyz_turns_unready_when_pebble_stops(tmp_path, pebble_factory):
    """
    ``/readyz?upstream=1`` is 200 while Pebble answers and 503 naming the
    upstream once it has stopped; ``/readyz`` and ``/healthz`` stay 200 (the
    gateway still serves), and the upstream's readiness gauge follows.
    """
    upstream = pebble_factory()
    config = ServeConfig(
        upstream=upstream.directory_url,
        keys=str(tmp_path),
        upstream_ca_bundle=upstream.ca_bundle,
        state=os.path.join(str(tmp_path), "state.sqlite3"),
        listen="tcp:0:interface=127.0.0.1",
        admin_listen="tcp:0:interface=127.0.0.1",
        ready_max_age=0,
        request_timeout=3,
    )
    key = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
    running = await serve.start(reactor, config, KeyStore.from_keys([key]))
    admin = f"http://127.0.0.1:{running.admin_port.getHost().port}"
    try:
        status, body = await get(admin + "/readyz?upstream=1")
        assert status == 200, body
        assert f"upstream: ok: directory {upstream.directory_url} answered" in body

        await threads.deferToThread(upstream.stop)  # blocking: off the reactor thread

        status, body = await get(admin + "/readyz?upstream=1")
        assert status == 503, body
        assert body.startswith("not ready\n")
        assert f"upstream: FAILED: directory {upstream.directory_url} did not answer" in body
        assert "store: ok: writable" in body
        status, body = await get(admin + "/readyz")
        assert status == 200 and "upstream" not in body, body
        assert (await get(admin + "/healthz"))[0] == 200
        _, metrics = await get(admin + "/metrics")
        assert 'acme_gateway_ready{check="upstream"} 0.0' in metrics
        assert 'acme_gateway_upstream_requests_total{kind="directory",status="error"}' in metrics
    finally:
        await running.stop()
