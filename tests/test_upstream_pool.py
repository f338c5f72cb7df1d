"""
The upstream HTTP client keeps its connections to the CA open between
bursts (`gateway.upstream.client.https_client`): 32 requests in flight at
once, then 32 more, open 32 connections, not 32 plus one per request the
pool could not keep.
"""

import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.web import resource, server

from gateway.upstream.client import https_client

BURST = 32


class Held(resource.Resource):
    """
    Answers once ``BURST`` requests are waiting, so that they are all in
    flight (each on its own connection) at the same time.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.waiting = []

    def render_GET(self, request):
        self.waiting.append(request)
        if len(self.waiting) == BURST:
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
async def test_connections_are_kept_between_bursts():
    site = CountingSite(Held())
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    client = https_client(reactor)
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/"
        for _ in range(2):
            responses = await defer.gatherResults(
                [defer.ensureDeferred(client.get(url)) for _ in range(BURST)])
            bodies = await defer.gatherResults([defer.ensureDeferred(treq.content(r))
                                                for r in responses])
            assert bodies == [b"ok"] * BURST
        assert site.connections == BURST
    finally:
        await client._agent._pool.closeCachedConnections()
        await port.stopListening()
