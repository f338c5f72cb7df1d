"""
tls-sni-01 for v1 installers that answer nothing else (certbot's nginx
and apache plugins before 0.21, appliances built on them).

No CA validates tls-sni-01 any more, so it is a challenge the gateway
offers and judges itself: a v1 authorization offers it beside the CA's
challenges when the gateway has a means to prove names upstream
(`Validators.offers_tls_sni01`).  It is stored like any challenge, with no
upstream URL and a token of its own.  When the client answers it, the
gateway checks the answer as Boulder's VA did
(`gateway.validation.tlssni01`), then proves the name upstream with its own
means; the authorization is valid only when both hold
(`gateway.translate.authorizations` runs the two steps).  A failed check
is kept in the challenge (`ChallengeProblem`, Boulder's validation record)
and the authorization is invalid, as Boulder showed it.

The values here are what the v1 face renders: it never sees the checker's
own types (v1 does not import the validation layer).
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Dict, Mapping, Optional, Tuple

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from gateway.keys.jose import b64url
from gateway.status import Status
from gateway.store import Challenge
from gateway.translate.revalidation import TLSSNI01Check
from gateway.validation.tlssni01 import TLSSNI01Result

#: The challenge type.
TLS_SNI_01 = "tls-sni-01"

#: The upstream URL of a challenge the gateway judges itself: none.
NO_UPSTREAM = ""

#: Random bytes of a token: 256 bits, as Boulder's.
TOKEN_BYTES = 32

#: Seconds between tries of a check that found another certificate or no
#: server: an installer reloads its web server just before it answers, and
#: nginx applies a reload asynchronously (certbot-nginx sleeps one second
#: and hopes).  Boulder tried once; a retry costs a legitimate client
#: nothing and an impostor nothing either.
RETRY_DELAYS = (2.0, 4.0)
_RETRIED = frozenset({"unauthorized", "connection"})


@attrs.frozen
class ChallengeProblem:
    """
    Why the gateway judged a challenge invalid: an ACME error code (without
    namespace: ``unauthorized``, ``connection``, ``tls``, ``dns``…), its
    detail, and the HTTP status Boulder gave it.
    """

    code: str
    detail: str
    status: int = 400

    def to_json(self) -> Dict[str, Any]:
        return {"code": self.code, "detail": self.detail, "status": self.status}

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> "ChallengeProblem":
        return cls(str(document.get("code", "serverInternal")), str(document.get("detail", "")),
                   int(document.get("status", 500)))


@attrs.frozen
class GatewayCheck:
    """
    The outcome of the gateway's check of a challenge: the problem when it
    failed, and Boulder's validation record (v1 JSON objects).
    """

    problem: Optional[ChallengeProblem]
    record: Tuple[Mapping[str, Any], ...] = ()


def judged_by_gateway(challenge: Challenge) -> bool:
    """
    Whether the gateway offers and judges ``challenge`` itself (it has no
    upstream counterpart).
    """
    return challenge.upstream_url == NO_UPSTREAM


def offered_challenge(challenge_id: str, authorization_id: str, account_id: int) -> Challenge:
    """
    A new tls-sni-01 challenge for an authorization, with a fresh token.
    """
    return Challenge(id=challenge_id, authorization_id=authorization_id, account_id=account_id,
                     upstream_url=NO_UPSTREAM, type=TLS_SNI_01,
                     token=b64url(secrets.token_bytes(TOKEN_BYTES)), status=Status.PENDING)


def outcome(challenge: Challenge) -> Optional[GatewayCheck]:
    """
    What the gateway's check of ``challenge`` found, or ``None`` before any
    check (or for a challenge the CA judges).
    """
    if not judged_by_gateway(challenge) or (challenge.error is None
                                            and challenge.validation_record is None):
        return None
    problem = None
    if challenge.error is not None:
        problem = ChallengeProblem.from_json(json.loads(challenge.error))
    record: Tuple[Mapping[str, Any], ...] = ()
    if challenge.validation_record is not None:
        record = tuple(json.loads(challenge.validation_record))
    return GatewayCheck(problem, record)


def stored_outcome(checked: GatewayCheck) -> Dict[str, Optional[str]]:
    """
    ``checked`` as the challenge's ``error`` and ``validation_record``
    columns.
    """
    return {
        "error": None if checked.problem is None else json.dumps(checked.problem.to_json()),
        "validation_record": json.dumps(list(checked.record)),
    }


def of_result(result: TLSSNI01Result) -> GatewayCheck:
    """
    The checker's result as the gateway keeps it.
    """
    problem = None
    if result.problem is not None:
        problem = ChallengeProblem(result.problem.code, result.problem.detail,
                                   result.problem.status)
    return GatewayCheck(problem, (result.record.to_json(),))


async def check(checker: TLSSNI01Check, clock: IReactorTime, name: str,
                key_authorization: str) -> GatewayCheck:
    """
    Check ``name``'s tls-sni-01 answer for ``key_authorization``, trying
    again after each of `RETRY_DELAYS` while the server presents another
    certificate or cannot be reached.
    """
    result = await checker.check(name, key_authorization)
    for delay in RETRY_DELAYS:
        if result.problem is None or result.problem.code not in _RETRIED:
            break
        await deferLater(clock, delay, lambda: None)
        result = await checker.check(name, key_authorization)
    return of_result(result)
