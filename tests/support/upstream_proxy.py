"""
A TLS pass-through in front of Pebble that a test controls: it counts what
the gateway asks of the CA, and can hold or drop a request at the moment a
test wants to break something (kill the gateway between finalize and
certificate download, stop the CA in the middle of a flow).

It can also lose the CA's answers: `UpstreamProxy.lose_answers` forwards
chosen requests, lets the CA act on them, and then drops the connection
instead of passing the answer back, as a network failure after the CA
committed would.

It runs in the test's reactor; the gateway talks to it as if it were the CA
(``https://localhost:<port>/dir``, same TLS trust as Pebble).  The ``Host``
header is passed on, so the URLs Pebble builds point back at the proxy.
"""

from __future__ import annotations

import collections
from typing import Callable, Optional

from twisted.internet import defer, ssl
from twisted.web import resource, server
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, readBody
from twisted.web.http_headers import Headers

from gateway.upstream.client import trust_root


class UpstreamProxy(resource.Resource):
    """
    Forwards every request to ``target`` (``https://localhost:<pebble port>``).

    :ivar counts: requests by first path segment (``order-plz``, ``certZ``…).
    :ivar hook: ``hook(method, path) -> Deferred or None``, called before a
        request is forwarded; a Deferred holds the request until it fires;
        firing it with ``"drop"`` aborts the connection instead.
    :ivar answered_hook: ``answered_hook(method, path, status)``, called once
        the CA has answered a request, before the answer is passed on.
    :ivar lost: answers dropped by `lose_answers`, by first path segment.
    """

    isLeaf = True

    def __init__(self, reactor, target: str, ca_bundle: str):
        super().__init__()
        self.reactor = reactor
        self.target = target.rstrip("/")
        self.agent = Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trust_root(ca_bundle)))
        self.counts: collections.Counter = collections.Counter()
        self.lost: collections.Counter = collections.Counter()
        #: Answers of 201 Created passed back, by first path segment: the
        #: orders (or accounts) the CA made, not the requests that asked.
        self.created: collections.Counter = collections.Counter()
        self.hook: Optional[Callable] = None
        self.answered_hook: Optional[Callable] = None
        self._losses: list = []  # [method, path prefix, answers still to lose]

    def lose_answers(self, path_prefix: str, times: int = 1, method: str = "POST") -> None:
        """
        Forward the next ``times`` ``method`` requests whose path starts with
        ``path_prefix`` to the CA, then drop the connection instead of
        passing the CA's answer back.
        """
        self._losses.append([method, path_prefix, times])

    def _loses(self, method: str, path: str) -> bool:
        for loss in self._losses:
            if loss[2] > 0 and loss[0] == method and path.startswith(loss[1]):
                loss[2] -= 1
                return True
        return False

    def render(self, request):
        defer.ensureDeferred(self._forward(request))
        return server.NOT_DONE_YET

    async def _forward(self, request):
        path = request.uri.decode("latin-1")
        method = request.method.decode("ascii")
        self.counts[path.strip("/").split("/")[0] or "/"] += 1
        if self.hook is not None:
            held = self.hook(method, path)
            if held is not None and (await held) == "drop":
                _abort(request)
                return
        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() in (b"connection", b"content-length", b"accept-encoding"):
                continue
            for value in values:
                headers.addRawHeader(name, value)
        body = request.content.read()
        from twisted.web.client import FileBodyProducer
        import io

        producer = FileBodyProducer(io.BytesIO(body)) if body else None
        try:
            response = await self.agent.request(
                request.method, (self.target + path).encode("ascii"), headers, producer
            )
            content = await readBody(response)
        except Exception:
            if not request.finished and not request._disconnected:
                request.setResponseCode(502)
                request.write(b"upstream unreachable")
                request.finish()
            return
        if self.answered_hook is not None:
            self.answered_hook(method, path, response.code)
        if response.code == 201:
            self.created[path.strip("/").split("/")[0] or "/"] += 1
        if self._loses(method, path):
            self.lost[path.strip("/").split("/")[0] or "/"] += 1
            _abort(request)
            return
        if request._disconnected:
            return
        request.setResponseCode(response.code)
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() in (b"content-length", b"connection", b"transfer-encoding"):
                continue
            for value in values:
                request.responseHeaders.addRawHeader(name, value)
        request.write(content)
        request.finish()


def _abort(request) -> None:
    """
    Drop the gateway's connection (unless the gateway is gone already).
    """
    if request.channel is not None and request.channel.transport is not None:
        request.channel.transport.abortConnection()


def listen_proxy(reactor, proxy: UpstreamProxy, port: int, tls: dict):
    """
    Serve ``proxy`` over TLS on 127.0.0.1:``port`` with Pebble's certificate
    (``tls`` as made by `gateway.process.devstack.make_tls_certificates`).
    """
    with open(tls["key"], "rb") as f:
        key = f.read()
    with open(tls["cert"], "rb") as f:
        cert = f.read()
    options = ssl.PrivateCertificate.loadPEM(key + cert).options()
    site = server.Site(proxy)
    site.noisy = False
    return reactor.listenSSL(port, site, options, interface="127.0.0.1")
