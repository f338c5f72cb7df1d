"""
The HTTP glue every listener of the gateway shares: one response type, and
one resource that answers from an ``async def``.

``twisted.web`` renders synchronously: a resource that must wait (for the
store's thread, the upstream CA, a readiness check) returns
``NOT_DONE_YET`` and writes later.  `AsyncResource` is that pattern once:
its `AsyncResource.respond` coroutine is started with
``Deferred.fromCoroutine`` (so it runs in a copy of the current context,
and a context variable it sets is seen by everything it awaits, and by
nothing else), the `Response` it returns is written unless the client went
away, a HEAD gets the headers a GET would (``Content-Length`` included) and
no body, and an unexpected failure is logged and answered with the
subclass's `AsyncResource.failed` response — never a traceback.  The
answers in progress are tracked, so that a shutdown can let them finish
(`quiesce`).

Both the v1 face (`gateway.v1.face`) and the admin listener
(`gateway.operations.admin`) are built on it.
"""

from __future__ import annotations

import re
from typing import Any, List, Optional, Set, Tuple

import attrs
from twisted.internet.defer import Deferred, DeferredList, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server


class Resource(resource.Resource):
    """
    ``twisted.web``'s resource, its constructor annotated.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]


class QuietSite(server.Site):
    """
    A site whose resources log each request themselves (the v1 face, with
    named fields and its request id), or that must not log every probe (the
    admin listener): no classic access line, no tracebacks in answers.
    """

    noisy = False
    displayTracebacks = False

    def log(self, request: http.Request) -> None:
        pass


_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


def request_base(request: server.Request) -> Optional[str]:
    """
    ``scheme://host[:port]`` of a request, from its ``Host`` header, or
    `None` when that header is missing or malformed (it shapes the links
    of the answer, so it must be a plain host).
    """
    host = (request.getHeader(b"host") or b"").decode("latin-1")
    if not _HOST.match(host):
        return None
    return f"{'https' if request.isSecure() else 'http'}://{host}"


@attrs.frozen
class Response:
    """
    An answer ready to write.

    :ivar content_type: the ``Content-Type``, or `None` for none.
    :ivar headers: further headers, ``(name, value)`` pairs, in order (a
        name may repeat: ``Link``).
    """

    status: int
    body: bytes = attrs.field(default=b"", repr=False)
    content_type: str | None = None
    headers: Tuple[Tuple[str, str], ...] = ()


class AsyncResource(Resource):
    """
    A leaf resource whose answer is computed by `respond`, an ``async def``.
    """

    isLeaf = True
    log = Logger()

    def __init__(self) -> None:
        super().__init__()
        #: The answers being worked on, for a graceful shutdown.
        self.in_flight: Set["Deferred[None]"] = set()

    async def respond(self, request: server.Request) -> Response:
        """
        The answer to ``request``.
        """
        raise NotImplementedError

    def failed(self, request: server.Request) -> Response:
        """
        The answer when `respond` raised (a bug, already logged).
        """
        return Response(500, b"internal error\n", "text/plain; charset=utf-8")

    def render(self, request: server.Request) -> int:
        finished: List[object] = []
        request.notifyFinish().addBoth(finished.append)
        answering: "Deferred[None]" = Deferred.fromCoroutine(self._answer(request, finished))
        self.in_flight.add(answering)

        def settled(result: object) -> None:
            self.in_flight.discard(answering)
            if isinstance(result, Failure):
                self.log.failure("writing a response failed", result)
            return None

        answering.addBoth(settled)
        return server.NOT_DONE_YET

    async def _answer(self, request: server.Request, finished: List[object]) -> None:
        try:
            response = await self.respond(request)
        except Exception:
            self.log.failure("error answering {method} {path}",
                             method=request.method.decode("latin-1"),
                             path=request.path.decode("latin-1"))
            response = self.failed(request)
        if not finished:  # the client went away
            write(request, response)


def write(request: server.Request, response: Response) -> None:
    """
    Write ``response`` and finish the request; for a HEAD, the headers a
    GET would carry (with its ``Content-Length``, so clients can frame the
    answer) and no body.
    """
    request.setResponseCode(response.status)
    if response.content_type:
        request.setHeader(b"Content-Type", response.content_type.encode("ascii"))
    for name, value in response.headers:
        request.responseHeaders.addRawHeader(name.encode("ascii"), value.encode("latin-1"))
    if request.method == b"HEAD":
        request.setHeader(b"Content-Length", str(len(response.body)).encode("ascii"))
    else:
        request.write(response.body)
    request.finish()


async def quiesce(resource: AsyncResource, clock: IReactorTime, grace: float) -> int:
    """
    Wait up to ``grace`` seconds for the answers ``resource`` is still
    working on (its listener is already closed).

    :return: how many were still running when the grace ran out.
    """
    deadline = clock.seconds() + grace
    while resource.in_flight and clock.seconds() < deadline:
        waiting: "Deferred[Any]" = DeferredList(list(resource.in_flight), consumeErrors=True)
        waiting.addTimeout(max(0.0, deadline - clock.seconds()), clock)
        try:
            await waiting
        except TimeoutError:
            break
    return len(resource.in_flight)
