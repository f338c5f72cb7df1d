"""
What the translation layer refuses, as domain exceptions.

The rules below the v1 face — identifier policy, CSRs, the rate-limit
budget, revalidation, the flows themselves — say *why* a request cannot be
served, never how a wire protocol spells that: each raises one of these.
The v1 face maps them to v1 problem documents in one place
(`gateway.v1.problems.problem_for`), so the type, status and headers a
legacy client sees are decided there, and the ``detail`` each carries is
what the client reads: Boulder's own words wherever Boulder had them
(clients and operators' log searches match them).

Upstream failures cross the same border: a flow entry point (`flow`) turns
the upstream client's `UpstreamProblem` into `UpstreamRefused` (the CA's
problem document, as data) and its other errors into `UpstreamFailed`, so
the face never needs the upstream layer to understand an error.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Coroutine, Mapping, Optional, ParamSpec, Tuple, TypeVar

import attrs

from gateway.upstream.errors import UpstreamError, UpstreamProblem, UpstreamUnavailable

P = ParamSpec("P")
T = TypeVar("T")


class Refused(Exception):
    """
    A request the gateway does not carry out.

    :ivar detail: what the client reads.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


class Malformed(Refused):
    """
    The request itself is wrong: a payload field, a value out of range.
    """


class IdentifierRejected(Refused):
    """
    A DNS name the gateway (or the CA, by its rules) would not issue for.
    """


class CSRRejected(Refused):
    """
    A CSR the gateway cannot pass upstream: unreadable, badly signed, for
    the account key, asking for Must-Staple, or naming what it cannot.
    """


class NotFound(Refused):
    """
    Nothing at that URL (any more).
    """


class Conflict(Refused):
    """
    The request collides with what exists: a revocation repeated, a key in
    use by another account.

    :ivar location: the URL of what exists, when the client should see it.
    """

    def __init__(self, detail: str, location: Optional[str] = None) -> None:
        super().__init__(detail)
        self.location = location


class AlreadyRevoked(Conflict):
    """
    The certificate was revoked already.
    """


class Unauthorized(Refused):
    """
    The signer may not do this: an unknown key, another account's object, a
    deactivated registration, a name it never authorized.
    """


class ExternalAccountRequired(Unauthorized):
    """
    The CA creates accounts only with an External Account Binding, and the
    gateway has none for this key, or the CA refused the one it sent.
    """


class AccountMissing(Unauthorized):
    """
    The key has no account, and the client asked only for an existing one
    (a v2 ``newAccount`` with ``onlyReturnExisting``), or signed with a
    ``kid`` the gateway cannot tie to any key it knows.
    """


class InvalidContact(Refused):
    """
    A contact the gateway cannot pass upstream (only ``mailto:`` URIs).
    """


class RateLimited(Refused):
    """
    The account's upstream budget is spent, or the CA told it to back off.

    :ivar retry_after: seconds until it may try again, when known.
    """

    def __init__(self, detail: str, retry_after: Optional[float] = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class InternalFailure(Refused):
    """
    The gateway cannot complete the request for a reason of its own (a CA
    it cannot reach any more, a responder that could not provision): not
    the client's fault.
    """


@attrs.frozen
class RefusedSubproblem:
    """
    One subproblem of an upstream refusal (RFC 8555 §6.7.1).
    """

    type: str
    detail: str
    identifier: Optional[Mapping[str, Any]] = None

    @property
    def code(self) -> str:
        return short_code(self.type)


V2_ERROR_PREFIX = "urn:ietf:params:acme:error:"


def short_code(error_type: str) -> str:
    """
    The short ACME error name of a v2 problem type (``rateLimited``), or the
    whole type when it is not in the ACME namespace.
    """
    if error_type.startswith(V2_ERROR_PREFIX):
        return error_type[len(V2_ERROR_PREFIX):]
    return error_type


class UpstreamRefused(Refused):
    """
    The upstream CA answered with a problem document; its contents, for the
    face to translate (the type a v1 client understands, the CA's detail).

    :ivar type: the v2 problem type URI, or ``about:blank``.
    :ivar status: the HTTP status the CA answered with.
    :ivar subproblems: `RefusedSubproblem` entries.
    :ivar retry_after: seconds, when the CA said so.
    :ivar headers: the CA's response headers (lower-case names, first value),
        kept for ``Link`` and ``Retry-After``.
    """

    def __init__(self, type: str, detail: str, status: int,
                 subproblems: Tuple[RefusedSubproblem, ...] = (),
                 retry_after: Optional[float] = None,
                 headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(detail)
        self.type = type
        self.status = status
        self.subproblems = tuple(subproblems)
        self.retry_after = retry_after
        self.headers = dict(headers or {})

    @property
    def code(self) -> str:
        return short_code(self.type)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"

    @classmethod
    def of(cls, problem: UpstreamProblem) -> "UpstreamRefused":
        """
        The refusal carried by an upstream client's `UpstreamProblem`.
        """
        return cls(
            problem.type, problem.detail, problem.status,
            tuple(RefusedSubproblem(s.type, s.detail, s.identifier) for s in problem.subproblems),
            problem.retry_after, problem.headers,
        )


class UpstreamFailed(Refused):
    """
    The upstream CA could not be used: unreachable, too slow, answering
    what is not ACME, or a poll that never ended.

    :ivar reason: what happened, for the client and the log.
    :ivar retry_after: seconds, when the CA said when to come back (503).
    """

    def __init__(self, reason: str, retry_after: Optional[float] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after

    @classmethod
    def of(cls, error: UpstreamError) -> "UpstreamFailed":
        retry_after = error.retry_after if isinstance(error, UpstreamUnavailable) else None
        return cls(str(error), retry_after)


class ValidationFailed(Refused):
    """
    The gateway answered a challenge for a name itself and the CA did not
    validate it.

    :ivar name: the name, as a certificate spells it.
    :ivar challenge_type: the challenge the gateway answered.
    :ivar status: the authorization's final status.
    :ivar error: the CA's reason, when the challenge carried one.
    """

    def __init__(self, name: str, challenge_type: str, status: str,
                 error: Optional[UpstreamRefused] = None) -> None:
        reason = error.detail if error is not None else f"the authorization is {status}"
        super().__init__(f"Revalidation of {name} by {challenge_type} failed: {reason}")
        self.name = name
        self.challenge_type = challenge_type
        self.status = status
        self.error = error


def flow(function: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """
    Mark a flow the v1 face calls: whatever the upstream client raised
    leaves it as `UpstreamRefused` or `UpstreamFailed` (the original chained
    as ``__cause__``), so the face reads domain exceptions only.

    Flows are wrapped by assignment after their definition
    (``new_certificate = flow(new_certificate)``), not with decorator
    syntax: mutmut leaves decorated functions unmutated, and the flows are
    where mutation testing (``./scripts/mutation``) matters most.
    """

    @functools.wraps(function)
    async def refused(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await function(*args, **kwargs)
        except UpstreamProblem as problem:
            raise UpstreamRefused.of(problem) from problem
        except UpstreamError as error:
            raise UpstreamFailed.of(error) from error

    return refused

