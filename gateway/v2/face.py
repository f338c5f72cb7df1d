"""
The ACME v2 face, for draft-era v2 clients (2018-2019: acme-tiny 4.0,
certbot 0.22-0.33 and the ``acme`` library before 0.34 in v2 mode) and
current ones: ``/v2/directory`` and the resources below it, served on the
v1 listener (the v1 face hands it every path under ``/v2/``).

Every request crosses this module once.  Before the tree sees it: a fresh
``Replay-Nonce`` (on every answer, errors and ``HEAD`` included: certbot
0.27 takes its first nonce from a ``HEAD`` of the URL it is about to POST
to), ``Link: <directory>;rel="index"``, its request id and scope, and the
route -- a walk of the tree over the raw path.  After: whatever the
endpoint raised becomes a v2 problem document (`gateway.v2.problems`), and
the answer is logged and recorded in the migration report.

What draft-era clients do that RFC 8555 servers refuse is accepted here:
plain ``GET`` reads of authorizations, challenges, orders and
certificates; any ``Content-Type`` (or none) on a POST; v1's ``resource``
member in payloads; a ``kid`` that is the account URL another CA gave
(`gateway.v2.endpoint.KidKeys`); a POST to a challenge that is valid
already.  Upstream, the gateway speaks RFC 8555 for them (POST-as-GET,
the exact ``Content-Type``, its nonce pool), signed with the client's own
key.
"""

from __future__ import annotations

import urllib.parse
from typing import Optional, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import resource, server

from gateway.operations.observe import VisitRecorder, observe_request
from gateway.operations.scope import RequestScope, current, request_id_from
from gateway.translate.errors import UpstreamFailed, UpstreamRefused
from gateway.v1.limits import DEFAULT_MAX_BODY
from gateway.v1.nonces import NonceIssuer
from gateway.v2 import messages
from gateway.v2.endpoint import KidKeys, Unknown, V2Call, V2Endpoint
from gateway.v2.problems import PROBLEM_CONTENT_TYPE, V2Problem, problem_for
from gateway.web import Response, request_base

#: The path below which the v2 face answers.
PREFIX = "/v2/"


def problem_response(problem: V2Problem) -> Response:
    return Response(problem.status, problem.body(), PROBLEM_CONTENT_TYPE,
                    tuple(problem.headers.items()))


class V2Metrics(Protocol):
    """
    Told of every v2 answer (`gateway.operations.metrics.Metrics` is one).
    """

    def v2_response(self, endpoint: str, status: int) -> None: ...



class V2Face:
    """
    The v2 face: answers the requests the v1 listener's root hands it.

    :param tree: the v2 resource tree (`gateway.v2.resource.v2_tree`), below
        ``/v2``.
    :param nonces: the gateway's nonces (one issuer for both faces).
    :param keys: the keys a ``kid`` may stand for.
    :param base_url: the public base URL (``--base-url``), or `None` to
        derive it from each request.
    :param recorder: records every request in the migration report.
    :param metrics: told of every answer.
    """

    log = Logger()

    def __init__(self, tree: resource.Resource, nonces: NonceIssuer, clock: IReactorTime,
                 keys: KidKeys, base_url: Optional[str] = None,
                 max_body: int = DEFAULT_MAX_BODY,
                 recorder: Optional[VisitRecorder] = None,
                 metrics: Optional[V2Metrics] = None) -> None:
        self.tree = tree
        self.nonces = nonces
        self.clock = clock
        self.keys = keys
        self.base_url = base_url.rstrip("/") if base_url else None
        self._base_path = urllib.parse.urlsplit(self.base_url).path if self.base_url else ""
        self.max_body = max_body
        self.recorder = recorder
        self.metrics = metrics

    def path_of(self, request: server.Request) -> Optional[str]:
        """
        The request's raw path below the base URL's, when it is one the v2
        face answers (``/v2/…``); `None` otherwise.
        """
        raw = request.uri.split(b"?", 1)[0].decode("ascii", "replace")
        if self._base_path and raw.startswith(self._base_path + "/"):
            raw = raw[len(self._base_path):]
        return raw if raw.startswith(PREFIX) else None

    async def respond(self, request: server.Request) -> Response:
        request.setHeader(b"Replay-Nonce", self.nonces.issue().encode("ascii"))
        request.setHeader(b"Cache-Control", b"public, max-age=0, no-cache")
        scope = RequestScope(id=request_id_from(request.getHeader(b"x-request-id")),
                             endpoint="v2-unknown")
        current.set(scope)
        request.setHeader(b"X-Request-Id", scope.id.encode("ascii"))
        method = request.method.decode("ascii", "replace")
        started = self.clock.seconds()
        try:
            response = await self._route(request, method, scope)
        except Exception as error:
            response = self._refused(error, request, method)
        self._observe(request, scope, method, response, started)
        return response

    def _refused(self, error: Exception, request: server.Request, method: str) -> Response:
        problem = problem_for(error)
        if problem is None:
            self.log.failure("error serving {method} {path}", method=method,
                             path=request.path.decode("latin-1"))
            problem = V2Problem.server_internal("The gateway failed to serve this request")
        elif isinstance(error, (UpstreamRefused, UpstreamFailed)):
            self.log.info("upstream refused or failed: {error}", error=str(error))
        return problem_response(problem)

    def _urls(self, request: server.Request) -> messages.V2URLs:
        base = self.base_url or request_base(request)
        if base is None:
            raise V2Problem.malformed("Invalid Host header")
        return messages.V2URLs(base)

    def _endpoint(self, request: server.Request, path: str) -> V2Endpoint:
        segments = [s.encode("utf-8") for s in path[len(PREFIX):].split("/")]
        request.prepath = []
        request.postpath = segments
        found = resource.getChildForRequest(self.tree, request)
        if not isinstance(found, V2Endpoint) or request.postpath:
            return Unknown()
        return found

    async def _route(self, request: server.Request, method: str, scope: RequestScope) -> Response:
        urls = self._urls(request)
        request.setHeader(b"Link", messages.link(urls.directory, "index").encode("latin-1"))
        path = self.path_of(request)
        endpoint = self._endpoint(request, path) if path is not None else Unknown()
        if isinstance(endpoint, Unknown):
            raise V2Problem.not_found("Not found")
        scope.endpoint = endpoint.endpoint
        allowed = endpoint.methods + (("HEAD",) if "GET" in endpoint.methods else ())
        if method not in allowed:
            raise V2Problem.method_not_allowed(endpoint.methods)
        assert path is not None
        call = V2Call(request, method, urls, urls.base + path, scope, self.nonces,
                      self.max_body, self.keys)
        if method in ("GET", "HEAD"):
            return await endpoint.get(call)
        return await endpoint.post(call)

    def _observe(self, request: server.Request, scope: RequestScope, method: str,
                 response: Response, started: float) -> None:
        """
        The access log event, the metric and the migration report's record
        (`gateway.operations.observe`).
        """
        observe_request(self.log, request, scope, method, response, started,
                        self.clock.seconds(),
                        None if self.metrics is None else self.metrics.v2_response,
                        self.recorder)
