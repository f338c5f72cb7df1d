"""
The HTTP exchanges of the upstream client, straight on a Twisted ``Agent``.

treq's ``HTTPClient.request`` rebuilds, for every request, what the
gateway's requests never change: it parses the URL with hyperlink and
re-encodes it (IDNA host, percent-encoding: ~25 us a request), makes a
fresh cookie jar and wraps the agent in a new ``CookieAgent`` and
``ContentDecoderAgent``, adapts the body to a ``FileBodyProducer`` (which
writes it from a cooperator task, a reactor turn later), and wraps the
response twice.  At 32 concurrent clients that request building was ~15 %
of the gateway's GIL-holding samples (py-spy ``--gil``, issue 15).

`AgentTransport` sends the same bytes: the same agent layers (cookies,
``Accept-Encoding: gzip``), built once, the cookie layer gone around while
no cookie was set; the URL passed through when it is
already in the form hyperlink would give it (`plain_uri`), and re-encoded
the way treq does otherwise; the body written at once with its length.
`CachingEndpointFactory` keeps the one endpoint per CA host the ``Agent``
asks for on every request (a ``HostnameEndpoint``, the host name checked
and a resolver looked up each time), wrapped around the TLS connection
creator of ``HostnameCachingHTTPSPolicy``.
"""

from __future__ import annotations

import re
from http.cookiejar import CookieJar
from typing import Any, Dict, List, Optional, Tuple

from hyperlink import EncodedURL
from twisted.internet import defer
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    ContentDecoderAgent, CookieAgent, GzipDecoder, URI, _FakeStdlibRequest,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from twisted.web._newclient import ResponseDone
from zope.interface import implementer

#: A URL hyperlink's ``to_uri`` leaves as it is: http(s), a lower-case
#: host name or IPv4 address (labels of 1 to 63 characters neither starting
#: nor ending with a hyphen; with no ``--``, `plain_uri` checks, IDNA's
#: rule for ``xn--`` labels and the 3rd and 4th characters), an optional
#: port, a path of unreserved characters and slashes, no query, no fragment
#: (what ACME CAs hand out).
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN_URI = re.compile(rf"(https?)://({_LABEL}(?:\.{_LABEL})*)(?::([1-9][0-9]{{0,4}}))?"
                        r"(?:/[A-Za-z0-9._~/-]*)?")
_DEFAULT_PORTS = {"https": "443", "http": "80"}
_GZIP = [(b"gzip", GzipDecoder)]
#: The headers ``http.cookiejar`` takes cookies from.
_SET_COOKIE = (b"set-cookie", b"set-cookie2")


def plain_uri(url: str) -> bytes:
    """
    The request target treq would send for ``url``: ``url`` itself when it
    matches `_PLAIN_URI` with a host of at most 253 characters, no ``--``
    and without its scheme's default port (hyperlink drops that), else
    hyperlink's encoding of it (IDNA host, percent-encoded path and query,
    as ``treq.HTTPClient.request`` makes it; its errors as they were).
    """
    match = _PLAIN_URI.fullmatch(url)
    if (match is not None and len(match.group(2)) <= 253 and "--" not in match.group(2)
            and match.group(3) != _DEFAULT_PORTS[match.group(1)]):
        return url.encode("ascii")
    return EncodedURL.from_text(url).to_uri().to_text().encode("ascii")


@implementer(IBodyProducer)
class BytesProducer:
    """
    A request body known in full, written at once (``Content-Length`` from
    its length), where treq's ``FileBodyProducer`` reads it from a file in
    a cooperator task.
    """

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> "defer.Deferred[None]":
        consumer.write(self.body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _BodyCollector(Protocol):
    """
    Collects a response body, as treq's ``content`` does: a body cut short
    without a length (``PotentialDataLoss``) is complete, any other loss is
    an error.
    """

    def __init__(self, finished: "defer.Deferred[bytes]") -> None:
        self.finished = finished
        self.chunks: List[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)


def read_body(response: IResponse) -> "defer.Deferred[bytes]":
    """
    The whole body of ``response``.
    """
    if response.length == 0:
        return defer.succeed(b"")
    finished: "defer.Deferred[bytes]" = defer.Deferred()
    response.deliverBody(_BodyCollector(finished))
    return finished


class AgentTransport:
    """
    The upstream client's HTTP exchanges on ``agent``, through the layers
    treq would add (a cookie jar, gzip decoding), built once.

    The cookie layer costs ~15 us a request (the URL parsed again, the jar
    locked and searched, the response searched for cookies) and ACME CAs
    set no cookies, so a request goes around it while the jar is empty; a
    response that sets a cookie fills the jar as the layer would have, and
    from then on every request goes through it.
    """

    def __init__(self, agent: IAgent) -> None:
        self.agent = agent
        self.cookies = CookieJar()
        self._cookie_layer = CookieAgent(agent, self.cookies)
        self._with_cookies: IAgent = ContentDecoderAgent(self._cookie_layer, _GZIP)
        self._without_cookies: IAgent = ContentDecoderAgent(agent, _GZIP)

    async def exchange(self, method: bytes, url: str, headers: Headers,
                       body: Optional[bytes]) -> Tuple[int, Headers, bytes]:
        """
        Send one request; its status, headers and whole body.
        """
        uri = plain_uri(url)
        producer = None if body is None else BytesProducer(body)
        if len(self.cookies):
            response = await self._with_cookies.request(method, uri, headers, producer)
        else:
            response = await self._without_cookies.request(method, uri, headers, producer)
            if any(response.headers.hasHeader(name) for name in _SET_COOKIE):
                self._cookie_layer._extractCookies(response, _FakeStdlibRequest(uri))
        content = await read_body(response)
        return response.code, response.headers, content


def agent_transport(http: Any) -> AgentTransport:
    """
    The transport on the agent of a treq ``HTTPClient`` or ``StubTreq``
    (both keep it as ``_agent``), so the tests' fake CAs are reached the
    way a real CA is; an `AgentTransport` as it is.
    """
    if isinstance(http, AgentTransport):
        return http
    return AgentTransport(http._agent)


class CachingEndpointFactory:
    """
    An ``IAgentEndpointFactory`` that asks ``inner`` (Twisted's own: a
    ``HostnameEndpoint``, TLS-wrapped for https) once per scheme, host and
    port, where ``Agent`` asks it on every request.  Endpoints keep no state
    between connections, so one serves them all.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._endpoints: Dict[Tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = self._inner.endpointForURI(uri)
        return endpoint
