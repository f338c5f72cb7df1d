"""
The ACME v1 face: a twisted.web resource that serves Boulder's v1 API to
legacy clients.

Every request crosses this module once: it is routed by path, a POST body is
verified as a v1 JWS (signature, nonce, ``resource``) before anything else
happens, the translation layer does the work, and the result is rendered
with the headers legacy clients rely on.  Every response, errors and HEAD
included, carries a fresh ``Replay-Nonce``.  Every failure becomes a v1
problem document (``application/problem+json``, ``urn:acme:error:*``):
clients never see a traceback or a v2 error type.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any, Optional

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from gateway.v1.nonces import NonceIssuer
from gateway.operations.report import problem_text, requested_names, visit_for
from gateway.operations.scope import RequestScope, current, request_id_from, run_in_scope
from gateway.v1.problems import V1Problem, from_upstream, problem_for
from gateway.translate.errors import UpstreamFailed, UpstreamRefused
from gateway.upstream.errors import UpstreamProblem
from gateway.translate import authorizations, directory, issuance, registration, requests, revocation
from gateway.translate.context import Context
from gateway.translate.requests import Signer
from gateway.upstream.errors import UpstreamError
from gateway.v1 import messages
from gateway.v1.jws import VerifiedRequest, loads_bounded, verify_jws_signature, verify_v1_request
from gateway.v1.limits import DEFAULT_MAX_BODY, too_large
_ID = r"[A-Za-z0-9_-]{1,64}"
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


@attrs.frozen
class V1Response:
    """
    A response ready to write.
    """

    status: int
    body: bytes = b""
    content_type: Optional[str] = "application/json"
    headers: tuple = ()


def json_response(status: int, body: dict, headers=()) -> V1Response:
    return V1Response(status, json.dumps(body).encode("utf-8"), "application/json", tuple(headers))


def problem_response(problem: V1Problem) -> V1Response:
    return V1Response(
        problem.status,
        problem.body(),
        "application/problem+json",
        tuple(problem.headers.items()),
    )


@attrs.frozen
class Route:
    """
    One path pattern, the methods it answers, and its handler's name.
    """

    pattern: re.Pattern
    methods: tuple
    name: str


ROUTES = (
    Route(re.compile(r"^/directory/?$"), ("GET",), "directory"),
    Route(re.compile(r"^/acme/new-reg$"), ("POST",), "new_reg"),
    Route(re.compile(rf"^/acme/reg/({_ID})$"), ("POST",), "reg"),
    Route(re.compile(r"^/acme/new-authz$"), ("POST",), "new_authz"),
    Route(re.compile(rf"^/acme/authz/({_ID})$"), ("GET", "POST"), "authz"),
    Route(re.compile(rf"^/acme/challenge/({_ID})/({_ID})$"), ("GET", "POST"), "challenge"),
    Route(re.compile(r"^/acme/new-cert$"), ("POST",), "new_cert"),
    Route(re.compile(rf"^/acme/cert/({_ID})$"), ("GET",), "cert"),
    Route(re.compile(rf"^/acme/issuer-cert/({_ID})$"), ("GET",), "issuer"),
    Route(re.compile(r"^/acme/revoke-cert$"), ("POST",), "revoke_cert"),
    Route(re.compile(r"^/acme/key-change$"), ("POST",), "key_change"),
    Route(re.compile(r"^/terms$"), ("GET",), "terms"),
)

#: The v1 resource name of a route, where it is not its handler's name
#: spelled with dashes: a bounded label for metrics and logs.
_ENDPOINT_NAMES = {"issuer": "issuer-cert"}


def _inner_jws(payload: dict) -> tuple:
    """
    The inner JWS of a v1 key change (the outer payload, less its
    ``resource``), verified: the new key that signed it, and its payload.

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


def _error_documents(view) -> dict:
    """
    The v1 error document of each failed challenge of an authorization view.
    """
    return {challenge_id: from_upstream(error).to_json() for challenge_id, error in view.errors.items()}


class V1Face(resource.Resource):
    """
    The v1 API.

    :param context: the translation collaborators.
    :param nonces: the issuer of the gateway's own nonces.
    :param base_url: the public base URL used in every link and
        ``Location``; when ``None`` it is derived from each request's scheme
        and ``Host``.
    :param max_body: the largest POST body read, in bytes.
    :param metrics: a `gateway.operations.metrics.Metrics` told of every answer.
    :param recorder: a `gateway.operations.report.ClientRecorder` that records every
        request in the migration report.
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        context: Context,
        nonces: NonceIssuer,
        base_url: Optional[str] = None,
        max_body: int = DEFAULT_MAX_BODY,
        metrics: Optional[Any] = None,
        recorder: Optional[Any] = None,
    ):
        super().__init__()
        self.context = context
        self.nonces = nonces
        self.metrics = metrics
        self.recorder = recorder
        self.base_url = base_url.rstrip("/") if base_url else None
        self._base_path = urllib.parse.urlsplit(self.base_url).path if self.base_url else ""
        self.max_body = max_body
        #: The responses being worked on, for a graceful shutdown.
        self.in_flight: set = set()

    # -- twisted.web ---------------------------------------------------------

    def render(self, request):
        request.setHeader(b"Replay-Nonce", self.nonces.issue().encode("ascii"))
        request.setHeader(b"Cache-Control", b"public, max-age=0, no-cache")
        finished = []
        request.notifyFinish().addBoth(finished.append)
        # Everything this request causes, upstream calls and log events
        # included, runs in its scope and carries its id (gateway.operations.scope).
        scope = RequestScope(id=request_id_from(request.getHeader(b"x-request-id")))
        request.setHeader(b"X-Request-Id", scope.id.encode("ascii"))
        respond = run_in_scope(scope, defer.Deferred.fromCoroutine, self._respond(request, scope))
        respond.addCallback(self._write, request, finished)
        respond.addErrback(self._crash, request, finished)
        self.in_flight.add(respond)
        respond.addBoth(self._settled, respond)
        return server.NOT_DONE_YET

    def _settled(self, result, respond) -> None:
        self.in_flight.discard(respond)
        return None

    async def quiesce(self, clock, grace: float) -> int:
        """
        Wait up to ``grace`` seconds for the requests in flight (the
        listener is already closed at shutdown).

        :return: how many were still running when the grace ran out.
        """
        deadline = clock.seconds() + grace
        while self.in_flight and clock.seconds() < deadline:
            waiting = defer.DeferredList(list(self.in_flight), consumeErrors=True)
            waiting.addTimeout(max(0.0, deadline - clock.seconds()), clock)
            try:
                await waiting
            except defer.TimeoutError:
                break
        return len(self.in_flight)

    def _write(self, response: V1Response, request, finished) -> None:
        if finished:
            return  # the client went away
        request.setResponseCode(response.status)
        if response.content_type:
            request.setHeader(b"Content-Type", response.content_type.encode("ascii"))
        for name, value in response.headers:
            request.responseHeaders.addRawHeader(name.encode("ascii"), str(value).encode("latin-1"))
        if request.method != b"HEAD":
            request.write(response.body)
        else:
            # What a GET would carry, so load generators can frame the answer.
            request.setHeader(b"Content-Length", str(len(response.body)).encode("ascii"))
        request.finish()

    def _crash(self, failure, request, finished) -> None:
        self.log.failure("unhandled error writing a v1 response", failure)
        if not finished:
            try:
                self._write(problem_response(V1Problem.server_internal("Internal error")), request, finished)
            except Exception:
                pass

    async def _respond(self, request, scope: RequestScope) -> V1Response:
        method = request.method.decode("ascii", "replace")
        started = self.context.clock.seconds()
        try:
            response = await self._route(request, method)
        except UpstreamProblem as error:
            response = self._refused(UpstreamRefused.of(error), request, method)
        except UpstreamError as error:
            response = self._refused(UpstreamFailed.of(error), request, method)
        except Exception as error:
            response = self._refused(error, request, method)
        self._observe(request, scope, method, response, started)
        return response

    def _refused(self, error: Exception, request, method: str) -> V1Response:
        """
        The v1 problem document for what the request raised; a bug is
        logged with its traceback and answered ``serverInternal``.
        """
        problem = problem_for(error)
        if problem is None:
            self.log.failure("error serving {method} {path}", method=method,
                             path=request.path.decode("latin-1"))
            problem = V1Problem.server_internal("The gateway failed to serve this request")
        elif isinstance(error, (UpstreamRefused, UpstreamFailed)):
            self.log.info("upstream refused or failed: {error}", error=str(error))
        return problem_response(problem)

    def _observe(self, request, scope: RequestScope, method: str, response: V1Response,
                 started: float) -> None:
        """
        The access log event (named fields, thumbprint never key), the
        metrics, and the migration report's record of this request.
        """
        now = self.context.clock.seconds()
        user_agent = (request.getHeader(b"user-agent") or b"").decode("utf-8", "replace")
        address = self._ip(request)
        # A failure's problem goes into the log too: some clients hide it
        # (certbot 1.32 on Python 3.11 shows "AttributeError: can't set attribute").
        problem = problem_text(response.content_type, response.body) if response.status >= 400 else None
        self.log.info(
            "{method} {path} -> {status}" + (" {problem}" if problem else ""), method=method,
            path=request.path.decode("latin-1"), status=response.status, endpoint=scope.endpoint,
            user_agent=user_agent, client=address, thumbprint=scope.thumbprint,
            duration=round(now - started, 6), request_id=scope.id,
            **({"problem": problem} if problem else {}),
        )
        if self.metrics is not None:
            self.metrics.v1_response(scope.endpoint, response.status)
        if self.recorder is not None:
            self.recorder.record(visit_for(
                scope, user_agent, address, now, response.status,
                response.content_type, response.body, method=method,
            ))

    # -- routing -------------------------------------------------------------

    def _urls(self, request) -> messages.V1URLs:
        if self.base_url:
            return messages.V1URLs(self.base_url)
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        if not _HOST.match(host):
            raise V1Problem.malformed("Invalid Host header")
        scheme = "https" if request.isSecure() else "http"
        return messages.V1URLs(f"{scheme}://{host}")

    async def _route(self, request, method: str) -> V1Response:
        raw_path = request.uri.split(b"?", 1)[0]
        if not raw_path.startswith(b"/"):
            raise V1Problem.not_found("Not found")  # absolute-form targets
        path = raw_path.decode("ascii", "replace")
        if self._base_path and path.startswith(self._base_path + "/"):
            path = path[len(self._base_path):]
        if path in ("", "/"):
            path = "/directory"
        for route in ROUTES:
            match = route.pattern.match(path)
            if not match:
                continue
            scope = current.get()
            if scope is not None:
                scope.endpoint = _ENDPOINT_NAMES.get(route.name, route.name.replace("_", "-"))
            allowed = route.methods + (("HEAD",) if "GET" in route.methods else ())
            if method not in allowed:
                raise V1Problem.method_not_allowed(allowed=route.methods)
            if method == "HEAD":
                method = "GET"
            urls = self._urls(request)
            handler = getattr(self, f"_{route.name}_{method.lower()}")
            return await handler(request, urls, *match.groups())
        raise V1Problem.not_found("Not found")

    def _signed(self, request, resource_name) -> tuple:
        """
        Verify the request's JWS; the signer and the payload.
        """
        verified = self._verify(request, resource_name)
        return Signer(verified.jwk, verified.thumbprint, self._ip(request)), verified.payload

    def _verify(self, request, resource_name) -> VerifiedRequest:
        length = request.getHeader(b"content-length")
        if length is not None:
            try:
                too_long = int(length) > self.max_body
            except ValueError:
                raise V1Problem.malformed("Invalid Content-Length")
            if too_long:
                raise too_large(self.max_body)
        body = request.content.read(self.max_body + 1) if request.content is not None else b""
        if len(body) > self.max_body:
            raise too_large(self.max_body)
        if not body:
            raise V1Problem.malformed("No body on POST")
        verified = verify_v1_request(body, resource_name, self.nonces)
        scope = current.get()
        if scope is not None:
            scope.thumbprint = verified.thumbprint
            scope.names = requested_names(resource_name, verified.payload)
        return verified

    @staticmethod
    def _ip(request) -> str:
        address = request.getClientAddress()
        return getattr(address, "host", "") or ""

    # -- handlers ------------------------------------------------------------

    async def _directory_get(self, request, urls):
        upstream = await directory.upstream_meta(self.context)
        return json_response(200, messages.directory(urls, upstream.meta))

    async def _terms_get(self, request, urls):
        upstream = await directory.upstream_meta(self.context)
        terms = upstream.terms_of_service
        if not terms:
            raise V1Problem.not_found("The upstream CA publishes no terms of service")
        if terms.startswith(("http://", "https://")):
            return V1Response(302, b"", None, (("Location", terms),))
        if terms.startswith("data:"):
            header, _, data = terms[5:].partition(",")
            content_type = header.split(";")[0] or "text/plain"
            if ";base64" in header:
                import base64

                body = base64.b64decode(data + "=" * (-len(data) % 4))
            else:
                body = urllib.parse.unquote_to_bytes(data)
            if not re.match(r"^[a-z]+/[a-z0-9.+-]+$", content_type):
                content_type = "text/plain"
            return V1Response(200, body, content_type)
        raise V1Problem.not_found("The upstream terms of service are not fetchable")

    def _agreed_terms(self, urls) -> Optional[str]:
        """The terms a registration shows as agreed when the client sent none."""
        return urls.terms if self.context.policy.agree_to_terms else None

    def _registration_links(self, urls):
        return (
            ("Link", messages.link(urls.new_authz, "next")),
            ("Link", messages.link(urls.terms, "terms-of-service")),
        )

    async def _new_reg_post(self, request, urls):
        signer, payload = self._signed(request, "new-reg")
        outcome = await registration.new_registration(self.context, requests.new_reg(signer, payload))
        location = urls.reg(outcome.account.id)
        if not outcome.created:
            problem = V1Problem.conflict("Registration key is already in use", location=location)
            return problem_response(problem)
        return json_response(
            201,
            messages.registration(outcome.account),
            (("Location", location),) + self._registration_links(urls),
        )

    async def _reg_post(self, request, urls, registration_id):
        signer, payload = self._signed(request, "reg")
        updated = await registration.update_registration(
            self.context, requests.reg_update(signer, registration_id, payload))
        return json_response(
            200 if updated.deactivated else 202,
            messages.registration(updated.account, self._agreed_terms(urls)),
            self._registration_links(urls),
        )

    def _authz_response(self, status, urls, view, location=False):
        headers = [("Link", messages.link(urls.new_cert, "next"))]
        if location:
            headers.insert(0, ("Location", urls.authz(view.authorization.id)))
        body = messages.authorization(
            urls, view.authorization, view.challenges, view.thumbprint, _error_documents(view)
        )
        return json_response(status, body, headers)

    async def _new_authz_post(self, request, urls):
        signer, payload = self._signed(request, "new-authz")
        view = await authorizations.new_authorization(self.context, requests.new_authz(signer, payload))
        return self._authz_response(201, urls, view, location=True)

    async def _authz_get(self, request, urls, authorization_id):
        view = await authorizations.read_authorization(self.context, authorization_id)
        return self._authz_response(200, urls, view)

    async def _authz_post(self, request, urls, authorization_id):
        signer, payload = self._signed(request, "authz")
        view = await authorizations.deactivate_authorization(
            self.context, requests.deactivate_authz(signer, authorization_id, payload))
        return self._authz_response(200, urls, view)

    def _challenge_response(self, urls, view, challenge):
        uri = urls.challenge(view.authorization.id, challenge.id)
        body = messages.challenge(
            urls, view.authorization, challenge, view.thumbprint,
            _error_documents(view).get(challenge.id)
        )
        return json_response(
            202, body,
            (("Location", uri), ("Link", messages.link(urls.authz(view.authorization.id), "up"))),
        )

    async def _challenge_get(self, request, urls, authorization_id, challenge_id):
        view, challenge = await authorizations.read_challenge(
            self.context, authorization_id, challenge_id
        )
        return self._challenge_response(urls, view, challenge)

    async def _challenge_post(self, request, urls, authorization_id, challenge_id):
        signer, payload = self._signed(request, "challenge")
        view, challenge = await authorizations.answer_challenge(
            self.context, requests.answer_challenge(signer, authorization_id, challenge_id, payload))
        return self._challenge_response(urls, view, challenge)

    def _certificate_response(self, status, urls, certificate, location=False):
        headers = list(messages.certificate_links(urls, certificate.issuer_ids))
        headers = [("Link", h) for h in headers]
        if location:
            headers.insert(0, ("Location", urls.cert(certificate.id)))
        return V1Response(status, certificate.leaf_der, "application/pkix-cert", tuple(headers))

    async def _new_cert_post(self, request, urls):
        signer, payload = self._signed(request, "new-cert")
        new_cert = requests.new_cert(signer, payload)
        scope = current.get()
        if scope is not None:
            scope.names = new_cert.names
        certificate = await issuance.new_certificate(self.context, new_cert)
        return self._certificate_response(201, urls, certificate, location=True)

    async def _cert_get(self, request, urls, certificate_id):
        certificate = await issuance.read_certificate(self.context, certificate_id)
        return self._certificate_response(200, urls, certificate)

    async def _issuer_get(self, request, urls, issuer_id):
        issuer, parent = await issuance.read_issuer(self.context, issuer_id)
        headers = (("Link", messages.link(urls.issuer(parent), "up")),) if parent else ()
        return V1Response(200, issuer.der, "application/pkix-cert", headers)

    async def _revoke_cert_post(self, request, urls):
        signer, payload = self._signed(request, "revoke-cert")
        await revocation.revoke_certificate(self.context, requests.revoke(signer, payload))
        return V1Response(200, b"", None)

    async def _key_change_post(self, request, urls):
        signer, payload = self._signed(request, "key-change")
        new_jwk, inner_payload = _inner_jws(payload)
        account = await revocation.change_key(
            self.context, requests.key_change(signer, new_jwk, inner_payload, urls.reg))
        return json_response(200, messages.registration(account, self._agreed_terms(urls)),
                             self._registration_links(urls))
