"""
The ACME v1 resource tree: Boulder's v1 API, one `twisted.web` resource
per endpoint, at Boulder's own paths (some legacy clients hard-code them
rather than read the directory)::

    /directory                      Directory
    /terms                          Terms
    /acme/new-reg                   NewReg
    /acme/reg/<id>                  Registration
    /acme/new-authz                 NewAuthz
    /acme/authz/<id>                Authorization
    /acme/challenge/<authz>/<id>    Challenge
    /acme/new-cert                  NewCert
    /acme/cert/<id>                 Certificate
    /acme/issuer-cert/<id>          IssuerCertificate
    /acme/revoke-cert               RevokeCert
    /acme/key-change                KeyChange

Each endpoint does three things: it builds the validated request value
from the verified payload (`gateway.translate.requests`), calls its flow
once with it, and renders the result with the status codes and headers
legacy clients rely on (201 and ``Location`` for new objects, ``Link``
``next``/``up``/``terms-of-service``, DER certificates).  What every
request gets besides — nonces, request ids, problem documents, logs,
metrics, the report — is the face's (`gateway.v1.face.V1Face`), which
wraps this tree.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import josepy
from twisted.web import resource, server

from gateway.store import Certificate
from gateway.translate import authorizations, directory, issuance, registration, requests, revocation
from gateway.translate.authorizations import AuthorizationView
from gateway.translate.context import Context
from gateway.translate.requests import Payload
from gateway.v1 import messages
from gateway.v1.endpoint import Unknown, V1Call, V1Endpoint
from gateway.v1.jws import loads_bounded, verify_jws_signature
from gateway.v1.problems import V1Problem, from_upstream
from gateway.web import Resource, Response

_ID = re.compile(rb"^[A-Za-z0-9_-]{1,64}$")


def json_response(status: int, body: Mapping[str, Any],
                  headers: Tuple[Tuple[str, str], ...] = ()) -> Response:
    return Response(status, json.dumps(body).encode("utf-8"), "application/json", headers)


class Branch(Resource):
    """
    An inner node of the tree: its named children, and a v1 404 for any
    other segment.
    """

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
        return Unknown()


class ById(Resource):
    """
    ``…/<id>``: the resource made for a well-formed id (a v1 404 for any
    other segment: an id is 1–64 characters of ``[A-Za-z0-9_-]``).
    """

    def __init__(self, make: Callable[[str], resource.Resource]) -> None:
        super().__init__()
        self._make = make

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
        if not _ID.match(path):
            return Unknown()
        return self._make(path.decode("ascii"))


class _Flow(V1Endpoint):
    """
    An endpoint over the translation layer.
    """

    def __init__(self, context: Context) -> None:
        super().__init__()
        self.context = context

    def agreed_terms(self, urls: messages.V1URLs) -> Optional[str]:
        """
        The terms a registration shows as agreed when the client sent none.
        """
        return urls.terms if self.context.policy.agree_to_terms else None


# -- directory and terms ----------------------------------------------------------


#: Base URLs whose directory answer is kept (only one with ``--base-url``;
#: without it, one per ``Host`` clients use, which a client chooses).
DIRECTORY_ANSWERS_KEPT = 16


class Directory(_Flow):
    """
    The v1 directory: the same bytes for every request under one base URL
    (until the upstream directory is fetched again), so it is built and
    encoded once per base URL, not per request — JSON encoding was 3 % of
    the py-spy samples of ``HEAD /directory`` at 64 connections.
    """

    endpoint = "directory"
    methods = ("GET",)
    trailing_slash = True

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        #: base URL → (the upstream ``meta`` it was built from, the answer).
        self._answers: Dict[str, Tuple[Mapping[str, Any], Response]] = {}

    async def get(self, call: V1Call) -> Response:
        upstream = await directory.upstream_meta(self.context)
        base = call.urls.base
        kept = self._answers.get(base)
        if kept is not None and kept[0] is upstream.meta:
            return kept[1]
        answer = json_response(200, messages.directory(call.urls, upstream.meta))
        if base not in self._answers and len(self._answers) >= DIRECTORY_ANSWERS_KEPT:
            del self._answers[next(iter(self._answers))]
        self._answers[base] = (upstream.meta, answer)
        return answer


class Terms(_Flow):
    endpoint = "terms"
    methods = ("GET",)

    async def get(self, call: V1Call) -> Response:
        upstream = await directory.upstream_meta(self.context)
        terms = upstream.terms_of_service
        if not terms:
            raise V1Problem.not_found("The upstream CA publishes no terms of service")
        if terms.startswith(("http://", "https://")):
            return Response(302, b"", None, (("Location", terms),))
        if terms.startswith("data:"):
            header, _, data = terms[5:].partition(",")
            content_type = header.split(";")[0] or "text/plain"
            if ";base64" in header:
                try:
                    body = base64.b64decode(data + "=" * (-len(data) % 4))
                except binascii.Error:
                    # The CA's input, not a bug of ours: answered like any
                    # other terms the gateway cannot serve.
                    raise V1Problem.not_found("The upstream terms of service are not fetchable") from None
            else:
                body = urllib.parse.unquote_to_bytes(data)
            if not re.match(r"^[a-z]+/[a-z0-9.+-]+$", content_type):
                content_type = "text/plain"
            return Response(200, body, content_type)
        raise V1Problem.not_found("The upstream terms of service are not fetchable")


# -- registrations ------------------------------------------------------------------


def _registration_links(urls: messages.V1URLs) -> Tuple[Tuple[str, str], ...]:
    return (
        ("Link", messages.link(urls.new_authz, "next")),
        ("Link", messages.link(urls.terms, "terms-of-service")),
    )


class NewReg(_Flow):
    endpoint = "new-reg"
    methods = ("POST",)

    async def post(self, call: V1Call) -> Response:
        signer, payload = await call.signed("new-reg")
        outcome = await registration.new_registration(
            self.context, requests.new_reg(signer, payload))
        location = call.urls.reg(outcome.account.id)
        if not outcome.created:
            raise V1Problem.conflict("Registration key is already in use", location=location)
        return json_response(
            201,
            messages.registration(outcome.account),
            (("Location", location),) + _registration_links(call.urls),
        )


class Registration(_Flow):
    endpoint = "reg"
    methods = ("POST",)

    def __init__(self, context: Context, registration_id: str) -> None:
        super().__init__(context)
        self.registration_id = registration_id

    async def post(self, call: V1Call) -> Response:
        signer, payload = await call.signed("reg")
        updated = await registration.update_registration(
            self.context, requests.reg_update(signer, self.registration_id, payload))
        return json_response(
            200 if updated.deactivated else 202,
            messages.registration(updated.account, self.agreed_terms(call.urls)),
            _registration_links(call.urls),
        )


class KeyChange(_Flow):
    endpoint = "key-change"
    methods = ("POST",)

    async def post(self, call: V1Call) -> Response:
        signer, payload = await call.signed("key-change")
        new_jwk, inner_payload = inner_jws(payload)
        account = await revocation.change_key(
            self.context, requests.key_change(signer, new_jwk, inner_payload, call.urls.reg))
        return json_response(200, messages.registration(account, self.agreed_terms(call.urls)),
                             _registration_links(call.urls))


def inner_jws(payload: Payload) -> Tuple[josepy.JWK, Payload]:
    """
    The inner JWS of a v1 key change (the outer payload, less its
    ``resource``), verified as any v1 JWS is, but with neither nonce nor
    ``resource``: the new key that signed it, and its payload.

    :raises V1Problem: ``malformed``.
    """
    inner = {k: v for k, v in payload.items() if k != "resource"}
    new_jwk, _, inner_payload_bytes = verify_jws_signature(inner)
    try:
        inner_payload = loads_bounded(inner_payload_bytes)
    except ValueError:
        raise V1Problem.malformed("Inner JWS payload is not JSON")
    if not isinstance(inner_payload, dict):
        raise V1Problem.malformed("Inner JWS payload is not a JSON object")
    return new_jwk, inner_payload


# -- authorizations and challenges ---------------------------------------------------


def _error_documents(view: AuthorizationView) -> Dict[str, Dict[str, Any]]:
    """
    The v1 error document of each failed challenge of an authorization:
    the CA's reason, translated, or the gateway's own check's (tls-sni-01,
    in Boulder's words and types).
    """
    documents = {challenge_id: from_upstream(error).to_json()
                 for challenge_id, error in view.errors.items()}
    for challenge_id, checked in view.checks.items():
        if checked.problem is not None:
            problem = checked.problem
            documents[challenge_id] = V1Problem(problem.code, problem.detail,
                                                problem.status).to_json()
    return documents


def _validation_records(view: AuthorizationView) -> Dict[str, Tuple[Mapping[str, Any], ...]]:
    """
    Boulder's validation record of each challenge the gateway checked.
    """
    return {challenge_id: checked.record for challenge_id, checked in view.checks.items()}


def _authorization_response(status: int, urls: messages.V1URLs, view: AuthorizationView,
                            location: bool = False) -> Response:
    headers: Tuple[Tuple[str, str], ...] = (("Link", messages.link(urls.new_cert, "next")),)
    if location:
        headers = (("Location", urls.authz(view.authorization.id)),) + headers
    body = messages.authorization(
        urls, view.authorization, view.challenges, view.thumbprint, _error_documents(view),
        _validation_records(view))
    return json_response(status, body, headers)


class NewAuthz(_Flow):
    endpoint = "new-authz"
    methods = ("POST",)

    async def post(self, call: V1Call) -> Response:
        signer, payload = await call.signed("new-authz")
        view = await authorizations.new_authorization(
            self.context, requests.new_authz(signer, payload))
        return _authorization_response(201, call.urls, view, location=True)


class Authorization(_Flow):
    endpoint = "authz"
    methods = ("GET", "POST")

    def __init__(self, context: Context, authorization_id: str) -> None:
        super().__init__(context)
        self.authorization_id = authorization_id

    async def get(self, call: V1Call) -> Response:
        view = await authorizations.read_authorization(self.context, self.authorization_id)
        return _authorization_response(200, call.urls, view)

    async def post(self, call: V1Call) -> Response:
        signer, payload = await call.signed("authz")
        view = await authorizations.deactivate_authorization(
            self.context, requests.deactivate_authz(signer, self.authorization_id, payload))
        return _authorization_response(200, call.urls, view)


class Challenge(_Flow):
    endpoint = "challenge"
    methods = ("GET", "POST")

    def __init__(self, context: Context, authorization_id: str, challenge_id: str) -> None:
        super().__init__(context)
        self.authorization_id = authorization_id
        self.challenge_id = challenge_id

    async def get(self, call: V1Call) -> Response:
        view, challenge = await authorizations.read_challenge(
            self.context, self.authorization_id, self.challenge_id)
        return self._response(call.urls, view, challenge)

    async def post(self, call: V1Call) -> Response:
        signer, payload = await call.signed("challenge")
        view, challenge = await authorizations.answer_challenge(
            self.context, requests.answer_challenge(
                signer, self.authorization_id, self.challenge_id, payload))
        return self._response(call.urls, view, challenge)

    @staticmethod
    def _response(urls: messages.V1URLs, view: AuthorizationView,
                  challenge: Any) -> Response:
        uri = urls.challenge(view.authorization.id, challenge.id)
        body = messages.challenge(urls, view.authorization, challenge, view.thumbprint,
                                  _error_documents(view).get(challenge.id),
                                  _validation_records(view).get(challenge.id))
        return json_response(
            202, body,
            (("Location", uri), ("Link", messages.link(urls.authz(view.authorization.id), "up"))),
        )


# -- certificates ------------------------------------------------------------------


def _certificate_response(status: int, urls: messages.V1URLs, certificate: Certificate,
                          location: bool = False) -> Response:
    headers = tuple(("Link", link) for link in
                    messages.certificate_links(urls, certificate.issuer_ids))
    if location:
        headers = (("Location", urls.cert(certificate.id)),) + headers
    return Response(status, certificate.leaf_der, "application/pkix-cert", headers)


class NewCert(_Flow):
    endpoint = "new-cert"
    methods = ("POST",)

    async def post(self, call: V1Call) -> Response:
        signer, payload = await call.signed("new-cert")
        request = requests.new_cert(signer, payload)
        call.scope.names = request.names
        certificate = await issuance.new_certificate(self.context, request)
        return _certificate_response(201, call.urls, certificate, location=True)


class CertificateById(_Flow):
    endpoint = "cert"
    methods = ("GET",)

    def __init__(self, context: Context, certificate_id: str) -> None:
        super().__init__(context)
        self.certificate_id = certificate_id

    async def get(self, call: V1Call) -> Response:
        certificate = await issuance.read_certificate(self.context, self.certificate_id)
        return _certificate_response(200, call.urls, certificate)


class IssuerCertificate(_Flow):
    endpoint = "issuer-cert"
    methods = ("GET",)

    def __init__(self, context: Context, issuer_id: str) -> None:
        super().__init__(context)
        self.issuer_id = issuer_id

    async def get(self, call: V1Call) -> Response:
        issuer, parent = await issuance.read_issuer(self.context, self.issuer_id)
        headers = (("Link", messages.link(call.urls.issuer(parent), "up")),) if parent else ()
        return Response(200, issuer.der, "application/pkix-cert", headers)


class RevokeCert(_Flow):
    endpoint = "revoke-cert"
    methods = ("POST",)

    async def post(self, call: V1Call) -> Response:
        signer, payload = await call.signed("revoke-cert")
        await revocation.revoke_certificate(self.context, requests.revoke(signer, payload))
        return Response(200, b"", None)


# -- the tree ----------------------------------------------------------------------


def v1_tree(context: Context) -> resource.Resource:
    """
    The v1 resources over ``context``, at Boulder's paths.
    """
    root = Branch()
    root.putChild(b"", Directory(context))
    root.putChild(b"directory", Directory(context))
    root.putChild(b"terms", Terms(context))
    acme = Branch()
    root.putChild(b"acme", acme)
    acme.putChild(b"new-reg", NewReg(context))
    acme.putChild(b"reg", ById(lambda id: Registration(context, id)))
    acme.putChild(b"new-authz", NewAuthz(context))
    acme.putChild(b"authz", ById(lambda id: Authorization(context, id)))
    acme.putChild(b"challenge", ById(
        lambda authz_id: ById(lambda id: Challenge(context, authz_id, id))))
    acme.putChild(b"new-cert", NewCert(context))
    acme.putChild(b"cert", ById(lambda id: CertificateById(context, id)))
    acme.putChild(b"issuer-cert", ById(lambda id: IssuerCertificate(context, id)))
    acme.putChild(b"revoke-cert", RevokeCert(context))
    acme.putChild(b"key-change", KeyChange(context))
    return root
