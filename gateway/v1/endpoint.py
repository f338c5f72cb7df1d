"""
What an endpoint of the v1 resource tree is, and what it gets: the v1
face (`gateway.v1.face.V1Face`) walks the tree to a `V1Endpoint` and calls
its ``get`` or ``post`` with a `V1Call` — the request, the URLs of the
answer, the request's scope, and the way to its verified JWS.
"""

from __future__ import annotations

from typing import Tuple

import attrs
from twisted.web import server

from gateway.operations.report import requested_names
from gateway.operations.scope import RequestScope
from gateway.translate.requests import Payload, Signer
from gateway.v1 import messages
from gateway.v1.jws import invalid_nonce, verify_v1_request
from gateway.v1.limits import posted_body
from gateway.v1.nonces import NonceIssuer
from gateway.v1.problems import V1Problem
from gateway.web import Resource, Response, client_address


@attrs.frozen
class V1Call:
    """
    One v1 request, as an endpoint of the tree sees it.

    :ivar urls: every URL the answer may name, under this request's base.
    :ivar scope: what is known of the request (its id, endpoint, signer
        and names), for logs and the report.
    """

    request: server.Request
    method: str
    urls: messages.V1URLs
    scope: RequestScope
    nonces: NonceIssuer
    max_body: int

    @property
    def address(self) -> str:
        """
        The client's address.
        """
        return client_address(self.request)

    async def signed(self, resource_name: str) -> Tuple[Signer, Payload]:
        """
        Verify this POST's JWS for the v1 resource ``resource_name``, then
        redeem its nonce — once across every process of the state: at the
        store, or in this process's memory when it serves the state alone
        (`gateway.v1.nonces`) — the signer, and the payload.

        :raises V1Problem: ``malformed`` or ``badNonce`` (400), 413 for a
            body above ``--max-body``.
        """
        request = self.request
        body = posted_body(request, self.max_body)
        verified = verify_v1_request(body, resource_name, self.nonces)
        if not await self.nonces.redeem(verified.nonce):
            raise invalid_nonce(verified.nonce)
        self.scope.thumbprint = verified.thumbprint
        self.scope.names = requested_names(resource_name, verified.payload)
        user_agent = (request.getHeader(b"user-agent") or b"").decode("latin-1")
        return Signer(verified.jwk, verified.thumbprint, self.address, user_agent), verified.payload


class V1Endpoint(Resource):
    """
    A resource of the v1 tree: its name (a bounded label for metrics and
    logs), the methods it answers, and an ``async def`` per method
    (``get``, ``post``) that returns its `Response`.

    :ivar trailing_slash: whether the path may end in ``/`` (``directory``).
    """

    isLeaf = True
    endpoint = "unknown"
    methods: Tuple[str, ...] = ()
    trailing_slash = False

    def render(self, request: server.Request) -> bytes:
        # Served through the face (`V1Face`), never rendered on its own.
        raise NotImplementedError("a v1 endpoint is answered by the v1 face")

    async def get(self, call: V1Call) -> Response:
        raise V1Problem.method_not_allowed(allowed=self.methods)

    async def post(self, call: V1Call) -> Response:
        raise V1Problem.method_not_allowed(allowed=self.methods)


class Unknown(V1Endpoint):
    """
    Whatever path the tree does not serve: a v1 404, whatever the method.
    """


