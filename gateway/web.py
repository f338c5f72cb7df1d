"""
The HTTP glue every listener of the gateway shares: one response type, one
resource that answers from an ``async def``, and the limits every listener
enforces on what a connection may take (`ListenerSite`).

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

Every listener — the v1 face, the HTTP-01 responder, the admin listener —
is a `ListenerSite`, which bounds what one client can make it hold
(`ListenerLimits`): connections at once (``--max-connections``; one more
is answered 503 and closed at once, so a flood of one port never takes
the file descriptors another needs), a request body (refused with 413 as
it arrives, ``Content-Length`` or chunked, never buffered beyond the
limit: ``twisted.web`` would otherwise write any body to a temporary file
before a resource sees it), and time: a request's line and headers must
arrive within ``--header-timeout`` of its first byte, and the gateway waits
at most ``--idle-timeout`` for a request to begin on a new or kept-alive
connection, and for the rest of a body once the headers are in.  These
are deadlines, not inactivity timers: bytes trickling in one at a time do
not extend them.
"""

from __future__ import annotations

import io
import re
from typing import Any, List, Optional, Set, Tuple

import attrs
from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredList, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
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


#: Connections one listener holds at once, by default: three listeners
#: stay well inside the common limit of 1,024 file descriptors, with room
#: for the upstream connections and the state files.
DEFAULT_MAX_CONNECTIONS = 256
#: Seconds for a request's line and headers, from its first byte.
DEFAULT_HEADER_TIMEOUT = 10.0
#: Seconds the gateway waits for a request to begin, or for a body.
DEFAULT_IDLE_TIMEOUT = 30.0
#: The largest body of a listener that takes none (the HTTP-01 responder
#: and the admin listener answer GET and HEAD only).
NO_BODY = 1024

log = Logger()


@attrs.frozen
class ListenerLimits:
    """
    What one connection, and all of them together, may take of a listener.

    :ivar max_connections: connections open at once (``--max-connections``).
    :ivar header_timeout: seconds from a request's first byte to the end of
        its headers (``--header-timeout``).
    :ivar idle_timeout: seconds the listener waits for a request to begin,
        and for a body once the headers are in (``--idle-timeout``).
    :ivar max_body: the largest request body, in bytes.
    """

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_body: int = NO_BODY


def answer_bytes(status: int, content_type: str, body: bytes,
                 headers: Tuple[Tuple[bytes, bytes], ...] = ()) -> bytes:
    """
    A whole HTTP/1.1 response that closes the connection, for answers
    written straight to the transport (no request object to answer on, or
    one whose body will never be read).
    """
    reason = http.RESPONSES.get(status, b"Error")
    lines = [b"HTTP/1.1 %d %s" % (status, reason),
             b"Content-Type: " + content_type.encode("ascii"),
             b"Content-Length: " + str(len(body)).encode("ascii"),
             b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class BoundedRequest(server.Request):
    """
    A request that never buffers more body than its site's ``max_body``:
    refused with 413 as soon as that is known — from ``Content-Length``
    before a byte of the body is read, or the moment a chunked body passes
    the limit — with the site's `ListenerSite.refusal`, and the connection
    closed (the rest of the body is never read).
    """

    _refused = False
    _received = 0

    def _limit(self) -> Optional[int]:
        limit: Optional[int] = getattr(getattr(self.channel, "site", None), "max_body", None)
        return limit

    # (Twisted's own methods, overridden here, carry no annotations.)

    def gotLength(self, length: Optional[int]) -> None:
        limit = self._limit()
        if limit is not None and length is not None and length > limit:
            self._refuse(limit, length)
            return
        super().gotLength(length)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        limit = self._limit()
        self._received += len(data)
        if limit is not None and self._received > limit:
            self._refuse(limit, self._received)
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return  # answered already; the connection is closing
        super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]

    def _refuse(self, limit: int, size: int) -> None:
        """
        Answer 413 now, before the rest of the body, and close.
        """
        self._refused = True
        self.content = io.BytesIO()  # type: ignore[assignment]
        # Twisted would otherwise send "100 Continue" after this answer.
        self.requestHeaders.removeHeader(b"expect")
        log.info("refused a request body of {size} bytes or more (limit {limit})",
                 size=size, limit=limit)
        channel = self.channel
        if not isinstance(channel, http.HTTPChannel) or channel.transport is None:
            # No raw HTTP/1.1 connection to answer on: drop the request.
            if channel is not None:
                channel.loseConnection()
            return
        site = getattr(channel, "site", None)
        detail = f"Request body too large: the limit is {limit} bytes"
        answer = (site.refusal(413, detail) if isinstance(site, ListenerSite)
                  else answer_bytes(413, "text/plain; charset=utf-8", detail.encode() + b"\n"))
        channel.transport.write(answer)
        channel.loseConnection()


#: Where a connection of a `ListenerSite` is: waiting for a request to
#: begin, reading a request's head, reading its body, or answering it.
_IDLE, _HEAD, _BODY, _BUSY = "idle", "head", "body", "busy"


class DeadlineChannel(http.HTTPChannel):
    """
    An HTTP/1.1 connection of a `ListenerSite`, with deadlines bytes
    trickling in cannot extend: ``header_timeout`` from a request's first
    byte to the end of its headers, ``idle_timeout`` for a request to
    begin and for a body to arrive.  Answering a request has no deadline
    here (an upstream call is bounded by ``--request-timeout``).

    A connection moves through three or four phases per request; giving
    each its own timer (cancel one, schedule the next) cost four heap
    operations on the reactor's timer queue per request — with hundreds of
    kept-alive connections, ``DelayedCall.__lt__`` and
    ``_insertNewDelayedCalls`` were 10 % of the py-spy samples of
    ``HEAD /directory`` at 64 connections.  So a phase only records when it
    ends (``_ends_at``), and one timer per connection checks: it is armed
    at most the shortest timeout ahead (`_step`), so it always fires no
    later than any deadline set while it is waiting, and re-arms itself
    for what is left.  A request answered promptly schedules nothing.
    """

    site: "ListenerSite"
    _phase = _IDLE
    #: When the current phase's wait ends (reactor seconds), `None` while
    #: answering; and how long that wait is (for the log and the 408).
    _ends_at: Optional[float] = None
    _seconds: float = 0.0
    _timer: Optional[IDelayedCall] = None
    _counted = False

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        self.site.connection_opened()
        self._counted = True
        self._await(_IDLE)

    def dataReceived(self, data: bytes) -> None:
        if self._phase == _IDLE and data:
            self._await(_HEAD)
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def allHeadersReceived(self) -> None:
        super().allHeadersReceived()  # type: ignore[no-untyped-call]
        if self.length != 0 and self._phase == _HEAD:
            self._await(_BODY)

    def allContentReceived(self) -> None:
        self._await(_BUSY)
        super().allContentReceived()  # type: ignore[no-untyped-call]

    def requestDone(self, request: http.Request) -> None:
        if self.persistent:
            # Buffered bytes of a pipelined request are parsed next; they
            # may start or complete the next request at once.
            self._await(_IDLE)
        super().requestDone(request)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._cancel()
        if self._counted:
            self._counted = False
            self.site.connection_closed()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _step(self) -> float:
        """
        The furthest ahead the timer is ever armed: the shortest wait a
        phase can have, so that no deadline set later falls before it.
        """
        limits = self.site.limits
        return min(limits.header_timeout, limits.idle_timeout)

    def _await(self, phase: str) -> None:
        self._phase = phase
        limits = self.site.limits
        seconds = {_IDLE: limits.idle_timeout, _HEAD: limits.header_timeout,
                   _BODY: limits.idle_timeout}.get(phase)
        if seconds is None:
            self._ends_at = None  # the timer, if armed, finds nothing to enforce
            return
        clock: IReactorTime = self.site.reactor
        self._ends_at = clock.seconds() + seconds
        self._seconds = seconds
        if self._timer is None:
            self._arm(clock, min(seconds, self._step()))

    def _arm(self, clock: IReactorTime, delay: float) -> None:
        self._timer = clock.callLater(delay, self._check)

    def _check(self) -> None:
        """
        The timer: close the connection if its phase's wait has ended,
        else wait again, at most `_step` ahead.
        """
        self._timer = None
        ends_at = self._ends_at
        if ends_at is None:
            return  # answering: the next phase arms the timer
        clock: IReactorTime = self.site.reactor
        left = ends_at - clock.seconds()
        if left > 1e-6:
            self._arm(clock, min(left, self._step()))
            return
        self._passed(self._phase, self._seconds)

    def _cancel(self) -> None:
        self._ends_at = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _passed(self, phase: str, seconds: float) -> None:
        transport = self.transport
        if transport is None or getattr(transport, "disconnecting", False):
            return
        peer = transport.getPeer()
        if phase == _IDLE:
            log.info("closing an idle connection from {peer} after {seconds:g}s",
                     peer=str(peer), seconds=seconds)
        else:
            what = "line and headers" if phase == _HEAD else "body"
            log.info("request {what} from {peer} did not arrive within {seconds:g}s: closing",
                     what=what, peer=str(peer), seconds=seconds)
            option = "--header-timeout" if phase == _HEAD else "--idle-timeout"
            transport.write(self.site.refusal(
                408, f"The request's {what} did not arrive within {seconds:g} seconds "
                     f"({option})"))
        self.timeoutConnection()  # type: ignore[no-untyped-call]


class _Refused(protocol.Protocol):
    """
    A connection beyond the listener's limit: one answer, then closed.
    """

    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._answer)
        self.transport.loseConnection()


class ListenerSite(QuietSite):
    """
    The site of one listener, bounded by its `ListenerLimits`.

    :ivar limits: what its connections may take.
    :ivar max_body: the largest body it reads (`BoundedRequest`).
    :ivar open_connections: how many connections it holds now.
    """

    requestFactory = BoundedRequest
    protocol = DeadlineChannel  # type: ignore[assignment]

    def __init__(self, root: resource.Resource, limits: ListenerLimits = ListenerLimits(),
                 **kwargs: Any) -> None:
        # Twisted's own idle timer (12 hours, restarted by every byte) is
        # replaced by the channel's deadlines.
        kwargs.setdefault("timeout", None)
        super().__init__(root, **kwargs)  # type: ignore[no-untyped-call]
        # Not a form: a POST's body is a JWS document on both faces.  Twisted
        # (`Site`'s ``parsePOSTFormSubmission``) would parse every POST's
        # ``Content-Type`` with the email package to look for one (about
        # 30 µs a POST, issue 15), and answer a multipart body it cannot
        # parse with a bare 400 instead of the face's problem document.
        self._parsePOSTFormSubmission = False
        self.limits = limits
        self.max_body = limits.max_body
        self.open_connections = 0
        self._refusing = False

    def refusal(self, status: int, detail: str) -> bytes:
        """
        The answer, as bytes on the wire, when the listener refuses a
        connection (503), a body (413) or a request too slow (408).
        """
        headers: Tuple[Tuple[bytes, bytes], ...] = ((b"Cache-Control", b"no-store"),)
        if status == 503:
            headers += ((b"Retry-After", b"1"),)
        return answer_bytes(status, "text/plain; charset=utf-8",
                            detail.encode("utf-8") + b"\n", headers)

    def buildProtocol(self, addr: Any) -> Any:
        if self.open_connections >= self.limits.max_connections:
            if not self._refusing:
                log.warn("{count} connections open, the limit (--max-connections): refusing more",
                         count=self.open_connections)
                self._refusing = True
            return _Refused(self.refusal(
                503, f"Too many connections to this port: {self.open_connections} are open, "
                     f"its limit (--max-connections); retry in a moment"))
        return super().buildProtocol(addr)  # type: ignore[no-untyped-call]

    def connection_opened(self) -> None:
        self.open_connections += 1

    def connection_closed(self) -> None:
        self.open_connections -= 1
        if self.open_connections < self.limits.max_connections:
            self._refusing = False
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


def client_address(request: server.Request) -> str:
    """
    The address a request came from ("" for a transport without one).
    """
    address = request.getClientAddress()
    return getattr(address, "host", "") or ""


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
