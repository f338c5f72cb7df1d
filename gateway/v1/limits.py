"""
The v1 port's limits: its body size limit (``--max-body``) and its answers
when a limit refuses a request, as v1 problem documents.

The limits themselves are every listener's (`gateway.web.ListenerSite`):
``twisted.web`` buffers a request's whole body before any resource sees
it (in memory below 100 kB, in a temporary file above, and without any
bound), so a limit checked only in the resource would come too late — a
hostile client could make the gateway write gigabytes to disk before being
told no.  The v1 face's site refuses a body larger than ``--max-body`` as
soon as that is known, from ``Content-Length`` before a byte of it is read,
or, for a chunked body, the moment the count passes the limit, and then
closes the connection (the rest of the body is never read).  Its refusals
— that 413, a 408 for a request too slow to arrive, a 503 beyond
``--max-connections`` — are v1 problem documents with a fresh
``Replay-Nonce``.

`gateway.v1.face.V1Face` checks the body limit again on what it reads, so
a face served by any other site (tests' ``StubTreq``) keeps the same rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import attrs

from gateway.v1.problems import PROBLEM_CONTENT_TYPE, V1Problem
from gateway.web import BoundedRequest, ListenerLimits, ListenerSite, answer_bytes

if TYPE_CHECKING:  # pragma: no cover - the face imports this module
    from gateway.v1.face import V1Face

__all__ = ["DEFAULT_MAX_BODY", "BoundedRequest", "V1Site", "posted_body", "too_large"]

#: The largest request body the v1 face reads by default.  A v1 request is
#: a JWS of at most a few kilobytes (a new-cert with a 4096-bit RSA CSR is
#: about 6 KiB).
DEFAULT_MAX_BODY = 64 * 1024


def too_large(max_body: int) -> V1Problem:
    """
    The refusal of a body above ``max_body`` bytes.
    """
    return V1Problem.malformed(
        f"Request body too large: the limit is {max_body} bytes", status=413
    )


def posted_body(request: Any, max_body: int) -> bytes:
    """
    The body of a POST, never more than ``max_body`` bytes read: refused
    from its ``Content-Length`` before reading, or once read past the
    limit (both faces read their JWS bodies so).

    :raises V1Problem: ``malformed`` for a bad ``Content-Length`` or no
        body, 413 for a body above ``max_body``.
    """
    length = request.getHeader(b"content-length")
    if length is not None:
        try:
            too_long = int(length) > max_body
        except ValueError:
            raise V1Problem.malformed("Invalid Content-Length")
        if too_long:
            raise too_large(max_body)
    body: bytes = request.content.read(max_body + 1) if request.content is not None else b""
    if len(body) > max_body:
        raise too_large(max_body)
    if not body:
        raise V1Problem.malformed("No body on POST")
    return body


class V1Site(ListenerSite):
    """
    The site of the v1 face: its ``max_body`` is the face's, and what the
    listener refuses is answered as a v1 problem with a nonce.

    :param face: the `gateway.v1.face.V1Face`.
    """

    def __init__(self, face: "V1Face", limits: ListenerLimits = ListenerLimits(),
                 max_body: Optional[int] = None, **kwargs: Any) -> None:
        max_body = face.max_body if max_body is None else max_body
        super().__init__(face, attrs.evolve(limits, max_body=max_body), **kwargs)
        self.face = face

    def refusal(self, status: int, detail: str) -> bytes:
        problem = (V1Problem("serverInternal", detail, status, {"Retry-After": "1"})
                   if status == 503 else V1Problem.malformed(detail, status=status))
        headers = [(b"Cache-Control", b"public, max-age=0, no-cache"),
                   (b"Replay-Nonce", self.face.nonces.issue().encode("ascii"))]
        headers += [(name.encode("ascii"), value.encode("latin-1"))
                    for name, value in problem.headers.items()]
        return answer_bytes(status, PROBLEM_CONTENT_TYPE, problem.body(), tuple(headers))
