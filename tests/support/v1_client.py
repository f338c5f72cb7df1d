"""
A minimal ACME v1 client on treq, for tests that drive the gateway's v1
face request by request (the real legacy clients run in ``tests/e2e``).
"""

import json

import attrs
import treq

from tests.support.v1_signing import sign_v1


@attrs.frozen
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def links(self, rel):
        from gateway.upstream.messages import parse_links

        return parse_links(self.headers.get("link", [])).get(rel, [])


async def _reply(response) -> Reply:
    body = await response.content()
    headers = {}
    for name, values in response.headers.getAllRawHeaders():
        headers[name.decode().lower()] = [v.decode("latin-1") for v in values]
    return Reply(response.code, headers, body)


@attrs.define
class V1TestClient:
    """
    Signs v1 requests with ``key`` and keeps the last ``Replay-Nonce``.
    """

    base: str
    key: object
    http: object = attrs.field(factory=lambda: treq)
    nonce: str = None
    #: The User-Agent to send with POSTs (none by default).
    user_agent: str = None

    async def get(self, url, method="GET") -> Reply:
        reply = await _reply(await self.http.request(method, url))
        self.nonce = reply.header("replay-nonce") or self.nonce
        return reply

    async def fresh_nonce(self) -> str:
        reply = await self.get(self.base + "/directory", method="HEAD")
        return reply.header("replay-nonce")

    async def post(self, url, payload, key=None, nonce=None, **options) -> Reply:
        key = key or self.key
        if nonce is None:
            nonce = self.nonce or await self.fresh_nonce()
            self.nonce = None
        body = sign_v1(key, payload, nonce, **options)
        extra = {"headers": {"User-Agent": [self.user_agent]}} if self.user_agent else {}
        reply = await _reply(await self.http.post(url, data=body, **extra))
        self.nonce = reply.header("replay-nonce")
        return reply

    async def directory(self) -> dict:
        return (await self.get(self.base + "/directory")).json()
