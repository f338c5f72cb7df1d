"""
What every translated flow works with: a frozen record of collaborators.

The flows (`gateway.translate.registration`, `.authorizations`,
`.issuance`, `.revocation`) take a `Context` and the validated request
(`gateway.translate.requests`); the context holds nothing of its own but
the objects that do: the upstream client, the store, the signing keys, the
clock, the operator's policy and responders, the rate-limit budget, and the
in-memory helpers (`gateway.translate.memory`).  One `Context` is made by
the wiring (`gateway.process.wiring.build_gateway`) and shared by every
request.
"""

from __future__ import annotations

from typing import Iterable, Optional, Type, TypeVar, Union

import attrs
from twisted.internet.interfaces import IReactorTime

from gateway.store import IStore, Record
from gateway.store.records import format_timestamp, timestamp_instant
from gateway.translate.bindings import AccountBindings
from gateway.translate.budget import Budget
from gateway.translate.following import Following
from gateway.translate.memory import (
    BackgroundWork,
    NameLocks,
    OtherCAs,
    Revalidations,
)
from gateway.translate.policy import AllowedNames, DNSName
from gateway.translate.profiles import ProfilePolicy
from gateway.translate.revalidation import Validators
from gateway.translate.signing import SigningKeys
from gateway.upstream.client import UpstreamClient


@attrs.frozen
class Policy:
    """
    Operator choices that change how flows are translated.

    :ivar allowed_names: the names any account may get through the gateway
        (``--allow-names``), or ``None`` for any.
    :ivar agree_to_terms: agree to the CA's terms of service upstream on a
        client's behalf when it sent no agreement (dehydrated 0.7 sends
        ``""`` and never updates it; migrating clients agreed long ago).
    :ivar profiles: which profile each order asks for (``--profile`` and
        the config file's rules).
    :ivar bindings: the External Account Binding of each new upstream
        account (``--eab-kid``/``--eab-hmac-key``, ``--eab-file``).
    :ivar plan_renewals: order a known certificate's whole name set at the
        first ``new-authz`` of its renewal (`gateway.translate.renewals`).
    """

    agree_to_terms: bool = True
    allowed_names: Optional[AllowedNames] = None

    def check_names(self, names: Iterable[DNSName]) -> None:
        """
        Refuse names outside ``--allow-names``, before the signer is bound
        (so no account is made for them) and before any order.

        :raises Unauthorized:
        """
        if self.allowed_names is not None:
            self.allowed_names.check(names)
    profiles: ProfilePolicy = ProfilePolicy()
    bindings: AccountBindings = AccountBindings()
    plan_renewals: bool = True


@attrs.frozen
class Context:
    """
    The collaborators of every flow.

    :ivar upstream: the client of the upstream CA (``--upstream``).
    :ivar store: the durable state.
    :ivar keys: the keys that sign upstream for each client key.
    :ivar clock: the reactor's clock.
    :ivar budget: the rate-limit accounting of each upstream account.
    :ivar policy: the operator's choices.
    :ivar validators: the gateway's own challenge responders, if any.
    :ivar locks: per-name locks against concurrent duplicates.
    :ivar background: follow-up work no response waits for.
    :ivar following: the authorizations and orders the gateway follows
        upstream itself, and the upstream reads in flight.
    :ivar revalidations: names the gateway validated itself.
    :ivar other_cas: clients of the CAs the gateway ran against before.
    """

    upstream: UpstreamClient
    store: IStore
    keys: SigningKeys
    clock: IReactorTime
    budget: Budget
    policy: Policy = Policy()
    validators: Validators = attrs.field(factory=Validators)
    locks: NameLocks = attrs.field(factory=NameLocks)
    background: BackgroundWork = attrs.field(factory=BackgroundWork)
    following: Following = attrs.field(
        default=attrs.Factory(lambda self: Following(self.clock, self.background), takes_self=True))
    revalidations: Revalidations = attrs.field(factory=Revalidations)
    other_cas: OtherCAs = attrs.field(
        default=attrs.Factory(lambda self: OtherCAs(self.upstream), takes_self=True))

    def now(self) -> str:
        """
        The current time as the store spells timestamps.
        """
        return format_timestamp(self.clock.seconds())

    def has_expired(self, expires: Optional[str]) -> bool:
        """
        Whether an RFC 3339 ``expires`` (of an authorization or order) has
        passed on the gateway's clock; no or unreadable expiry never has.
        """
        return lapses_within(self.clock, expires, 0.0)

    def is_current(self, record: object) -> bool:
        """
        Whether a stored order, authorization or certificate belongs to the
        CA the gateway runs against now (``--upstream``), rather than to one
        it ran against before.
        """
        bound_to: Optional[str] = getattr(self.store, "upstream", None)
        directory_url: Optional[str] = getattr(record, "directory_url", None)
        return bound_to is None or directory_url == bound_to


R = TypeVar("R")


def written_as(kind: Type[R], record: Record) -> R:
    """
    ``record`` (returned by `IStore.write`, or a lookup the caller knows
    finds) as the type the caller wrote.

    :raises TypeError: when it is not (a bug in the caller).
    """
    if not isinstance(record, kind):
        raise TypeError(f"expected a {kind.__name__}, the store returned {record!r}")
    return record


def lapses_within(clock: IReactorTime, expires: Optional[str], seconds: Union[int, float]) -> bool:
    """
    Whether an RFC 3339 ``expires`` passes within ``seconds`` from now; no
    or unreadable expiry never does.
    """
    if not expires:
        return False
    try:
        return timestamp_instant(expires).timestamp() <= clock.seconds() + seconds
    except ValueError:
        return False
