"""
What can go wrong talking to the upstream ACME v2 CA, as typed exceptions.

Every RFC 7807 problem document the CA returns becomes an `UpstreamProblem`
carrying its type, detail, HTTP status, subproblems and ``Retry-After``; the
v1 face later maps it to a v1 problem.  A CA that cannot be reached, answers
garbage or is too slow raises an `UpstreamUnavailable` instead: the client
never waits forever and never sees a traceback.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import attrs

V2_ERROR_PREFIX = "urn:ietf:params:acme:error:"


@attrs.frozen
class Subproblem:
    """
    One entry of a problem document's ``subproblems`` (RFC 8555 §6.7.1).
    """

    type: str
    detail: str
    identifier: Optional[Dict[str, Any]] = None

    @property
    def code(self) -> str:
        """
        The short ACME error name (``rejectedIdentifier``), or the whole type
        when it is not in the ACME namespace.
        """
        return _short_code(self.type)


def _short_code(error_type: str) -> str:
    if error_type.startswith(V2_ERROR_PREFIX):
        return error_type[len(V2_ERROR_PREFIX):]
    return error_type


class UpstreamError(Exception):
    """
    Base class of every failure of an upstream operation.
    """


class UpstreamProblem(UpstreamError):
    """
    The upstream CA answered with an error status.

    :ivar type: the full problem type URI (``urn:ietf:params:acme:error:...``),
        or ``about:blank`` when the body held none (Pebble's bare 404s).
    :ivar detail: the human-readable detail, possibly empty.
    :ivar status: the HTTP status code of the response.
    :ivar subproblems: a sequence of `Subproblem`.
    :ivar retry_after: seconds to wait before retrying, when the CA said so.
    :ivar url: the upstream URL that answered.
    :ivar headers: the response headers (lower-cased names, first value), kept
        for ``Link`` and ``Location``.
    """

    def __init__(
        self,
        type: str,
        detail: str,
        status: int,
        subproblems: Sequence[Subproblem] = (),
        retry_after: Optional[float] = None,
        url: str = "",
        headers: Optional[Dict[str, str]] = None,
    ) -> None:
        super().__init__(type, detail, status)
        self.type = type
        self.detail = detail
        self.status = status
        self.subproblems = tuple(subproblems)
        self.retry_after = retry_after
        self.url = url
        self.headers = dict(headers or {})

    @property
    def code(self) -> str:
        """
        The short ACME error name, such as ``badNonce`` or ``rateLimited``.
        """
        return _short_code(self.type)

    def __str__(self) -> str:
        text = f"{self.status} {self.code}: {self.detail}"
        for sub in self.subproblems:
            text += f"; {sub.code}: {sub.detail}"
        return text

    @classmethod
    def from_document(
        cls,
        document: Any,
        status: int,
        retry_after: Optional[float] = None,
        url: str = "",
        headers: Optional[Dict[str, str]] = None,
    ) -> "UpstreamProblem":
        """
        Build from a parsed problem document, tolerating missing or ill-typed
        members (a CA's error body is not trusted to be well formed).
        """
        if not isinstance(document, dict):
            document = {}
        error_type = document.get("type")
        if not isinstance(error_type, str) or not error_type:
            error_type = "about:blank"
        detail = document.get("detail")
        if not isinstance(detail, str):
            detail = ""
        subproblems = []
        raw_subproblems = document.get("subproblems")
        if isinstance(raw_subproblems, list):
            for entry in raw_subproblems:
                if not isinstance(entry, dict):
                    continue
                identifier = entry.get("identifier")
                subproblems.append(
                    Subproblem(
                        type=str(entry.get("type") or "about:blank"),
                        detail=str(entry.get("detail") or ""),
                        identifier=identifier if isinstance(identifier, dict) else None,
                    )
                )
        return cls(
            type=error_type,
            detail=detail,
            status=status,
            subproblems=subproblems,
            retry_after=retry_after,
            url=url,
            headers=headers,
        )


class UpstreamUnavailable(UpstreamError):
    """
    The upstream could not be used at all: the connection failed, timed out,
    TLS failed, or it answered something that is not ACME (a 5xx page, a
    non-JSON body where JSON was required).

    :ivar reason: a short description for logs and v1 problem details.
    :ivar retry_after: seconds to wait, when the upstream said so (503).
    """

    def __init__(self, reason: str, retry_after: Optional[float] = None, url: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.url = url

    def __str__(self) -> str:
        return self.reason


class UpstreamProtocolError(UpstreamUnavailable):
    """
    The upstream answered with a success status but the response broke the
    protocol (a missing ``Location``, an object of the wrong shape).
    """


class PollTimeout(UpstreamError):
    """
    An authorization or order did not reach a final state in the allotted
    time.

    :ivar url: the resource being polled.
    :ivar last_status: its status at the last poll.
    """

    def __init__(self, url: str, last_status: str) -> None:
        super().__init__(f"{url} still {last_status!r} after polling")
        self.url = url
        self.last_status = last_status
