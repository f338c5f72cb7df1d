"""
Upstream resilience, end to end, with the gateway as a process: a CA that
rejects half of all nonces, a CA that stops in the middle of a flow and
comes back empty, a gateway killed between finalize and certificate
download, and a graceful SIGTERM.

The faults are placed exactly by a TLS pass-through in front of Pebble
(`tests.support.upstream_proxy`) that holds or drops one chosen request.
"""

from __future__ import annotations

import os
import signal

import attrs
import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet import defer

from gateway.keys.jose import AccountKey
from tests.e2e.test_legacy_clients import (
    assert_certbot_issued,
    assert_issued,
    seed_certbot_account,
    write_pem,
)
from tests.e2e.test_revalidation import http01_flag, new_cert
from tests.support.legacy import Certbot, off_reactor
from tests.support.stack import Pebble, free_port
from tests.support.upstream_proxy import UpstreamProxy, listen_proxy
from tests.support.v1_client import V1TestClient
from tests.support.v1_flows import spki

pytestmark = pytest.mark.e2e


@attrs.frozen
class ProxiedUpstream:
    """
    What `GatewayProcess` needs of an upstream: the proxy's directory URL,
    trusted like Pebble.
    """

    directory_url: str
    ca_bundle: str


async def proxied(pebble):
    """
    Start a pass-through in front of ``pebble``; returns ``(proxy, port,
    upstream)``.
    """
    from twisted.internet import reactor

    port = free_port()
    proxy = UpstreamProxy(reactor, f"https://localhost:{pebble.port}", pebble.ca_bundle)
    listening = listen_proxy(reactor, proxy, port, pebble.tls)
    return proxy, listening, ProxiedUpstream(f"https://localhost:{port}/dir", pebble.ca_bundle)


def test_certbot_with_half_of_nonces_rejected(tmp_path, pebble_factory, gateways):
    """
    Pebble rejects 50 % of good nonces; the gateway's bounded badNonce
    retries absorb it and certbot gets its certificate.
    """
    pebble = pebble_factory(env={"PEBBLE_WFE_NONCEREJECT": "50"}, http_port=free_port())
    keys_dir = str(tmp_path / "keys")
    gateway = gateways(pebble, keys_dir, start=False, extra_args=["--bad-nonce-retries", "16"])
    certbot = Certbot(str(tmp_path / "certbot"), gateway.directory_url)
    seed_certbot_account(certbot, gateway, rsa.generate_private_key(65537, 2048), keys_dir)
    gateway.start()
    names = ["nonces.example.test"]
    certbot.certonly_standalone(names, pebble.http_port)
    assert_certbot_issued(certbot, pebble, names)
    assert "upstream rejected nonce" in gateway.log()


@pytest_twisted.ensureDeferred
async def test_sigkill_between_finalize_and_download_loses_nothing(tmp_path, pebble_factory, gateways):
    """
    The gateway is killed (SIGKILL) while its certificate download is in
    flight, after the order was finalized.  After a restart on the same
    state, the client's retried new-cert (the same CSR) gets the
    certificate, from the same upstream order (no second order).  (A retry
    with a new key gets a certificate for that key from a new order:
    `tests.e2e.test_retries_crashes`.)
    """
    pebble = pebble_factory(env={"PEBBLE_AUTHZREUSE": "0"}, http_port=free_port())
    proxy, listening, upstream = await proxied(pebble)
    try:
        key = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
        keys_dir = str(tmp_path / "keys")
        write_pem(os.path.join(keys_dir, "account.pem"), key.private_key)
        gateway = await off_reactor(gateways, upstream, keys_dir, extra_args=http01_flag(pebble))
        download_seen = defer.Deferred()
        release = defer.Deferred()

        def hook(method, path):
            if method == "POST" and path.startswith("/certZ/") and not download_seen.called:
                download_seen.callback(None)
                return release
            return None

        proxy.hook = hook
        names = ["killed.example.test"]
        csr_key = ec.generate_private_key(ec.SECP256R1())
        attempt = defer.ensureDeferred(new_cert(gateway.url, key, names, csr_key=csr_key))
        await download_seen
        gateway.process.send_signal(signal.SIGKILL)
        await off_reactor(gateway.process.wait)
        release.callback("drop")
        with pytest.raises(Exception):
            await attempt
        assert proxy.counts["finalize-order"] == 1
        proxy.hook = None
        gateway.process = None
        await off_reactor(gateway.start)
        reply, issuers = await new_cert(gateway.url, key, names, csr_key=csr_key)
        assert reply.status == 201, reply.body
        leaf = assert_issued(reply.body, issuers, pebble, names)
        assert spki(leaf.public_key()) == spki(csr_key.public_key())
        assert proxy.counts["order-plz"] == 1, "the retry reused the finalized order"
        assert proxy.counts["finalize-order"] == 1
    finally:
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_ca_stops_mid_issuance_then_comes_back_empty(tmp_path, stack_dir, dns_server, gateways):
    """
    Pebble stops while certbot's challenge answer is on its way: certbot gets
    a clear v1 error naming the upstream failure.  A new Pebble (same
    address, none of the old accounts or orders) comes up; certbot's retry
    succeeds — the gateway re-creates the account and orders anew.
    """
    http_port = free_port()
    pebble = await off_reactor(
        lambda: Pebble(os.path.join(stack_dir, "pebble"), dns_server.address, http_port).start())
    proxy, listening, upstream = await proxied(pebble)
    replacement = None
    try:
        keys_dir = str(tmp_path / "keys")
        gateway = await off_reactor(gateways, upstream, keys_dir, start=False)
        certbot = Certbot(str(tmp_path / "certbot"), gateway.directory_url)
        seed_certbot_account(certbot, gateway, rsa.generate_private_key(65537, 2048), keys_dir)
        await off_reactor(gateway.start)

        def hook(method, path):
            if method == "POST" and path.startswith("/chalZ/") and pebble.process is not None:
                pebble.stop()
                return defer.succeed("drop")
            return None

        proxy.hook = hook
        names = ["outage.example.test"]
        result = await off_reactor(certbot.run, "certonly", "--standalone",
                                   "--http-01-port", str(http_port), "--http-01-address",
                                   "127.0.0.1", "-d", names[0], check=False)
        assert result.returncode != 0
        log = open(os.path.join(certbot.logs_dir, "letsencrypt.log")).read()
        assert "urn:acme:error:serverInternal" in log and "upstream CA failed" in log
        proxy.hook = None
        replacement = await off_reactor(lambda: Pebble(
            os.path.join(stack_dir, "pebble"), dns_server.address, http_port,
            port=pebble.port, mgmt_port=pebble.mgmt_port).start())
        await off_reactor(certbot.certonly_standalone, names, http_port)
        assert_certbot_issued(certbot, replacement, names)
        assert "re-attached" in gateway.log()
    finally:
        await listening.stopListening()
        await off_reactor(pebble.stop)
        if replacement is not None:
            await off_reactor(replacement.stop)


@pytest_twisted.ensureDeferred
async def test_sigterm_finishes_requests_in_flight(tmp_path, pebble_factory, gateways):
    """
    SIGTERM while a new-authz is waiting on the CA: the gateway stops
    accepting, finishes that request (the client gets its 201), and exits
    with status 0.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    pebble = pebble_factory(http_port=free_port())
    proxy, listening, upstream = await proxied(pebble)
    try:
        key = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
        keys_dir = str(tmp_path / "keys")
        write_pem(os.path.join(keys_dir, "account.pem"), key.private_key)
        gateway = await off_reactor(gateways, upstream, keys_dir)
        client = V1TestClient(gateway.url, key)
        directory = await client.directory()
        order_seen = defer.Deferred()
        release = defer.Deferred()

        def hook(method, path):
            if path.startswith("/order-plz") and not order_seen.called:
                order_seen.callback(None)
                return release
            return None

        proxy.hook = hook
        request = defer.ensureDeferred(client.post(directory["new-authz"], {
            "resource": "new-authz", "identifier": {"type": "dns", "value": "term.example.test"}}))
        await order_seen
        gateway.process.send_signal(signal.SIGTERM)
        await deferLater(reactor, 0.5, lambda: None)
        assert gateway.process.poll() is None, "the gateway waits for the request in flight"
        release.callback(None)
        reply = await request
        assert reply.status == 201, reply.body
        code = await off_reactor(gateway.process.wait, 15)
        assert code == 0
    finally:
        await listening.stopListening()
