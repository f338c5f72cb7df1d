"""
The upstream client's HTTP exchanges straight on the agent
(`gateway.upstream.transport`): the same bytes on the wire as treq's
``HTTPClient.request`` sent, without rebuilding per request what never
changes (the URL re-encoded by hyperlink, the agent layers, an endpoint per
request, a body producer run by a cooperator).
"""

from __future__ import annotations

import pytest
import pytest_twisted
from hyperlink import EncodedURL
from hypothesis import given, settings, strategies as st
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.internet.task import Clock
from twisted.web import client as web_client
from twisted.web._newclient import ResponseDone
from twisted.web.client import URI
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.http_headers import Headers

from gateway.process.testing import FakeCA
from gateway.upstream import transport
from gateway.upstream.client import UpstreamClient, https_client
from gateway.upstream.transport import (
    AgentTransport, BytesProducer, CachingEndpointFactory, agent_transport, plain_uri, read_body,
)


class Recorder(protocol.Protocol):
    """
    Records the raw bytes of each request and answers it with a body, a
    cookie and a kept connection.
    """

    def dataReceived(self, data: bytes) -> None:
        self.factory.received.append(data)
        body = b'{"ok": true}'
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nReplay-Nonce: n1\r\n"
            b"Set-Cookie: lb=one; Path=/\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), b"" if data.startswith(b"HEAD ") else body))


async def _through_treq(url: str, requests) -> None:
    """The exchanges as the client made them before: treq's request()."""
    pool = web_client.HTTPConnectionPool(reactor, persistent=True)
    http = HTTPClient(web_client.Agent(reactor, pool=pool))
    for method, body, headers in requests:
        response = await http.request(method, url, data=body, headers=headers,
                                      allow_redirects=False, unbuffered=True)
        await response.content()
    await pool.closeCachedConnections()


async def _through_transport(url: str, requests) -> None:
    pool = web_client.HTTPConnectionPool(reactor, persistent=True)
    exchanges = AgentTransport(web_client.Agent(reactor, pool=pool))
    for method, body, headers in requests:
        code, _, content = await exchanges.exchange(method.encode(), url, headers, body)
        assert (code, content) == (200, b"" if method == "HEAD" else b'{"ok": true}')
    await pool.closeCachedConnections()


def _headers(content_type=None) -> Headers:
    headers = Headers({b"User-Agent": [b"acme-gateway/test"]})
    if content_type:
        headers.setRawHeaders(b"Content-Type", [content_type])
    return headers


@pytest.mark.parametrize("path", ["/acme/authz/1/a_b-c.d~e", "/new%20nonce?x=1", "/dir"])
@pytest_twisted.ensureDeferred
async def test_the_bytes_on_the_wire_are_those_treq_sent(path):
    """
    A POST with its JWS, a GET and a HEAD, the second request carrying the
    cookie the first was given: byte for byte what treq's request() sent.
    """
    factory = protocol.Factory.forProtocol(Recorder)
    factory.received = []
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}{path}"
    try:
        sent = []
        for through in (_through_treq, _through_transport):
            factory.received = []
            await through(url, [
                ("POST", b'{"protected":"e30","payload":"","signature":"c2ln"}',
                 _headers(b"application/jose+json")),
                ("GET", None, _headers()),
                ("HEAD", None, _headers()),
            ])
            sent.append(factory.received)
        assert len(sent[0]) == 3
        assert b"Cookie: lb=one" in sent[0][1]
        assert b"Accept-Encoding: gzip" in sent[0][0]
        assert sent[1] == sent[0]
    finally:
        await port.stopListening()


_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


@settings(max_examples=300, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https"]),
    host=st.sampled_from(["localhost", "127.0.0.1", "acme-v02.api.letsencrypt.org",
                          "Upper.Example", "xn--bcher-kva.example", "bücher.example",
                          "a..b", "-x.test", "x-.test", ".x.test", "x.test.", "a-b.c-d",
                          "a" * 63 + ".test", "a" * 64 + ".test", ("a" * 60 + ".") * 4 + "test",
                          ("a" * 60 + ".") * 5 + "test", "xn--abc.test", "ab--c.test",
                          "a--b.test", "1.2.3.4"]),
    port=st.one_of(st.none(), st.sampled_from(["80", "443", "0443", "14000", "099", "", "99999"])),
    path=st.text(alphabet=_UNRESERVED + "/%?#= ;é", max_size=40),
)
def test_a_url_is_sent_as_hyperlink_would_encode_it(scheme, host, port, path):
    url = f"{scheme}://{host}" + (f":{port}" if port is not None else "") + (
        "/" + path if path else "")
    try:
        expected = EncodedURL.from_text(url).to_uri().to_text().encode("ascii")
    except Exception:
        with pytest.raises(Exception):
            plain_uri(url)
        return
    assert plain_uri(url) == expected


class CountingURLs:
    def __init__(self, monkeypatch):
        self.parsed = 0
        parse = EncodedURL.from_text

        def counted(text):
            self.parsed += 1
            return parse(text)

        monkeypatch.setattr(transport, "EncodedURL", type("E", (), {"from_text": staticmethod(counted)}))


def test_a_cas_plain_url_is_not_parsed_by_hyperlink(monkeypatch):
    urls = CountingURLs(monkeypatch)
    assert plain_uri("https://localhost:14000/my-authz/hKn0x_d6-C.dP0~") == (
        b"https://localhost:14000/my-authz/hKn0x_d6-C.dP0~")
    assert plain_uri("https://acme-v02.api.letsencrypt.org/acme/new-order") == (
        b"https://acme-v02.api.letsencrypt.org/acme/new-order")
    assert urls.parsed == 0
    # the default port, a query, an upper-case host: hyperlink's spelling
    assert plain_uri("https://ca.example:443/dir") == b"https://ca.example/dir"
    assert plain_uri("https://ca.example/dir?a=b") == b"https://ca.example/dir?a=b"
    assert plain_uri("https://CA.example/dir") == b"https://ca.example/dir"
    assert urls.parsed == 3


class CountingCookieAgents:
    def __init__(self, monkeypatch):
        self.built = 0
        original = web_client.CookieAgent.__init__

        def counted(agent, *args, **kwargs):
            self.built += 1
            original(agent, *args, **kwargs)

        monkeypatch.setattr(web_client.CookieAgent, "__init__", counted)


def test_the_agent_layers_are_built_once_not_per_request(monkeypatch):
    """
    Ten upstream requests build one cookie layer (treq built one each).
    """
    layers = CountingCookieAgents(monkeypatch)
    ca = FakeCA()
    client = UpstreamClient(ca.directory_url, StubTreq(ca), Clock())
    for _ in range(10):
        done = defer.Deferred.fromCoroutine(client.directory(refresh=True))
        assert done.called
    assert client.request_counts["directory"] == 10
    assert layers.built == 1


def test_a_request_body_is_written_at_once_with_its_length():
    written = []

    class Consumer:
        write = written.append

    producer = BytesProducer(b'{"a":1}')
    assert producer.length == 7
    done = producer.startProducing(Consumer())
    assert done.called and written == [b'{"a":1}']


class CountingEndpoints:
    def __init__(self):
        self.asked = []

    def endpointForURI(self, uri):
        self.asked.append((uri.scheme, uri.host, uri.port))
        return object()


def test_one_endpoint_per_ca_host_and_port():
    inner = CountingEndpoints()
    endpoints = CachingEndpointFactory(inner)
    first = endpoints.endpointForURI(URI.fromBytes(b"https://ca.example:14000/a"))
    for path in (b"/b", b"/c/d", b"/a"):
        assert endpoints.endpointForURI(URI.fromBytes(b"https://ca.example:14000" + path)) is first
    other = endpoints.endpointForURI(URI.fromBytes(b"https://ca.example:15000/a"))
    assert other is not first
    endpoints.endpointForURI(URI.fromBytes(b"http://ca.example:14000/a"))
    assert inner.asked == [(b"https", b"ca.example", 14000), (b"https", b"ca.example", 15000),
                           (b"http", b"ca.example", 14000)]


@pytest_twisted.ensureDeferred
async def test_the_gateways_client_builds_one_endpoint_per_host(monkeypatch):
    """
    Through `https_client`: 10 requests to a CA ask Twisted's endpoint
    factory once (the Agent alone asks it for every request).
    """
    asked = []
    original = web_client._StandardEndpointFactory.endpointForURI

    def counted(self, uri):
        asked.append(uri.host)
        return original(self, uri)

    monkeypatch.setattr(web_client._StandardEndpointFactory, "endpointForURI", counted)
    factory = protocol.Factory.forProtocol(Recorder)
    factory.received = []
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    http = https_client(reactor)
    exchanges = agent_transport(http)
    try:
        for _ in range(10):
            code, _, _ = await exchanges.exchange(
                b"GET", f"http://127.0.0.1:{port.getHost().port}/dir", _headers(), None)
            assert code == 200
        assert asked == [b"127.0.0.1"]
    finally:
        await http._agent._pool.closeCachedConnections()
        await port.stopListening()


def test_a_transport_is_used_as_it_is():
    exchanges = AgentTransport(StubTreq(FakeCA())._agent)
    assert agent_transport(exchanges) is exchanges


class CountingCookieLayer:
    def __init__(self, monkeypatch):
        self.requests = 0
        original = web_client.CookieAgent.request

        def counted(agent, *args, **kwargs):
            self.requests += 1
            return original(agent, *args, **kwargs)

        monkeypatch.setattr(web_client.CookieAgent, "request", counted)


class NoCookies(Recorder):
    def dataReceived(self, data: bytes) -> None:
        self.factory.received.append(data)
        self.transport.write(b"HTTP/1.1 204 No Content\r\nReplay-Nonce: n1\r\n\r\n")


@pytest_twisted.ensureDeferred
async def test_requests_go_around_the_cookie_layer_until_a_cookie_is_set(monkeypatch):
    """
    Ten requests to a CA that sets no cookie pass no cookie layer (treq's
    took ten); once a response sets one, the next requests send it.
    """
    layer = CountingCookieLayer(monkeypatch)
    quiet = protocol.Factory.forProtocol(NoCookies)
    setting = protocol.Factory.forProtocol(Recorder)
    quiet.received, setting.received = [], []
    ports = [reactor.listenTCP(0, f, interface="127.0.0.1") for f in (quiet, setting)]
    pool = web_client.HTTPConnectionPool(reactor, persistent=True)
    exchanges = AgentTransport(web_client.Agent(reactor, pool=pool))
    quiet_url, setting_url = (f"http://127.0.0.1:{p.getHost().port}/x" for p in ports)
    try:
        for _ in range(10):
            assert (await exchanges.exchange(b"GET", quiet_url, _headers(), None))[0] == 204
        assert layer.requests == 0 and len(exchanges.cookies) == 0
        await exchanges.exchange(b"GET", setting_url, _headers(), None)
        assert layer.requests == 0 and len(exchanges.cookies) == 1
        await exchanges.exchange(b"POST", setting_url, _headers(b"application/jose+json"), b'{"p":1}')
        assert layer.requests == 1
        assert b"Cookie: lb=one" in setting.received[-1]
        assert setting.received[-1].endswith(b'\r\n\r\n{"p":1}')
        assert b"Cookie" not in setting.received[0]
    finally:
        await pool.closeCachedConnections()
        for port in ports:
            await port.stopListening()


class FakeResponse:
    """An IResponse whose body arrives in ``chunks``, then ``reason``."""

    def __init__(self, chunks, reason, length=None):
        self.chunks, self.reason = chunks, reason
        self.length = sum(map(len, chunks)) if length is None else length

    def deliverBody(self, protocol):
        for chunk in self.chunks:
            protocol.dataReceived(chunk)
        protocol.connectionLost(Failure(self.reason))


def test_a_body_in_chunks_is_read_whole():
    assert _result(read_body(FakeResponse([b"ab", b"c", b"d"], ResponseDone()))) == b"abcd"
    assert _result(read_body(FakeResponse([b"x"], ResponseDone()))) == b"x"  # one byte is read


def test_a_body_cut_short_without_a_length_is_whole():
    response = FakeResponse([b'{"a":', b"1}"], PotentialDataLoss(), length=UNKNOWN_LENGTH)
    assert _result(read_body(response)) == b'{"a":1}'


def test_a_body_lost_midway_is_an_error():
    lost = read_body(FakeResponse([b"ab"], ConnectionLost("gone"), length=10))
    failures = []
    lost.addErrback(failures.append)
    assert failures[0].check(ConnectionLost)


def _result(deferred):
    results = []
    deferred.addBoth(results.append)
    return results[0]


def test_a_host_of_253_characters_is_passed_through_and_one_of_254_refused(monkeypatch):
    urls = CountingURLs(monkeypatch)
    host = ("a" * 62 + ".") * 4 + "a"  # 253 characters
    assert len(host) == 253
    assert plain_uri(f"https://{host}/x") == f"https://{host}/x".encode()
    assert urls.parsed == 0
    with pytest.raises(Exception):
        plain_uri(f"https://{host}f/x")
    assert urls.parsed == 1
