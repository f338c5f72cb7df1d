"""
The v1 port's body size limit, enforced while the body arrives.

``twisted.web`` buffers a request's whole body before any resource sees it:
in memory below 100 kB, in a temporary file above, and without any bound.
A limit checked only in the resource would come too late: a hostile client
could make the gateway write gigabytes to disk before being told no.  So the
v1 face's site uses `BoundedRequest`, which refuses a body larger than the
limit as soon as that is known -- from ``Content-Length`` before a byte of
it is read, or, for a chunked body, the moment the count passes the limit --
with the v1 face's own answer, a 413 ``malformed`` problem document with a
fresh ``Replay-Nonce``, and then closes the connection (the rest of the body
is never read, so the connection cannot be reused).

`gateway.v1.face.V1Face` checks the limit again on what it reads, so a
face served by any other site (tests' ``StubTreq``) keeps the same rule.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Optional

from twisted.logger import Logger
from twisted.web import http, server

from gateway.v1.problems import V1Problem
from gateway.web import QuietSite

if TYPE_CHECKING:  # pragma: no cover - the face imports this module
    from gateway.v1.face import V1Face

#: The largest request body the v1 face reads by default.  A v1 request is
#: a JWS of at most a few kilobytes (a new-cert with a 4096-bit RSA CSR is
#: about 6 KiB).
DEFAULT_MAX_BODY = 64 * 1024

log = Logger()


def too_large(max_body: int) -> V1Problem:
    """
    The refusal of a body above ``max_body`` bytes.
    """
    return V1Problem.malformed(
        f"Request body too large: the limit is {max_body} bytes", status=413
    )


class BoundedRequest(server.Request):
    """
    A request that never buffers more body than its site's ``max_body``.
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
        problem = too_large(limit)
        body = problem.body()
        headers = [
            (b"Content-Type", b"application/problem+json"),
            (b"Content-Length", str(len(body)).encode("ascii")),
            (b"Cache-Control", b"public, max-age=0, no-cache"),
            (b"Connection", b"close"),
        ]
        nonces = getattr(getattr(getattr(channel, "site", None), "resource", None), "nonces", None)
        if nonces is not None:
            headers.append((b"Replay-Nonce", nonces.issue().encode("ascii")))
        head = b"HTTP/1.1 413 Request Entity Too Large\r\n" + b"".join(
            name + b": " + value + b"\r\n" for name, value in headers
        )
        channel.transport.write(head + b"\r\n" + body)
        channel.loseConnection()


class V1Site(QuietSite):
    """
    The site of the v1 face: `BoundedRequest` with the face's ``max_body``.

    :param face: the `gateway.v1.face.V1Face`.
    """

    requestFactory = BoundedRequest

    def __init__(self, face: "V1Face", max_body: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(face, **kwargs)  # type: ignore[no-untyped-call]
        self.max_body = face.max_body if max_body is None else max_body
