"""
ACME v1 problem documents, as Boulder's v1 front end served them, and the
one place where whatever went wrong becomes one.

A legacy client only understands the ``urn:acme:error:`` namespace and the
handful of types Boulder's v1 WFE actually emitted (MAPPING §1.2).  The
layers below the face raise domain exceptions (`gateway.translate.errors`)
that say why a request was refused; `problem_for` maps each to the v1 type,
status and headers a client expects, keeping its detail (Boulder's words).
The face's own refusals (a bad JWS, an unknown path, a wrong method) are
`V1Problem` already: an exception that carries any extra headers
(``Location`` on a 409 re-registration, ``Allow`` on a 405,
``Retry-After``, ``Link`` to the terms of service) with it.

`from_upstream` translates the upstream's RFC 8555 problems per MAPPING §3.4.
It never lets a ``urn:ietf:params:acme:error:`` type through: a v1 client
would not know what to do with one.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Dict, Iterable, Mapping, Optional, Protocol, Sequence

import attrs

from gateway.translate.errors import (
    V2_ERROR_PREFIX,
    CSRRejected,
    Conflict,
    IdentifierRejected,
    InternalFailure,
    InvalidContact,
    Malformed,
    NotFound,
    RateLimited,
    Refused,
    Unauthorized,
    UpstreamFailed,
    UpstreamRefused,
    ValidationFailed,
)

V1_ERROR_PREFIX = "urn:acme:error:"

#: The media type of every problem document, v1 included.
PROBLEM_CONTENT_TYPE = "application/problem+json"

#: Boulder v1's wording, matched by some clients and operators' log searches.
NO_REGISTRATION_DETAIL = "No registration exists matching provided key"
MUST_AGREE_DETAIL = "Must agree to subscriber agreement before any further actions"
ALREADY_REVOKED_DETAIL = "Certificate already revoked"
BAD_REVOCATION_REASON_DETAIL = "unsupported revocation reason code provided"
AUTHORIZATIONS_MISSING_DETAIL = "authorizations for these names not found or expired"


def _retry_after_value(seconds: float) -> str:
    """
    ``Retry-After`` takes whole seconds; round up so that a client honouring
    it never comes back early.
    """
    return str(max(0, math.ceil(seconds)))


@attrs.define(auto_exc=True)
class V1Problem(Exception):
    """
    A v1 error, ready to be rendered as
    ``{"type": "urn:acme:error:<code>", "detail": ..., "status": ...}``.

    :ivar code: the short v1 name, such as ``malformed`` or ``badNonce``.
    :ivar detail: the human-readable explanation.
    :ivar status: the HTTP status; Boulder repeated it in the body.
    :ivar headers: extra response headers (``Location``, ``Allow``,
        ``Retry-After``, ``Link``), name to value.
    """

    code: str
    detail: str
    status: int = 400
    headers: Dict[str, str] = attrs.field(factory=dict)

    @property
    def type(self) -> str:
        """
        The full v1 problem type URI.
        """
        return V1_ERROR_PREFIX + self.code

    def to_json(self) -> Dict[str, Any]:
        """
        The problem document as a JSON object.
        """
        return {"type": self.type, "detail": self.detail, "status": self.status}

    def body(self) -> bytes:
        """
        The problem document serialized, for the response body.
        """
        return json.dumps(self.to_json()).encode("utf-8")

    def __str__(self) -> str:
        return f"{self.status} {self.type}: {self.detail}"

    # -- constructors, one per v1 type Boulder emitted (MAPPING §1.2) --------

    @classmethod
    def malformed(cls, detail: str, status: int = 400) -> "V1Problem":
        """
        The catch-all request error.  Boulder also used it, with other
        statuses, for not found (404), conflicts (409), wrong methods (405)
        and a missing Content-Length (411).
        """
        return cls("malformed", detail, status)

    @classmethod
    def unauthorized(cls, detail: str) -> "V1Problem":
        """
        Unknown key, invalid account, no agreement, not the owner; and failed
        http-01/dns-01 responses, which the v1 VA reported this way.
        """
        return cls("unauthorized", detail, 403)

    @classmethod
    def bad_nonce(cls, detail: str) -> "V1Problem":
        """
        A missing or invalid gateway nonce.  Clients retry on this type.
        """
        return cls("badNonce", detail, 400)

    @classmethod
    def rate_limited(
        cls, detail: str, retry_after: Optional[float] = None
    ) -> "V1Problem":
        """
        A rate limit was hit.  Boulder v1 never sent ``Retry-After``, but
        passing the upstream's on does no harm to clients that ignore it.

        :param retry_after: seconds the client should wait, if known.
        """
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = _retry_after_value(retry_after)
        return cls("rateLimited", detail, 429, headers)

    @classmethod
    def server_internal(cls, detail: str) -> "V1Problem":
        """
        Something went wrong on the server side (the gateway or its upstream).
        """
        return cls("serverInternal", detail, 500)

    @classmethod
    def invalid_email(cls, detail: str) -> "V1Problem":
        """
        A bad contact.  Boulder v1 used this where the drafts said
        ``invalidContact``.
        """
        return cls("invalidEmail", detail, 400)

    @classmethod
    def rejected_identifier(cls, detail: str) -> "V1Problem":
        """
        The name is forbidden by policy.
        """
        return cls("rejectedIdentifier", detail, 400)

    @classmethod
    def connection(cls, detail: str) -> "V1Problem":
        """
        Validation could not connect (and, before 2018, DNS failures too).
        """
        return cls("connection", detail, 400)

    @classmethod
    def unknown_host(cls, detail: str) -> "V1Problem":
        """
        Validation could not resolve the host.
        """
        return cls("unknownHost", detail, 400)

    @classmethod
    def tls(cls, detail: str) -> "V1Problem":
        """
        Validation hit a TLS error.
        """
        return cls("tls", detail, 400)

    @classmethod
    def dns(cls, detail: str) -> "V1Problem":
        """
        Validation hit a DNS problem (the type Boulder added in April 2018).
        """
        return cls("dns", detail, 400)

    @classmethod
    def caa(cls, detail: str) -> "V1Problem":
        """
        A CAA record forbids issuance.
        """
        return cls("caa", detail, 403)

    @classmethod
    def bad_public_key(cls, detail: str) -> "V1Problem":
        """
        A key the CA will not accept (the 2020+ v1 WFE's type).
        """
        return cls("badPublicKey", detail, 400)

    @classmethod
    def not_found(cls, detail: str) -> "V1Problem":
        """
        A 404: v1 had no dedicated type and used ``malformed``.
        """
        return cls.malformed(detail, 404)

    @classmethod
    def method_not_allowed(
        cls, allowed: Iterable[str], detail: str = "Method not allowed"
    ) -> "V1Problem":
        """
        A 405 with the ``Allow`` header HTTP requires.

        :param allowed: the methods the resource does answer.
        """
        problem = cls.malformed(detail, 405)
        problem.headers["Allow"] = ", ".join(allowed)
        return problem

    @classmethod
    def conflict(cls, detail: str, location: Optional[str] = None) -> "V1Problem":
        """
        A 409, as for "Registration key is already in use" (which must carry
        the existing registration's ``Location``) or a repeated revocation.
        """
        problem = cls.malformed(detail, 409)
        if location is not None:
            problem.headers["Location"] = location
        return problem

    @classmethod
    def upstream_unavailable(
        cls, reason: str, retry_after: Optional[float] = None
    ) -> "V1Problem":
        """
        The upstream CA could not be used.  With a known ``retry_after`` this
        is a 503 telling the client when to come back; otherwise a plain 500.
        """
        detail = f"The upstream CA failed: {reason}"
        if retry_after is None:
            return cls.server_internal(detail)
        return cls(
            "serverInternal",
            detail,
            503,
            {"Retry-After": _retry_after_value(retry_after)},
        )


# -- upstream (v2) → v1 ------------------------------------------------------

#: v2 short code → (v1 code, v1 status).  A status of ``None`` keeps the
#: upstream's own status (only ``malformed`` does: it carried 404/405/409 in
#: v1 too).  Codes needing more than a rename are handled in `from_upstream`.
_SIMPLE_MAPPING = {
    "malformed": ("malformed", None),
    "unauthorized": ("unauthorized", 403),
    "externalAccountRequired": ("unauthorized", 403),
    "incorrectResponse": ("unauthorized", 403),
    "rejectedIdentifier": ("rejectedIdentifier", 400),
    "unsupportedIdentifier": ("malformed", 400),
    "caa": ("caa", 403),
    "dns": ("dns", 400),
    "connection": ("connection", 400),
    "tls": ("tls", 400),
    "badCSR": ("malformed", 400),
    "badPublicKey": ("malformed", 400),
    "badSignatureAlgorithm": ("malformed", 400),
    "invalidContact": ("invalidEmail", 400),
    "unsupportedContact": ("invalidEmail", 400),
}

#: The v1 type of the v2 codes `from_upstream` treats specially, used when
#: one of them is the first subproblem of a compound error.
_SPECIAL_CODES = {
    "accountDoesNotExist": "unauthorized",
    "userActionRequired": "unauthorized",
    "orderNotReady": "unauthorized",
    "rateLimited": "rateLimited",
    "alreadyRevoked": "malformed",
    "badRevocationReason": "malformed",
}

_LINK = re.compile(r"<([^>]*)>((?:\s*;[^,<]*)*)")
_TOS_REL = re.compile(r"""\brel\s*=\s*"?[^";,]*\bterms-of-service\b""")


def _terms_of_service_link(headers: Mapping[str, str]) -> Optional[str]:
    """
    Pick the ``rel="terms-of-service"`` link out of an upstream ``Link``
    header (which may hold several comma-separated links), re-rendered in the
    quoted form v1 clients parse.
    """
    value = headers.get("link") or headers.get("Link")
    if not isinstance(value, str):
        return None
    for match in _LINK.finditer(value):
        if _TOS_REL.search(match.group(2)):
            return f'<{match.group(1)}>;rel="terms-of-service"'
    return None


class V2Subproblem(Protocol):
    """
    What `from_upstream` reads of a subproblem.
    """

    @property
    def detail(self) -> str: ...

    @property
    def code(self) -> str: ...

    @property
    def identifier(self) -> Optional[Mapping[str, Any]]: ...


class V2Problem(Protocol):
    """
    What `from_upstream` reads of an upstream problem document
    (`gateway.translate.errors.UpstreamRefused`, or the upstream client's
    own exception, which has the same members).
    """

    @property
    def type(self) -> str: ...

    @property
    def detail(self) -> str: ...

    @property
    def status(self) -> int: ...

    @property
    def code(self) -> str: ...

    @property
    def subproblems(self) -> Sequence[V2Subproblem]: ...

    @property
    def retry_after(self) -> Optional[float]: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


def _subproblem_text(sub: V2Subproblem) -> str:
    value = None
    if sub.identifier is not None:
        value = sub.identifier.get("value")
    detail = sub.detail or sub.code
    if isinstance(value, str) and value:
        return f"{value}: {detail}"
    return detail


def _flattened_detail(problem: V2Problem, detail: Optional[str] = None) -> str:
    """
    The upstream detail (or ``detail``) with every subproblem appended: v1
    problem documents have no ``subproblems``, and the per-name reasons are
    the useful part of a compound error.
    """
    text = problem.detail if detail is None else detail
    parts = [_subproblem_text(sub) for sub in problem.subproblems]
    if not parts:
        return text
    joined = "; ".join(parts)
    return f"{text}: {joined}" if text else joined


def _upstream_failed(problem: V2Problem) -> V1Problem:
    detail = f"The upstream CA failed: {problem.status} {problem.code}"
    flattened = _flattened_detail(problem)
    if flattened:
        detail += f": {flattened}"
    return V1Problem.server_internal(detail)


def from_upstream(error: V2Problem) -> V1Problem:
    """
    Translate an upstream problem document into the problem a v1 client
    gets (MAPPING §3.4), keeping the upstream's detail.

    Anything unexpected (a 5xx, a type the table does not know, a v2
    ``badNonce`` that escaped the upstream client's retries) becomes a v1
    ``serverInternal``: the client cannot fix it, and must not see a v2 type.
    """
    status = error.status
    if not isinstance(status, int) or status >= 500 or status < 400:
        return _upstream_failed(error)

    if error.type == "about:blank":
        if status == 404:
            return V1Problem.not_found(error.detail or "Not found")
        return _upstream_failed(error)
    if not error.type.startswith(V2_ERROR_PREFIX):
        return _upstream_failed(error)

    code = error.code
    if code == "compound":
        if not error.subproblems:
            return V1Problem.malformed(_flattened_detail(error), status)
        first = error.subproblems[0].code
        mapped = _SIMPLE_MAPPING.get(first)
        v1_code = mapped[0] if mapped else _SPECIAL_CODES.get(first, "malformed")
        return V1Problem(v1_code, _flattened_detail(error), status)

    mapped = _SIMPLE_MAPPING.get(code)
    if mapped is not None:
        v1_code, v1_status = mapped
        return V1Problem(v1_code, _flattened_detail(error), v1_status or status)

    if code == "accountDoesNotExist":
        return V1Problem.unauthorized(NO_REGISTRATION_DETAIL)
    if code == "userActionRequired":
        detail = MUST_AGREE_DETAIL
        if error.detail:
            detail += f" (upstream CA: {_flattened_detail(error)})"
        problem = V1Problem.unauthorized(detail)
        link = _terms_of_service_link(error.headers)
        if link is not None:
            problem.headers["Link"] = link
        return problem
    if code == "rateLimited":
        retry_after = error.retry_after
        if retry_after is None:
            raw = error.headers.get("retry-after")
            if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():
                retry_after = float(raw.strip())
        return V1Problem.rate_limited(_flattened_detail(error), retry_after)
    if code == "alreadyRevoked":
        return V1Problem.conflict(ALREADY_REVOKED_DETAIL)
    if code == "badRevocationReason":
        return V1Problem.malformed(
            _flattened_detail(error, error.detail or BAD_REVOCATION_REASON_DETAIL)
        )
    if code == "orderNotReady":
        detail = AUTHORIZATIONS_MISSING_DETAIL
        if error.detail:
            detail += f" (upstream CA: {_flattened_detail(error)})"
        return V1Problem.unauthorized(detail)
    if code == "badNonce":
        return V1Problem.server_internal(
            "The upstream CA failed: it kept rejecting the gateway's own nonce: "
            + _flattened_detail(error)
        )
    return _upstream_failed(error)


# -- domain refusals → v1 ------------------------------------------------------

#: The v1 type and status of each refusal that is only a rename.
_REFUSALS = (
    (Malformed, "malformed", 400),
    (IdentifierRejected, "malformed", 400),
    (CSRRejected, "malformed", 400),
    (NotFound, "malformed", 404),
    (Unauthorized, "unauthorized", 403),
    (InvalidContact, "invalidEmail", 400),
    (InternalFailure, "serverInternal", 500),
)


def problem_for(error: BaseException) -> Optional[V1Problem]:
    """
    The v1 problem document for whatever a request raised: the face's own
    `V1Problem` as it is, a domain refusal (`gateway.translate.errors`)
    with the v1 type Boulder used for it, an upstream refusal per
    MAPPING §3.4.

    :return: `None` for anything else (a bug): the caller logs it and
        answers ``serverInternal``.
    """
    if isinstance(error, V1Problem):
        return error
    if isinstance(error, UpstreamRefused):
        return from_upstream(error)
    if isinstance(error, UpstreamFailed):
        return V1Problem.upstream_unavailable(error.reason, error.retry_after)
    if isinstance(error, ValidationFailed):
        if error.error is None:
            return V1Problem.unauthorized(error.detail)
        problem = from_upstream(error.error)
        return V1Problem(
            problem.code,
            f"Revalidation of {error.name} by {error.challenge_type} failed: {problem.detail}",
            problem.status,
            problem.headers,
        )
    if isinstance(error, RateLimited):
        return V1Problem.rate_limited(error.detail, error.retry_after)
    if isinstance(error, Conflict):
        return V1Problem.conflict(error.detail, location=error.location)
    for kind, code, status in _REFUSALS:
        if isinstance(error, kind):
            return V1Problem(code, error.detail, status)
    if isinstance(error, Refused):
        return V1Problem.server_internal(error.detail)
    return None
