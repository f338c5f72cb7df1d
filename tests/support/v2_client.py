"""
A minimal ACME v2 client on treq, for tests that drive the gateway's v2
face request by request, the way draft-era clients do (plain ``GET`` reads,
``kid`` of any URL, ``resource`` members) or as RFC 8555 says (POST-as-GET).
The real v2 clients run in ``tests/e2e``.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import attrs
import treq

from gateway.keys.jose import sign_flattened
from tests.support.v1_client import Reply, _reply

#: Stands for the empty payload of POST-as-GET.
POST_AS_GET = None


@attrs.define
class V2TestClient:
    """
    Signs v2 requests with ``key``; ``kid`` is the account URL it signs
    with (``None``: the ``jwk``).  Keeps the last ``Replay-Nonce``.
    """

    directory_url: str
    key: Any
    http: Any = attrs.field(factory=lambda: treq)
    kid: Optional[str] = None
    nonce: Optional[str] = None
    directory: Optional[dict] = None

    async def get(self, url: str, method: str = "GET", **kwargs) -> Reply:
        reply = await _reply(await self.http.request(method, url, **kwargs))
        self.nonce = reply.header("replay-nonce") or self.nonce
        return reply

    async def load_directory(self) -> dict:
        self.directory = (await self.get(self.directory_url)).json()
        return self.directory

    async def fresh_nonce(self) -> str:
        directory = self.directory or await self.load_directory()
        return (await self.get(directory["newNonce"], method="HEAD")).header("replay-nonce")

    async def post(self, url: str, payload: Any, *, key=None, kid: Any = "default",
                   nonce: Optional[str] = None, content_type: Optional[str] = "application/jose+json",
                   signed_url: Optional[str] = None) -> Reply:
        """
        POST ``payload`` (``POST_AS_GET`` for an empty one) to ``url``.
        """
        key = key or self.key
        kid = self.kid if kid == "default" else kid
        if nonce is None:
            nonce = self.nonce or await self.fresh_nonce()
            self.nonce = None
        protected = {"nonce": nonce, "url": signed_url or url}
        if kid is None:
            protected["jwk"] = key.public_jwk_json
        else:
            protected["kid"] = kid
        body = json.dumps(sign_flattened(key, payload, protected)).encode("utf-8")
        headers = {"Content-Type": [content_type]} if content_type else {}
        reply = await _reply(await self.http.post(url, data=body, headers=headers))
        self.nonce = reply.header("replay-nonce")
        return reply

    async def new_account(self, payload: Optional[dict] = None) -> Reply:
        directory = self.directory or await self.load_directory()
        reply = await self.post(directory["newAccount"], payload or {"termsOfServiceAgreed": True},
                                kid=None)
        if reply.status in (200, 201):
            self.kid = reply.header("location")
        return reply
