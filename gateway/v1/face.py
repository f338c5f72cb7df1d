"""
The ACME v1 face: the root of the v1 listener, wrapping the v1 resource
tree (`gateway.v1.resource`) with what every v1 request gets.

Every request crosses this module once.  Before the tree sees it: a fresh
``Replay-Nonce`` (on every response, errors and HEAD included), its request
id (``X-Request-Id``, and the scope every log event and upstream call it
causes carries: `gateway.operations.scope`), the links' base URL, and the
route — a walk of the tree over the raw path, so encoded slashes and ``..``
never reach a resource.  After: whatever the endpoint raised becomes a v1
problem document, in one place (`gateway.v1.problems.problem_for`), and the
answer is observed once — the access log event (named fields, the key's
thumbprint, never the key), the metrics, and the migration report.

A POST's JWS is verified before an endpoint hands its payload to the
translation layer (`gateway.v1.endpoint.V1Call.signed`): signature, nonce
and ``resource`` (`gateway.v1.jws`), with the body bounded by ``--max-body``.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Optional, Protocol, Sequence

from twisted.internet.interfaces import IReactorTime
from twisted.web import resource, server

from gateway.operations.observe import VisitRecorder, observe_request
from gateway.operations.scope import RequestScope, current, request_id_from
from gateway.translate.errors import UpstreamFailed, UpstreamRefused
from gateway.v1 import messages
from gateway.v1.endpoint import Unknown, V1Call, V1Endpoint
from gateway.v1.limits import DEFAULT_MAX_BODY
from gateway.v1.nonces import NonceIssuer
from gateway.v1.problems import PROBLEM_CONTENT_TYPE, V1Problem, problem_for
from gateway.web import AsyncResource, Response

_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


def problem_response(problem: V1Problem) -> Response:
    """
    A v1 problem document as a response.
    """
    return Response(problem.status, problem.body(), PROBLEM_CONTENT_TYPE,
                    tuple(problem.headers.items()))


class V1Metrics(Protocol):
    """
    Told of every v1 answer (`gateway.operations.metrics.Metrics` is one).
    """

    def v1_response(self, endpoint: str, status: int) -> None: ...



class MountedFace(Protocol):
    """
    Another face the v1 listener serves (`gateway.v2.face.V2Face`): the
    paths it answers, and its answers.
    """

    def path_of(self, request: server.Request) -> Optional[str]: ...

    async def respond(self, request: server.Request) -> Response: ...


class V1Face(AsyncResource):
    """
    The v1 listener's root.

    :param tree: the v1 resource tree (`gateway.v1.resource.v1_tree`).
    :param nonces: the issuer of the gateway's own nonces.
    :param clock: for durations.
    :param base_url: the public base URL of every link and ``Location``;
        when `None` it is derived from each request's scheme and ``Host``.
    :param max_body: the largest POST body read, in bytes.
    :param metrics: told of every answer.
    :param recorder: records every request in the migration report.
    :param mounted: other faces on the same listener, each answering the
        paths it claims (the v2 face, ``/v2/…``) in its own protocol.
    """

    def __init__(
        self,
        tree: resource.Resource,
        nonces: NonceIssuer,
        clock: IReactorTime,
        base_url: Optional[str] = None,
        max_body: int = DEFAULT_MAX_BODY,
        metrics: Optional[V1Metrics] = None,
        recorder: Optional[VisitRecorder] = None,
        mounted: Sequence[MountedFace] = (),
    ) -> None:
        super().__init__()
        self.mounted = tuple(mounted)
        self.tree = tree
        self.nonces = nonces
        self.clock = clock
        self.metrics = metrics
        self.recorder = recorder
        self.base_url = base_url.rstrip("/") if base_url else None
        self._base_path = urllib.parse.urlsplit(self.base_url).path if self.base_url else ""
        self.max_body = max_body

    def failed(self, request: server.Request) -> Response:
        return problem_response(V1Problem.server_internal("Internal error"))

    async def respond(self, request: server.Request) -> Response:
        for face in self.mounted:
            if face.path_of(request) is not None:
                return await face.respond(request)
        request.setHeader(b"Replay-Nonce", self.nonces.issue().encode("ascii"))
        request.setHeader(b"Cache-Control", b"public, max-age=0, no-cache")
        # Everything this request causes, upstream calls and log events
        # included, runs in its scope and carries its id: this coroutine
        # runs in a copy of the reactor's context (`gateway.web`).
        scope = RequestScope(id=request_id_from(request.getHeader(b"x-request-id")))
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

    def _urls(self, request: server.Request) -> messages.V1URLs:
        if self.base_url:
            return messages.V1URLs(self.base_url)
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        if not _HOST.match(host):
            raise V1Problem.malformed("Invalid Host header")
        scheme = "https" if request.isSecure() else "http"
        return messages.V1URLs(f"{scheme}://{host}")

    def endpoint_of(self, request: server.Request) -> V1Endpoint:
        """
        The endpoint of the tree at the request's raw path (``%2F`` and
        ``..`` are not decoded, so they match nothing), after the base
        URL's path; absolute-form targets match nothing.
        """
        raw_path = request.uri.split(b"?", 1)[0]
        if not raw_path.startswith(b"/"):
            return Unknown()
        path = raw_path.decode("ascii", "replace")
        if self._base_path and path.startswith(self._base_path + "/"):
            path = path[len(self._base_path):]
        segments = [s.encode("utf-8") for s in path.split("/")[1:]]
        request.prepath = []
        request.postpath = segments
        found = resource.getChildForRequest(self.tree, request)
        if not isinstance(found, V1Endpoint):
            return Unknown()
        rest = request.postpath
        if rest and not (found.trailing_slash and rest == [b""]):
            return Unknown()
        return found

    async def _route(self, request: server.Request, method: str, scope: RequestScope) -> Response:
        endpoint = self.endpoint_of(request)
        if isinstance(endpoint, Unknown):
            raise V1Problem.not_found("Not found")
        scope.endpoint = endpoint.endpoint
        allowed = endpoint.methods + (("HEAD",) if "GET" in endpoint.methods else ())
        if method not in allowed:
            raise V1Problem.method_not_allowed(allowed=endpoint.methods)
        call = V1Call(request, method, self._urls(request), scope, self.nonces, self.max_body)
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
                        None if self.metrics is None else self.metrics.v1_response,
                        self.recorder)
