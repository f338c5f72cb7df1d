"""
ACME v2 problem documents (``urn:ietf:params:acme:error:*``), and the one
place where whatever went wrong in a v2 request becomes one.

The layers below raise domain exceptions (`gateway.translate.errors`);
`problem_for` maps each to the v2 type and status Boulder's v2 front end
gave it (2018-2019, what draft-era clients were written against).  An
upstream refusal is already a v2 problem and passes through with its type,
detail, status and subproblems -- except what the client cannot act on (a
``badNonce`` the gateway's own retries did not get past, a 5xx), which is
the gateway's ``serverInternal``.  The JWS checks the v2 face shares with
the v1 face raise `gateway.v1.problems.V1Problem`: the same short codes,
renamed where v2 spells them otherwise.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import attrs

from gateway.translate.errors import (
    V2_ERROR_PREFIX,
    AccountMissing,
    AlreadyRevoked,
    Conflict,
    CSRRejected,
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
from gateway.v1.problems import V1Problem

PROBLEM_CONTENT_TYPE = "application/problem+json"

#: v1 codes the shared JWS checks raise, spelled as v2 spells them.
_V1_CODES = {"invalidEmail": "invalidContact", "unknownHost": "dns"}


def _retry_after(seconds: float) -> str:
    return str(max(0, math.ceil(seconds)))


@attrs.define(auto_exc=True)
class V2Problem(Exception):
    """
    A v2 error, rendered as ``{"type": "urn:ietf:params:acme:error:<code>",
    "detail", "status"}`` (and ``subproblems`` when the CA gave some).

    :ivar headers: extra response headers (``Allow``, ``Retry-After``,
        ``Location``).
    """

    code: str
    detail: str
    status: int = 400
    headers: Dict[str, str] = attrs.field(factory=dict)
    subproblems: Tuple[Mapping[str, Any], ...] = ()

    @property
    def type(self) -> str:
        return V2_ERROR_PREFIX + self.code

    def to_json(self) -> Dict[str, Any]:
        document: Dict[str, Any] = {"type": self.type, "detail": self.detail,
                                    "status": self.status}
        if self.subproblems:
            document["subproblems"] = [dict(sub) for sub in self.subproblems]
        return document

    def body(self) -> bytes:
        return json.dumps(self.to_json()).encode("utf-8")

    def __str__(self) -> str:
        return f"{self.status} {self.type}: {self.detail}"

    @classmethod
    def malformed(cls, detail: str, status: int = 400) -> "V2Problem":
        return cls("malformed", detail, status)

    @classmethod
    def not_found(cls, detail: str) -> "V2Problem":
        return cls.malformed(detail, 404)

    @classmethod
    def method_not_allowed(cls, allowed: Iterable[str]) -> "V2Problem":
        problem = cls.malformed("Method not allowed", 405)
        problem.headers["Allow"] = ", ".join(allowed)
        return problem

    @classmethod
    def bad_nonce(cls, detail: str) -> "V2Problem":
        return cls("badNonce", detail)

    @classmethod
    def unauthorized(cls, detail: str) -> "V2Problem":
        return cls("unauthorized", detail, 403)

    @classmethod
    def account_does_not_exist(cls, detail: str) -> "V2Problem":
        return cls("accountDoesNotExist", detail, 400)

    @classmethod
    def server_internal(cls, detail: str, status: int = 500,
                        retry_after: Optional[float] = None) -> "V2Problem":
        problem = cls("serverInternal", detail, status)
        if retry_after is not None:
            problem.headers["Retry-After"] = _retry_after(retry_after)
        return problem


def from_upstream(error: UpstreamRefused) -> V2Problem:
    """
    The CA's own problem, for a v2 client: passed through, unless the client
    cannot act on it.
    """
    status = error.status
    if status >= 500 or status < 400 or not error.type.startswith(V2_ERROR_PREFIX):
        if error.type == "about:blank" and status == 404:
            return V2Problem.not_found(error.detail or "Not found")
        return V2Problem.server_internal(
            f"The upstream CA failed: {status} {error.code}: {error.detail}".rstrip(": "))
    if error.code == "badNonce":
        return V2Problem.server_internal(
            f"The upstream CA failed: it kept rejecting the gateway's own nonce: {error.detail}")
    problem = V2Problem(error.code, error.detail, status, subproblems=tuple(
        {"type": sub.type, "detail": sub.detail,
         **({"identifier": dict(sub.identifier)} if sub.identifier else {})}
        for sub in error.subproblems))
    if error.code == "rateLimited" and error.retry_after is not None:
        problem.headers["Retry-After"] = _retry_after(error.retry_after)
    return problem


#: The v2 type and status of each refusal that is only a rename; the
#: first that fits wins (subclasses before their bases).
_REFUSALS = (
    (AccountMissing, "accountDoesNotExist", 400),
    (AlreadyRevoked, "alreadyRevoked", 400),
    (Malformed, "malformed", 400),
    (IdentifierRejected, "rejectedIdentifier", 400),
    (CSRRejected, "badCSR", 400),
    (NotFound, "malformed", 404),
    (Unauthorized, "unauthorized", 403),
    (InvalidContact, "invalidContact", 400),
    (InternalFailure, "serverInternal", 500),
)


def problem_for(error: BaseException) -> Optional[V2Problem]:
    """
    The v2 problem document for whatever a v2 request raised.

    :return: `None` for anything else (a bug): the caller logs it and
        answers ``serverInternal``.
    """
    if isinstance(error, V2Problem):
        return error
    if isinstance(error, V1Problem):
        return V2Problem(_V1_CODES.get(error.code, error.code), error.detail, error.status,
                         dict(error.headers))
    if isinstance(error, UpstreamRefused):
        return from_upstream(error)
    if isinstance(error, UpstreamFailed):
        return V2Problem.server_internal(f"The upstream CA failed: {error.reason}",
                                         503 if error.retry_after is not None else 500,
                                         error.retry_after)
    if isinstance(error, ValidationFailed):
        if error.error is None:
            return V2Problem.unauthorized(error.detail)
        upstream = from_upstream(error.error)
        return V2Problem(upstream.code, error.detail, upstream.status, upstream.headers,
                         upstream.subproblems)
    if isinstance(error, RateLimited):
        problem = V2Problem("rateLimited", error.detail, 429)
        if error.retry_after is not None:
            problem.headers["Retry-After"] = _retry_after(error.retry_after)
        return problem
    if isinstance(error, Conflict) and not isinstance(error, AlreadyRevoked):
        problem = V2Problem.malformed(error.detail, 409)
        if error.location is not None:
            problem.headers["Location"] = error.location
        return problem
    for kind, code, status in _REFUSALS:
        if isinstance(error, kind):
            return V2Problem(code, error.detail, status)
    if isinstance(error, Refused):
        return V2Problem.server_internal(error.detail)
    return None
