"""
The upstream client's real connections (`UpstreamClient.create`,
`https_client`, `trust_root`), against servers on loopback: a TLS CA is
trusted through ``--upstream-ca-bundle`` (a bundle of several roots
included) and not without it; at most `PERSISTENT_PER_HOST` idle
connections are kept; and a kept connection the CA closes is not silently
re-tried by Twisted's pool (the client's own retries, counted and logged,
are the only ones).
"""

from __future__ import annotations

import datetime
import json

import pytest
import pytest_twisted
import treq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, protocol, reactor, ssl
from twisted.web import resource, server
from twisted.web._newclient import ResponseNeverReceived

from gateway.process.devstack import make_tls_certificates
from gateway.upstream.client import PERSISTENT_PER_HOST, UpstreamClient, https_client
from gateway.upstream.errors import UpstreamUnavailable

DIRECTORY = {"newNonce": "https://127.0.0.1/n", "newAccount": "https://127.0.0.1/a",
             "newOrder": "https://127.0.0.1/o"}


class DirectoryPage(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(DIRECTORY).encode()


def another_root() -> bytes:
    """The PEM of a self-signed root of another name."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another root")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM)


async def _close(client: UpstreamClient) -> None:
    await client._http._agent._pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_a_tls_ca_is_trusted_through_the_bundle_only(tmp_path):
    tls = make_tls_certificates(str(tmp_path / "tls"))
    other = make_tls_certificates(str(tmp_path / "other"))
    with open(tls["cert"], "rb") as cert, open(tls["key"], "rb") as key:
        options = ssl.PrivateCertificate.loadPEM(cert.read() + key.read()).options()
    port = reactor.listenSSL(0, server.Site(DirectoryPage()), options, interface="127.0.0.1")
    url = f"https://127.0.0.1:{port.getHost().port}/dir"
    # a bundle of two roots, the CA's second
    both = tmp_path / "both.pem"
    both.write_bytes(another_root() + open(tls["ca"], "rb").read())
    clients = []
    try:
        for bundle in (tls["ca"], str(both)):
            client = UpstreamClient.create(reactor, url, ca_bundle=bundle, read_retries=0)
            clients.append(client)
            directory = await client.directory()
            assert directory.new_order == "https://127.0.0.1/o"
            assert client.directory_url == url
        for bundle in (None, other["ca"]):
            client = UpstreamClient.create(reactor, url, ca_bundle=bundle, read_retries=0)
            clients.append(client)
            with pytest.raises(UpstreamUnavailable):
                await client.directory()
    finally:
        for client in clients:
            await _close(client)
        await port.stopListening()


class Held(resource.Resource):
    """Answers once ``burst`` requests wait, so that all are in flight."""

    isLeaf = True

    def __init__(self, burst):
        super().__init__()
        self.burst = burst
        self.waiting = []

    def render_GET(self, request):
        self.waiting.append(request)
        if len(self.waiting) == self.burst:
            waiting, self.waiting = self.waiting, []
            for held in waiting:
                held.write(b"ok")
                held.finish()
        return server.NOT_DONE_YET


class CountingSite(server.Site):
    connections = 0

    def buildProtocol(self, address):
        self.connections += 1
        return super().buildProtocol(address)


@pytest_twisted.ensureDeferred
async def test_at_most_64_idle_connections_are_kept():
    """
    Two bursts of 66 requests in flight: the first opens 66 connections
    and keeps 64, so the second opens only 2 more.
    """
    assert PERSISTENT_PER_HOST == 64
    burst = PERSISTENT_PER_HOST + 2
    site = CountingSite(Held(burst))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    client = https_client(reactor)
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/"
        for _ in range(2):
            responses = await defer.gatherResults(
                [defer.ensureDeferred(client.get(url)) for _ in range(burst)])
            await defer.gatherResults([defer.ensureDeferred(treq.content(r)) for r in responses])
        assert site.connections == burst + 2
    finally:
        await client._agent._pool.closeCachedConnections()
        await port.stopListening()


class ClosesKeptConnections(protocol.Protocol):
    """
    Answers the first request of a connection (keeping it open) and drops
    the connection at the second, as a CA behind a load balancer that
    timed out an idle connection does.
    """

    def connectionMade(self):
        self.factory.connections += 1
        self.buffer = b""
        self.answered = 0

    def dataReceived(self, data):
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.factory.requests += 1
            if self.answered:
                self.transport.loseConnection()
                return
            self.answered += 1
            body = json.dumps(DIRECTORY).encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


@pytest_twisted.ensureDeferred
async def test_a_kept_connection_the_ca_drops_is_not_retried_behind_the_clients_back():
    factory = protocol.Factory.forProtocol(ClosesKeptConnections)
    factory.connections = factory.requests = 0
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = UpstreamClient.create(reactor, f"http://127.0.0.1:{port.getHost().port}/dir",
                                   read_retries=0)
    try:
        await client.directory()
        with pytest.raises(UpstreamUnavailable):
            await client.directory(refresh=True)
        assert (factory.connections, factory.requests) == (1, 2)
    finally:
        await _close(client)
        await port.stopListening()


class CountingCreators:
    """Counts the TLS connection creators Twisted's policy builds."""

    def __init__(self, monkeypatch):
        from twisted.web import client as web_client

        self.built = []
        build = web_client.optionsForClientTLS

        def counted(hostname, *args, **kwargs):
            self.built.append(hostname)
            return build(hostname, *args, **kwargs)

        monkeypatch.setattr(web_client, "optionsForClientTLS", counted)


@pytest_twisted.ensureDeferred
async def test_one_tls_creator_per_ca_host_not_one_per_request(tmp_path, monkeypatch):
    """
    20 requests to the CA, one after another on a kept connection and then
    10 at once, build one TLS connection creator (an OpenSSL context with
    the trust root loaded), not one each; the CA is still verified.
    """
    creators = CountingCreators(monkeypatch)
    tls = make_tls_certificates(str(tmp_path / "tls"))
    with open(tls["cert"], "rb") as cert, open(tls["key"], "rb") as key:
        options = ssl.PrivateCertificate.loadPEM(cert.read() + key.read()).options()
    site = CountingSite(DirectoryPage())
    port = reactor.listenSSL(0, site, options, interface="127.0.0.1")
    url = f"https://127.0.0.1:{port.getHost().port}/dir"
    client = https_client(reactor, tls["ca"])
    untrusting = https_client(reactor)
    try:
        for _ in range(10):
            response = await client.get(url)
            assert json.loads(await treq.content(response)) == DIRECTORY
        responses = await defer.gatherResults([defer.ensureDeferred(client.get(url)) for _ in range(10)])
        await defer.gatherResults([defer.ensureDeferred(treq.content(r)) for r in responses])
        assert creators.built == ["127.0.0.1"]
        assert site.connections >= 2  # the burst opened more connections, all from the one creator
        with pytest.raises(ResponseNeverReceived):  # the TLS handshake failed: not trusted
            await untrusting.get(url)
    finally:
        await client._agent._pool.closeCachedConnections()
        await untrusting._agent._pool.closeCachedConnections()
        await port.stopListening()
