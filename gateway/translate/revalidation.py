"""
Completing an order's authorizations with the gateway's own responders.

Let's Encrypt's v2 does not honour v1 authorizations, and legacy clients
clean up their challenge files before ``new-cert``.  When the order to
finalize still has pending authorizations, the gateway chooses one
challenge per identifier (wildcards only by dns-01; other names by the
operator's preference among the configured responders), provisions all of
them, answers them, waits for the outcome, and removes every record
afterwards — also when validation failed.
"""

from __future__ import annotations

from typing import Awaitable, Dict, List, Optional, Protocol, Sequence, Tuple

import attrs
from twisted.logger import Logger

from gateway.translate.errors import InternalFailure, Unauthorized, UpstreamRefused, ValidationFailed
from gateway.status import Status
from gateway.upstream.client import UpstreamClient
from gateway.upstream import messages as v2
from gateway.validation.dns01 import ResponderError
from gateway.validation.interfaces import IResponder
from gateway.validation.tlssni01 import TLSSNI01Result

log = Logger()

DEFAULT_PREFERENCE = ("http-01", "dns-01")

#: The flag that enables each challenge type, for refusals that say how to
#: let the gateway revalidate.
ENABLING_FLAGS = {
    "http-01": "--http01-listen",
    "dns-01": "--dns01-hook or --dns01-rfc2136",
}


class MaybeWildcard(Protocol):
    """
    A name, or an authorization of one, that may be a wildcard.
    """

    @property
    def wildcard(self) -> bool: ...


class TLSSNI01Check(Protocol):
    """
    Checks a client's tls-sni-01 answer as Boulder did
    (`gateway.validation.tlssni01.TLSSNI01Checker` is one).
    """

    def check(self, name: str, key_authorization: str) -> Awaitable[TLSSNI01Result]: ...


@attrs.frozen
class Validators:
    """
    The configured responders, by challenge type, and the preference order
    for names that are not wildcards.

    :ivar tls_sni01: the check of tls-sni-01 answers, when the gateway may
        offer tls-sni-01 to v1 clients (it does only with a responder to
        prove the name upstream with: `offers_tls_sni01`).
    """

    responders: Dict[str, IResponder] = attrs.field(factory=dict)
    preference: Tuple[str, ...] = DEFAULT_PREFERENCE
    tls_sni01: Optional[TLSSNI01Check] = None

    @property
    def configured(self) -> bool:
        return bool(self.responders)

    @property
    def offers_tls_sni01(self) -> bool:
        """
        Whether v1 authorizations offer tls-sni-01: the gateway can check
        the client's answer and then prove the name upstream itself.
        """
        return self.tls_sni01 is not None and self.configured

    def acceptable_types(self, wildcard: bool) -> Tuple[str, ...]:
        if wildcard:
            return ("dns-01",)
        return tuple(t for t in self.preference if t in ("http-01", "dns-01"))

    def choose(self, authorization: v2.Authorization) -> Optional["Choice"]:
        """
        The challenge to use for ``authorization`` and its responder, or
        ``None`` when no configured responder fits.
        """
        for kind in self.acceptable_types(authorization.wildcard):
            responder = self.responders.get(kind)
            challenge = authorization.challenge(kind)
            if responder is not None and challenge is not None and challenge.token:
                return Choice(authorization, challenge, challenge.token, responder)
        return None

    def missing_means(self, names: Sequence["MaybeWildcard"]) -> str:
        """
        Which flags would let the gateway validate ``names`` (authorizations
        or checked names): dns-01 for a wildcard, either means for any other.
        """
        if any(a.wildcard for a in names):
            return ENABLING_FLAGS["dns-01"]
        return f"{ENABLING_FLAGS['http-01']} or {ENABLING_FLAGS['dns-01']}"


@attrs.frozen
class Choice:
    """
    How the gateway validates one authorization: the challenge, its token,
    and the responder that makes it answerable.
    """

    authorization: v2.Authorization
    challenge: v2.Challenge
    token: str
    responder: IResponder


async def revalidate(
    upstream: UpstreamClient,
    account: v2.UpstreamAccount,
    authorizations: Sequence[v2.Authorization],
    validators: Validators,
) -> List[v2.Authorization]:
    """
    Validate every pending authorization in ``authorizations``.

    :return: the final upstream authorizations.
    :raises Unauthorized: when some name has no usable responder (naming
        the flag that would add one).
    :raises ValidationFailed: with the CA's own reason when validation fails.
    :raises InternalFailure: when a responder could not provision.
    """
    pending = [a for a in authorizations if a.status == Status.PENDING]
    plan: List[Choice] = []
    unservable = []
    for authorization in pending:
        choice = validators.choose(authorization)
        if choice is None:
            unservable.append(authorization)
        else:
            plan.append(choice)
    if unservable:
        names = ", ".join(sorted(a.name for a in unservable))
        raise Unauthorized(
            f"Error creating new cert :: authorizations for these names not found or expired: "
            f"{names}. The upstream CA requires them to be validated again; start the gateway "
            f"with {validators.missing_means(unservable)} to let it revalidate them."
        )
    published: List[Tuple[Choice, str]] = []
    try:
        for choice in plan:
            key_authorization = account.key.key_authorization(choice.token)
            await choice.responder.publish(choice.authorization.identifier, choice.token,
                                           key_authorization)
            published.append((choice, key_authorization))
        for choice, _ in published:
            log.info("revalidating {name} with {kind}", name=choice.authorization.name,
                     kind=choice.challenge.type)
            await upstream.answer_challenge(account, choice.challenge.url)
        results = []
        for choice, _ in published:
            final = await upstream.poll_authorization(account, choice.authorization.url)
            if final.status != Status.VALID:
                raise _failure(final, choice.challenge.type)
            results.append(final)
        return results
    except ResponderError as error:
        raise InternalFailure(f"The gateway could not provision a challenge: {error}") from error
    finally:
        for choice, key_authorization in published:
            try:
                await choice.responder.withdraw(choice.authorization.identifier, choice.token,
                                                key_authorization)
            except Exception as error:
                # A record left behind must not hide the outcome; the
                # operator learns of it here.
                log.warn("cleanup of {kind} for {name} failed: {error}",
                         kind=choice.challenge.type, name=choice.authorization.name,
                         error=str(error))


def _failure(authorization: v2.Authorization, kind: str) -> ValidationFailed:
    """
    Why the CA did not validate ``authorization``: the first challenge error
    it gave, or the authorization's status.
    """
    errors = [c.error for c in authorization.challenges if c.error is not None]
    return ValidationFailed(authorization.name, kind, authorization.status,
                            UpstreamRefused.of(errors[0]) if errors else None)
