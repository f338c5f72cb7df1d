"""
The v2 resource tree, for draft-era ACME v2 clients (2018-2019) and
current ones alike, under ``/v2/``::

    /v2/directory                  Directory
    /v2/new-nonce                  NewNonce
    /v2/new-acct                   NewAccount
    /v2/acct/<id>                  Account
    /v2/new-order                  NewOrder
    /v2/order/<id>                 OrderById
    /v2/finalize/<id>              Finalize
    /v2/authz/<id>                 AuthorizationById
    /v2/chall/<authz>/<id>         ChallengeById
    /v2/cert/<id>                  CertificateById
    /v2/revoke-cert                RevokeCert
    /v2/key-change                 KeyChange

Each endpoint builds the validated request value from the verified
payload (`gateway.translate.requests`), calls its flow once, and renders
the result as Boulder's v2 front end did.  Reads answer a plain ``GET``
(the draft-era clients' way, which Let's Encrypt stopped answering in
2020) and a POST-as-GET alike; the gateway reads upstream with
POST-as-GET signed by the owning account either way.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Tuple

from twisted.web import resource, server

from gateway.translate import authorizations, directory, orders, registration, requests, revocation
from gateway.translate.authorizations import AuthorizationView
from gateway.translate.context import Context
from gateway.translate.tlssni import judged_by_gateway
from gateway.v1.jws import JSONObject, decode_json_payload, verify_jws_signature
from gateway.v2 import messages
from gateway.v2.endpoint import Unknown, V2Call, V2Endpoint, Verified
from gateway.v2.problems import V2Problem, from_upstream
from gateway.web import Resource, Response

#: An id in a URL: what the gateway's ids are made of.
_ID_CHARACTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")

PEM_CHAIN = "application/pem-certificate-chain"


def json_response(status: int, body: Mapping[str, Any],
                  headers: Tuple[Tuple[str, str], ...] = ()) -> Response:
    return Response(status, json.dumps(body).encode("utf-8"), "application/json", headers)


class Branch(Resource):
    """
    An inner node: its named children, and a v2 404 for any other segment.
    """

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
        return Unknown()


class ById(Resource):
    """
    ``…/<id>``: the resource made for a well-formed id (1-64 characters of
    ``[A-Za-z0-9_-]``), a v2 404 for any other segment.
    """

    def __init__(self, make: Callable[[str], resource.Resource]) -> None:
        super().__init__()
        self._make = make

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
        if not 0 < len(path) <= 64 or not set(path) <= _ID_CHARACTERS:
            return Unknown()
        return self._make(path.decode("ascii"))


class _Flow(V2Endpoint):
    def __init__(self, context: Context) -> None:
        super().__init__()
        self.context = context


def _reads(verified: Verified, what: str) -> None:
    """
    A POST to a resource that only answers reads must be POST-as-GET.
    """
    if verified.payload != "":
        raise V2Problem.malformed(f"POST to {what} must be POST-as-GET (an empty payload)")


def _object(verified: Verified) -> JSONObject:
    """
    The payload of a POST that asks for something: a JSON object.
    """
    if not isinstance(verified.payload, dict):
        raise V2Problem.malformed("Request payload must be a JSON object")
    return verified.payload


# -- directory and nonces ---------------------------------------------------------------


class Directory(_Flow):
    endpoint = "v2-directory"
    methods = ("GET",)

    async def get(self, call: V2Call) -> Response:
        upstream = await directory.upstream_meta(self.context)
        return json_response(200, messages.directory(call.urls, upstream.meta))


class NewNonce(V2Endpoint):
    """
    ``newNonce``: the face puts a fresh nonce on every answer; this one has
    nothing else (204 for ``GET``, 200 for ``HEAD``, as RFC 8555 says; acme-tiny
    4.0 takes either).
    """

    endpoint = "v2-new-nonce"
    methods = ("GET",)

    async def get(self, call: V2Call) -> Response:
        return Response(200 if call.method == "HEAD" else 204)


# -- accounts ---------------------------------------------------------------------------


def _account_response(status: int, call: V2Call, record: Any) -> Response:
    return json_response(status, messages.account(record),
                         (("Location", call.urls.account(record.id)),))


class NewAccount(_Flow):
    endpoint = "v2-new-account"
    methods = ("POST",)

    async def post(self, call: V2Call) -> Response:
        verified = await call.signed(jwk_only=True)
        outcome = await registration.new_account(
            self.context, requests.new_account(verified.signer, _object(verified)))
        return _account_response(201 if outcome.created else 200, call, outcome.account)


class Account(_Flow):
    endpoint = "v2-account"
    methods = ("POST",)

    def __init__(self, context: Context, account_id: str) -> None:
        super().__init__(context)
        self.account_id = account_id

    async def post(self, call: V2Call) -> Response:
        verified = await call.signed()
        payload = verified.payload if isinstance(verified.payload, dict) else {}
        updated = await registration.update_registration(
            self.context, requests.account_update(verified.signer, self.account_id, payload))
        return _account_response(200, call, updated.account)


class KeyChange(_Flow):
    endpoint = "v2-key-change"
    methods = ("POST",)

    async def post(self, call: V2Call) -> Response:
        verified = await call.signed()
        if verified.kid is None:
            raise V2Problem.malformed("keyChange must be signed with the account's key ID")
        inner = _object(verified)
        new_jwk, inner_protected, inner_payload_bytes = verify_jws_signature(inner)
        if inner_protected.get("url") != call.url:
            raise V2Problem.malformed("Inner JWS's url does not match the outer JWS's")
        inner_payload = decode_json_payload(inner_payload_bytes)
        account = await revocation.change_key(self.context, requests.key_change_v2(
            verified.signer, new_jwk, inner_payload, verified.kid))
        return _account_response(200, call, account)


# -- orders -----------------------------------------------------------------------------


def _order_response(status: int, call: V2Call, view: orders.OrderView,
                    location: bool = False) -> Response:
    error = from_upstream(view.error).to_json() if view.error is not None else None
    body = messages.order(call.urls, view.order, view.authorization_ids, view.certificate_id,
                          error)
    headers: Tuple[Tuple[str, str], ...] = ()
    if location:
        headers = (("Location", call.urls.order(view.order.id)),)
    return json_response(status, body, headers)


class NewOrder(_Flow):
    endpoint = "v2-new-order"
    methods = ("POST",)

    async def post(self, call: V2Call) -> Response:
        verified = await call.signed()
        view = await orders.new_order(self.context,
                                      requests.new_order(verified.signer, _object(verified)))
        return _order_response(201, call, view, location=True)


class OrderById(_Flow):
    endpoint = "v2-order"
    methods = ("GET", "POST")

    def __init__(self, context: Context, order_id: str) -> None:
        super().__init__(context)
        self.order_id = order_id

    async def get(self, call: V2Call) -> Response:
        return _order_response(200, call, await orders.read_order(self.context, self.order_id))

    async def post(self, call: V2Call) -> Response:
        _reads(await call.signed(readable=True), "an order")
        return await self.get(call)


class Finalize(_Flow):
    endpoint = "v2-finalize"
    methods = ("POST",)

    def __init__(self, context: Context, order_id: str) -> None:
        super().__init__(context)
        self.order_id = order_id

    async def post(self, call: V2Call) -> Response:
        verified = await call.signed()
        request = requests.finalize_order(verified.signer, self.order_id, _object(verified))
        call.scope.names = tuple(sorted(n.spelled for n in request.csr.names))
        view = await orders.finalize_order(self.context, request)
        return _order_response(200, call, view, location=True)


# -- authorizations and challenges ------------------------------------------------------


def _error_documents(view: AuthorizationView) -> Mapping[str, JSONObject]:
    return {challenge_id: from_upstream(error).to_json()
            for challenge_id, error in view.errors.items()}


def _shown(view: AuthorizationView) -> Tuple[Any, ...]:
    """
    The CA's challenges: the gateway's own tls-sni-01 is for v1 clients.
    """
    return tuple(c for c in view.challenges if not judged_by_gateway(c))


class AuthorizationById(_Flow):
    endpoint = "v2-authz"
    methods = ("GET", "POST")

    def __init__(self, context: Context, authorization_id: str) -> None:
        super().__init__(context)
        self.authorization_id = authorization_id

    def _response(self, call: V2Call, view: AuthorizationView) -> Response:
        return json_response(200, messages.authorization(
            call.urls, view.authorization, _shown(view), _error_documents(view)))

    async def get(self, call: V2Call) -> Response:
        view = await authorizations.read_authorization(self.context, self.authorization_id)
        return self._response(call, view)

    async def post(self, call: V2Call) -> Response:
        verified = await call.signed(readable=True)
        if verified.payload == "":
            return await self.get(call)
        view = await authorizations.deactivate_authorization(self.context, requests.deactivate_authz(
            verified.signer, self.authorization_id, _object(verified)))
        return self._response(call, view)


class ChallengeById(_Flow):
    """
    A challenge.  A POST answers it -- and answers a challenge that is not
    pending any more (an authorization the CA reused) with the challenge
    unchanged, as Boulder did: acme-tiny 4.0 and certbot 0.2x answer every
    challenge they chose, valid or not, and the CA (Pebble) refuses to
    update a valid one.
    """

    endpoint = "v2-challenge"
    methods = ("GET", "POST")

    def __init__(self, context: Context, authorization_id: str, challenge_id: str) -> None:
        super().__init__(context)
        self.authorization_id = authorization_id
        self.challenge_id = challenge_id

    def _response(self, call: V2Call, view: AuthorizationView, challenge: Any) -> Response:
        body = messages.challenge(call.urls, view.authorization, challenge,
                                  _error_documents(view).get(challenge.id))
        return json_response(200, body, (
            ("Link", messages.link(call.urls.authz(view.authorization.id), "up")),
            ("Location", call.urls.challenge(view.authorization.id, challenge.id)),
        ))

    async def get(self, call: V2Call) -> Response:
        view, challenge = await authorizations.read_challenge(
            self.context, self.authorization_id, self.challenge_id)
        return self._response(call, view, challenge)

    async def post(self, call: V2Call) -> Response:
        verified = await call.signed(readable=True)
        if verified.payload == "":
            return await self.get(call)
        view, challenge = await authorizations.answer_challenge(
            self.context, requests.answer_challenge(
                verified.signer, self.authorization_id, self.challenge_id, _object(verified)))
        return self._response(call, view, challenge)


# -- certificates -----------------------------------------------------------------------


class CertificateById(_Flow):
    endpoint = "v2-certificate"
    methods = ("GET", "POST")

    def __init__(self, context: Context, certificate_id: str) -> None:
        super().__init__(context)
        self.certificate_id = certificate_id

    async def get(self, call: V2Call) -> Response:
        chain = await orders.read_chain(self.context, self.certificate_id)
        return Response(200, messages.pem_chain(chain.certificate.leaf_der, chain.issuers),
                        PEM_CHAIN)

    async def post(self, call: V2Call) -> Response:
        _reads(await call.signed(readable=True), "a certificate")
        return await self.get(call)


class RevokeCert(_Flow):
    endpoint = "v2-revoke-cert"
    methods = ("POST",)

    async def post(self, call: V2Call) -> Response:
        verified = await call.signed()
        await revocation.revoke_certificate(
            self.context, requests.revoke(verified.signer, _object(verified)))
        return Response(200, b"", None)


# -- the tree ---------------------------------------------------------------------------


def v2_tree(context: Context) -> resource.Resource:
    """
    The v2 resources over ``context``, below ``/v2``.
    """
    root = Branch()
    root.putChild(b"directory", Directory(context))
    root.putChild(b"new-nonce", NewNonce())
    root.putChild(b"new-acct", NewAccount(context))
    root.putChild(b"acct", ById(lambda id: Account(context, id)))
    root.putChild(b"new-order", NewOrder(context))
    root.putChild(b"order", ById(lambda id: OrderById(context, id)))
    root.putChild(b"finalize", ById(lambda id: Finalize(context, id)))
    root.putChild(b"authz", ById(lambda id: AuthorizationById(context, id)))
    root.putChild(b"chall", ById(
        lambda authz_id: ById(lambda id: ChallengeById(context, authz_id, id))))
    root.putChild(b"cert", ById(lambda id: CertificateById(context, id)))
    root.putChild(b"revoke-cert", RevokeCert(context))
    root.putChild(b"key-change", KeyChange(context))
    return root
