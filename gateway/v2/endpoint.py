"""
What an endpoint of the v2 resource tree is, and what it gets: the v2
face (`gateway.v2.face.V2Face`) walks the tree to a `V2Endpoint` and calls
its ``get`` or ``post`` with a `V2Call` -- the request, the URLs of the
answer, the request's scope, and the way to its verified JWS.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

import attrs
from twisted.web import server

from gateway.operations.scope import RequestScope
from gateway.translate import orders
from gateway.translate.context import Context
from gateway.translate.requests import Signer
from gateway.v1.limits import posted_body
from gateway.v1.nonces import NonceIssuer
from gateway.v2 import jws
from gateway.v2.messages import V2URLs
from gateway.v2.problems import V2Problem
from gateway.web import Resource, Response, client_address

#: The keys a ``kid`` may stand for: ``(kid, the gateway account id it
#: names or None)`` → candidates, most likely first.
KeyFinder = Callable[[str, Optional[int]], Awaitable[Sequence[jws.CandidateKey]]]

#: How many ``kid`` → key pairs `KidKeys` remembers.
_REMEMBERED = 1024


class KidKeys:
    """
    The keys a ``kid`` may stand for (`gateway.translate.orders.keys_for_kid`),
    the one that verified for that ``kid`` last time first: a ``kid`` the
    gateway cannot tie to a key (another CA's account URL) costs trying the
    held keys once, then one verification per request.  Lost harmlessly at
    a restart.
    """

    def __init__(self, context: Context) -> None:
        self._context = context
        self._verified: Dict[str, str] = {}

    async def __call__(self, kid: str, account_id: Optional[int]) -> List[orders.KnownKey]:
        keys = await orders.keys_for_kid(self._context, kid, account_id)
        last = self._verified.get(kid)
        if last is not None:
            keys.sort(key=lambda key: key.thumbprint != last)
        return keys

    def verified(self, kid: str, thumbprint: str) -> None:
        if len(self._verified) >= _REMEMBERED and kid not in self._verified:
            self._verified.clear()
        self._verified[kid] = thumbprint


@attrs.frozen
class V2Call:
    """
    One v2 request, as an endpoint of the tree sees it.

    :ivar url: the URL the request was sent to, as a JWS must name it.
    :ivar keys: the keys a ``kid`` may stand for.
    """

    request: server.Request
    method: str
    urls: V2URLs
    url: str
    scope: RequestScope
    nonces: NonceIssuer
    max_body: int
    keys: KidKeys

    @property
    def address(self) -> str:
        return client_address(self.request)

    def _body(self) -> bytes:
        return posted_body(self.request, self.max_body)

    async def signed(self, readable: bool = False, jwk_only: bool = False) -> "Verified":
        """
        Verify this POST's JWS (whatever its ``Content-Type``): the signer,
        the payload (``""`` for POST-as-GET) and the ``kid``.

        :param readable: the resource is one a plain ``GET`` reads too, so
            a POST-as-GET of it needs no redeemable nonce (`gateway.v2.jws`).
        :param jwk_only: the request must carry its key (``newAccount``).
        :raises V1Problem, V2Problem: ``malformed``, ``badNonce``,
            ``accountDoesNotExist``; 413 above ``--max-body``.
        """
        signed = jws.parse(self._body(), self.url)
        if jwk_only and signed.jwk is None:
            raise V2Problem.malformed("No embedded JWK in JWS header")
        candidates: Sequence[jws.CandidateKey] = ()
        if signed.kid is not None:
            candidates = await self.keys(signed.kid, self.urls.account_id_of(signed.kid))
        jwk, thumbprint = jws.verify(signed, candidates)
        if signed.kid is not None:
            self.keys.verified(signed.kid, thumbprint)
        await jws.redeem_nonce(signed, self.nonces, required=not (readable and signed.post_as_get))
        payload = jws.payload(signed)
        self.scope.thumbprint = thumbprint
        return Verified(Signer(jwk, thumbprint, self.address), payload, signed.kid)


@attrs.frozen
class Verified:
    """
    A v2 POST whose JWS verified: who signed, what, and with which ``kid``
    (`None` for a request that carried its ``jwk``).
    """

    signer: Signer
    payload: jws.V2Payload
    kid: Optional[str]


class V2Endpoint(Resource):
    """
    A resource of the v2 tree: its name (a bounded label for logs and the
    report), the methods it answers, and an ``async def`` per method.
    """

    isLeaf = True
    endpoint = "v2-unknown"
    methods: Tuple[str, ...] = ()

    def render(self, request: server.Request) -> bytes:
        raise NotImplementedError("a v2 endpoint is answered by the v2 face")

    async def get(self, call: V2Call) -> Response:
        raise V2Problem.method_not_allowed(self.methods)

    async def post(self, call: V2Call) -> Response:
        raise V2Problem.method_not_allowed(self.methods)


class Unknown(V2Endpoint):
    """
    Whatever path the tree does not serve: a v2 404, whatever the method.
    """
