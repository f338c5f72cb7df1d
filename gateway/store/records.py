"""
The records the gateway keeps durably, the operations of a multi-record
write, and the errors a store raises.

A legacy v1 client keeps the URLs the gateway hands out (registration,
authorization, challenge and certificate URLs) and will come back to them,
possibly after a gateway restart.  Behind each of those URLs is an upstream
ACME v2 object that can only be read with a POST-as-GET signed by the owning
account's key, while v1 reads are unauthenticated GETs.  So every record below
remembers its upstream URL *and* the ``account_id`` that owns it (see
MAPPING.md §3.1).

The records are pure values: frozen attrs classes without I/O, changed with
`attrs.evolve`.  Their converters and validators normalise and check values
here rather than in the store, so that a record that exists is one the store
accepts, whichever engine holds it.

This module imports no database engine: code that only handles records
(the v1 wire shapes, the translation layer) does not load one.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import re
import unicodedata
from datetime import datetime, timezone
from typing import (
    Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union,
    cast,
)

import attrs
from attrs import validators as v

__all__ = [
    "Account",
    "Authorization",
    "AuthorizationRead",
    "Certificate",
    "Challenge",
    "Conflict",
    "DuplicateAccount",
    "ClientVisit",
    "Finding",
    "Insert",
    "Issuer",
    "LegacyClient",
    "NameReads",
    "NotFound",
    "Order",
    "OrderAttempt",
    "RenewalWindow",
    "StoreError",
    "Update",
    "apply_changes",
    "makes_no_row",
    "merge_visit",
    "overflowing",
    "format_timestamp",
    "issuer_id",
    "newest_first",
    "normalize_identifier",
    "normalize_identifiers",
    "printable",
    "normalize_statuses",
    "timestamp_instant",
]


class StoreError(Exception):
    """
    Base class of every error a store raises on purpose.
    """


class NotFound(StoreError):
    """
    A record that an operation needs does not exist: the one being updated,
    or a parent it refers to (its account, order or authorization, or an
    issuer of a certificate).
    """


class Conflict(StoreError):
    """
    A record cannot be stored because one with the same id, or the same value
    of another unique key (a certificate serial), already exists.
    """


class DuplicateAccount(Conflict):
    """
    Another account already uses this key thumbprint.

    The thumbprint is how a signed v1 request finds its account, so two
    accounts must never share one.
    """


# --- Converters and validators -------------------------------------------------

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<time>\d{2}:\d{2}:\d{2})"
    r"(?:\.(?P<fraction>\d+))?(?P<offset>[Zz]|[+-]\d{2}:\d{2})\Z"
)


def timestamp_instant(text: str) -> datetime:
    """
    Parse an RFC 3339 timestamp into an aware `datetime`.

    Ordering by instant rather than by string matters because CAs spell
    fractions of a second differently (Boulder emits nanoseconds, which
    `datetime.fromisoformat` would reject, and a string compare puts
    ``...:00.5Z`` before ``...:00Z``).  Digits beyond microseconds are dropped.

    Each spelling is parsed once while it is among the last
    `TIMESTAMPS_REMEMBERED` (`_instant_of`): the budget's check at every new
    order reads each order time of the account's window again, and every
    record decoded from the store has its timestamps validated — the same
    spellings, parsed again at each request (issue 15: 8 % of the gateway's
    CPU in a sequential 3-name profile, two parses per order time per
    ``new-authz``).

    :raises ValueError: if ``text`` is not an RFC 3339 date-time with an offset.
    """
    if not isinstance(text, str):
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    return _instant_of(text)


#: How many timestamp spellings `timestamp_instant` remembers: an account's
#: order window at the default limit (300) several times over, in about
#: 0.4 MB.
TIMESTAMPS_REMEMBERED = 2048


@functools.lru_cache(maxsize=TIMESTAMPS_REMEMBERED)
def _instant_of(text: str) -> datetime:
    """
    `timestamp_instant`'s parse (a refusal is not remembered).
    """
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    offset = match["offset"]
    if offset in ("Z", "z"):
        offset = "+00:00"
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    return datetime.fromisoformat(
        f"{match['date']}T{match['time']}.{fraction}{offset}"
    )


def format_timestamp(seconds: float) -> str:
    """
    Spell a POSIX time the way the gateway writes every timestamp it makes:
    RFC 3339 in UTC with whole seconds, e.g. ``2026-11-28T17:00:00Z``.
    """
    moment = datetime.fromtimestamp(int(seconds), tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _timestamp(instance: Any, attribute: "attrs.Attribute[Any]", value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a str, not {value!r}")
    try:
        timestamp_instant(value)
    except ValueError as error:
        raise ValueError(f"{attribute.name}: {error}") from None


def _optional_timestamp(instance: Any, attribute: "attrs.Attribute[Any]", value: Any) -> None:
    if value is not None:
        _timestamp(instance, attribute, value)


def _str_tuple(value: Iterable[str]) -> Tuple[str, ...]:
    # A bare string is iterable too, and would silently become a tuple of
    # characters; that is always a caller's mistake.
    if isinstance(value, (str, bytes)):
        raise TypeError(f"expected a sequence of str, not {value!r}")
    result = tuple(value)
    for item in result:
        if not isinstance(item, str):
            raise TypeError(f"expected a sequence of str, got item {item!r}")
    return result


def normalize_identifier(value: str) -> str:
    """
    Lower-case a DNS identifier.  DNS names are case-insensitive, and the
    stores compare identifiers as strings.
    """
    if not isinstance(value, str):
        raise TypeError(f"an identifier must be a str, not {value!r}")
    return value.lower()


def normalize_identifiers(value: Iterable[str]) -> Tuple[str, ...]:
    """
    Turn identifiers into the canonical identifier set of an `Order`: sorted,
    lower-cased, without duplicates.

    `Order.identifiers` and the ``identifiers`` argument of ``find_orders`` are
    both passed through this, so an order matches whatever order or case the
    names were asked for in.
    """
    return tuple(sorted({normalize_identifier(i) for i in _str_tuple(value)}))


def normalize_statuses(statuses: Optional[Iterable[str]]) -> Optional[FrozenSet[str]]:
    """
    Check the ``statuses`` filter of the ``find_*`` methods.

    :return: `None` for "any status", otherwise the set of wanted statuses
        (possibly empty, which then matches nothing).
    """
    if statuses is None:
        return None
    return frozenset(_str_tuple(statuses))


def _jwk_copy(value: Mapping[str, Any]) -> Dict[str, Any]:
    # Deep copy through JSON: it detaches the record from the caller's dict,
    # and it rejects here anything the store could not write as JSON.
    if not isinstance(value, Mapping):
        raise TypeError(f"public_jwk must be a mapping, not {value!r}")
    copy: Dict[str, Any] = json.loads(json.dumps(dict(value)))
    return copy


def _authz_identifier(value: str) -> str:
    value = normalize_identifier(value)
    if value.startswith("*."):
        # RFC 8555 §7.1.4: a wildcard authorization names the base domain and
        # sets "wildcard"; keeping one spelling makes lookups unambiguous.
        raise ValueError(
            f"authorization identifier {value!r}: spell a wildcard as the base"
            " domain with wildcard=True"
        )
    return value


def _plain_status(value: Any) -> Any:
    """
    A status given as an enum member (`gateway.status.Status`,
    `AttemptStatus`, or any other ``str`` enum) is kept as its plain string, so that records compare
    and store the same whichever spelling the caller used; anything else is
    left for the validator to refuse.
    """
    return str.__str__(value) if isinstance(value, str) else value


_str = v.instance_of(str)
_optional_str = v.optional(_str)
_int = v.instance_of(int)


def _clip_error(value: Any) -> Any:
    """
    A CA's error text, kept short: it is shown on the status page.
    """
    return value[:400] if isinstance(value, str) else value


# --- Records -------------------------------------------------------------------


@attrs.frozen
class Account:
    """
    A v1 registration, which is also an upstream v2 account.

    :ivar id: the v1 registration id, in ``/acme/reg/{id}``.
    :ivar thumbprint: RFC 7638 thumbprint of the account key; how a signed v1
        request is matched to its account.
    :ivar public_jwk: the account's public key as a JWK, returned in v1
        registration objects (v2 does not return it).
    :ivar upstream_url: the upstream account URL (the ``kid``), or `None`
        before the upstream account exists.
    :ivar contact: contact URIs, in the client's order.
    :ivar agreement: the terms-of-service URL agreed to, if any; v2 does not
        echo it, so the gateway must remember it.
    :ivar created_at: when the gateway created the registration.
    :ivar initial_ip: the client address that registered, for v1's
        ``initialIp``.
    """

    id: int = attrs.field(validator=_int)
    thumbprint: str = attrs.field(validator=_str)
    # Excluded from the hash because a dict is unhashable; still compared.
    public_jwk: Dict[str, Any] = attrs.field(converter=_jwk_copy, hash=False)
    upstream_url: Optional[str] = attrs.field(validator=_optional_str)
    contact: Tuple[str, ...] = attrs.field(converter=_str_tuple)
    agreement: Optional[str] = attrs.field(validator=_optional_str)
    status: str = attrs.field(converter=_plain_status, validator=_str)
    created_at: str = attrs.field(validator=_timestamp)
    initial_ip: str = attrs.field(validator=_str)


@attrs.frozen
class Order:
    """
    An upstream order, made either for a v1 new-authz (one name) or a v1
    new-cert (the CSR's names).

    :ivar id: the gateway's opaque id for it.
    :ivar identifiers: the canonical identifier set (see
        `normalize_identifiers`); a wildcard is spelled ``*.example.com``.
    :ivar finalize_url: the upstream finalize URL, used verbatim.
    :ivar expires: the upstream expiry, verbatim.
    :ivar certificate_url: the upstream certificate URL, once issued.
    :ivar authorization_urls: the upstream URLs of the order's
        authorizations, as the CA listed them (some may be authorizations
        an earlier order created); empty in rows older than this field.
    :ivar directory_url: the directory URL of the CA the order lives at
        (see "Upstreams" in `gateway.store.interface`); stamped by the store.
    :ivar planned_for: the id of the `Certificate` whose renewal this order
        was planned for (one order for the certificate's whole name set,
        made at the first ``new-authz`` of a renewal), else `None`.
    :ivar replaces: the ARI certID (RFC 9773) the ``newOrder`` carried as
        ``replaces``, else `None`.
    :ivar profile: the profile the CA's order names, else `None`.
    """

    id: str = attrs.field(validator=_str)
    account_id: int = attrs.field(validator=_int)
    upstream_url: str = attrs.field(validator=_str)
    identifiers: Tuple[str, ...] = attrs.field(converter=normalize_identifiers)
    status: str = attrs.field(converter=_plain_status, validator=_str)
    finalize_url: str = attrs.field(validator=_str)
    expires: Optional[str] = attrs.field(validator=_optional_timestamp)
    certificate_url: Optional[str] = attrs.field(validator=_optional_str)
    created_at: str = attrs.field(validator=_timestamp)
    authorization_urls: Tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    directory_url: Optional[str] = attrs.field(default=None, validator=_optional_str)
    planned_for: Optional[str] = attrs.field(default=None, validator=_optional_str)
    replaces: Optional[str] = attrs.field(default=None, validator=_optional_str)
    profile: Optional[str] = attrs.field(default=None, validator=_optional_str)


@attrs.frozen
class Authorization:
    """
    A gateway authorization, in ``/acme/authz/{id}``, backed by an upstream
    authorization.

    :ivar order_id: the order it belongs to, if any: the one that created
        it, or the later single-name order of a ``new-authz`` that the CA
        reused it in (the order that client's ``new-cert`` finalizes).
    :ivar identifier: the lower-cased DNS name; for a wildcard, the base
        domain (``example.com``) with ``wildcard`` set, as in RFC 8555.
    :ivar updated_at: when the gateway last refreshed ``status`` and
        ``expires`` from upstream.  Stores do not bump it by themselves.
    :ivar directory_url: the CA it lives at; stamped by the store.
    """

    id: str = attrs.field(validator=_str)
    account_id: int = attrs.field(validator=_int)
    order_id: Optional[str] = attrs.field(validator=_optional_str)
    upstream_url: str = attrs.field(validator=_str)
    identifier: str = attrs.field(converter=_authz_identifier)
    wildcard: bool = attrs.field(validator=v.instance_of(bool))
    status: str = attrs.field(converter=_plain_status, validator=_str)
    expires: Optional[str] = attrs.field(validator=_optional_timestamp)
    created_at: str = attrs.field(validator=_timestamp)
    updated_at: str = attrs.field(validator=_timestamp)
    directory_url: Optional[str] = attrs.field(default=None, validator=_optional_str)


@attrs.frozen
class Challenge:
    """
    A gateway challenge, whose v1 ``uri`` must stay stable (certbot compares
    it) and whose ``Link: up`` points at its authorization.

    Most challenges mirror one of the upstream authorization's.  A challenge
    the gateway offers and judges itself (``tls-sni-01``, which no CA
    validates any more) has no upstream URL (``""``) and keeps the outcome
    of the gateway's check: ``error``, the JSON of why it failed
    (``{"code", "detail", "status"}``), and ``validation_record``, the JSON
    list of what the check recorded (Boulder's ``validationRecord``).
    """

    id: str = attrs.field(validator=_str)
    authorization_id: str = attrs.field(validator=_str)
    account_id: int = attrs.field(validator=_int)
    upstream_url: str = attrs.field(validator=_str)
    type: str = attrs.field(validator=_str)
    token: str = attrs.field(validator=_str)
    status: str = attrs.field(converter=_plain_status, validator=_str)
    error: Optional[str] = attrs.field(default=None, validator=_optional_str)
    validation_record: Optional[str] = attrs.field(default=None, validator=_optional_str)


@attrs.frozen
class Certificate:
    """
    An issued certificate, served at v1 ``/acme/cert/{serial}``.

    The DER is kept rather than fetched again so that the certificate stays
    available whatever the upstream does, and ``account_id`` decides who may
    revoke it.

    :ivar serial: the serial as it appears in v1 URLs; unique.
    :ivar issuer_ids: ids of the `Issuer` records of the chain, leaf side
        first.
    :ivar directory_url: the CA that issued it (where it can be revoked);
        stamped by the store.
    :ivar orphaned: issued for a CSR key no client is waiting for any more
        (the CA issued for an earlier attempt whose answer was lost, and the
        client retried with a new key).  Kept and reported, never handed
        out.

    What the renewal inventory reads (`gateway.store.leaf.leaf_facts` of
    ``leaf_der``, kept so that renewals can be planned without parsing
    every certificate again):

    :ivar names: its DNS names, sorted (an order's identifier set).
    :ivar authority_key_id: its issuer's key id (hex), for ARI.
    :ivar not_before: its validity (RFC 3339).
    :ivar profile: the profile of the order it was issued for, if known.
    :ivar adopted_from: for a certificate ``acme-gateway adopt`` imported
        from a client's files (not issued through the gateway), where it
        came from (``certbot /etc/letsencrypt/renewal/example.com.conf``).
    """

    id: str = attrs.field(validator=_str)
    account_id: int = attrs.field(validator=_int)
    order_id: Optional[str] = attrs.field(validator=_optional_str)
    serial: str = attrs.field(validator=_str)
    leaf_der: bytes = attrs.field(validator=v.instance_of(bytes), repr=False)
    issuer_ids: Tuple[str, ...] = attrs.field(converter=_str_tuple)
    upstream_url: str = attrs.field(validator=_str)
    issued_at: str = attrs.field(validator=_timestamp)
    revoked_at: Optional[str] = attrs.field(
        default=None, validator=_optional_timestamp
    )
    revocation_reason: Optional[int] = attrs.field(
        default=None, validator=v.optional(_int)
    )
    directory_url: Optional[str] = attrs.field(default=None, validator=_optional_str)
    orphaned: bool = attrs.field(default=False, validator=v.instance_of(bool))
    names: Tuple[str, ...] = attrs.field(default=(), converter=normalize_identifiers)
    authority_key_id: Optional[str] = attrs.field(default=None, validator=_optional_str)
    not_before: Optional[str] = attrs.field(default=None, validator=_optional_timestamp)
    not_after: Optional[str] = attrs.field(default=None, validator=_optional_timestamp)
    profile: Optional[str] = attrs.field(default=None, validator=_optional_str)
    adopted_from: Optional[str] = attrs.field(default=None, validator=_optional_str)


class AttemptStatus(enum.StrEnum):
    """
    `OrderAttempt.status`: sent, outcome unknown (``open``); its order is
    not at the CA either, though it spent the budget all the same
    (``lost``); the CA refused it (``refused``).
    """

    OPEN = "open"
    LOST = "lost"
    REFUSED = "refused"


#: The `AttemptStatus` values as plain strings, as records hold them.
ATTEMPT_OPEN: str = AttemptStatus.OPEN.value
ATTEMPT_LOST: str = AttemptStatus.LOST.value
ATTEMPT_REFUSED: str = AttemptStatus.REFUSED.value


@attrs.frozen
class OrderAttempt:
    """
    A ``newOrder`` the gateway is about to send, written before it is sent.

    The order the CA creates is stored under the same id once its answer
    arrives, in the same transaction as its authorizations; an attempt
    without that order is one whose answer was lost (a crash, a dropped
    connection).  It still spent the account's order budget, and the CA may
    hold pending authorizations for it, so the budget counts it, and
    recovery looks for the order in the account's order list at the CA;
    ``lost`` when the CA has no such list or the order is not in it.

    :ivar status: ``open``, ``lost`` or ``refused`` (the CA answered with an
        error: no order, nothing spent).
    """

    id: str = attrs.field(validator=_str)
    account_id: int = attrs.field(validator=_int)
    identifiers: Tuple[str, ...] = attrs.field(converter=normalize_identifiers)
    created_at: str = attrs.field(validator=_timestamp)
    directory_url: Optional[str] = attrs.field(default=None, validator=_optional_str)
    status: str = attrs.field(default=ATTEMPT_OPEN, converter=_plain_status,
                              validator=v.in_((ATTEMPT_OPEN, ATTEMPT_LOST, ATTEMPT_REFUSED)))


@attrs.frozen
class Issuer:
    """
    An issuer (intermediate) certificate, shared by every certificate it
    signed and served at v1 ``issuer-cert`` links.

    Unlike every other record it has no owning account: chains are public and
    common to all accounts.

    :ivar id: derived from the DER (see `issuer_id`), so adding the same
        issuer twice yields the same record.
    :ivar parent_id: the id of the issuer above it in the chain it was last
        stored with (the ``Link: rel="up"`` of its v1 ``issuer-cert`` URL),
        or `None` when it was the last of its chains.
    """

    id: str = attrs.field(validator=_str)
    der: bytes = attrs.field(validator=v.instance_of(bytes), repr=False)
    parent_id: Optional[str] = attrs.field(default=None, validator=_optional_str)


@attrs.frozen
class RenewalWindow:
    """
    What the CA last said about when to renew a certificate (ARI,
    RFC 9773): its suggested window, written by the renewal-info poller
    (`gateway.translate.renewalinfo`).

    :ivar id: the id of the `Certificate` it is about.
    :ivar cert_id: the certificate's ARI certID.
    :ivar window_start: the suggested window (RFC 3339), once the CA
        answered; ``window_end`` likewise.
    :ivar first_start: the start of the first window the CA suggested for
        it: a later window that starts earlier moved (an incident).
    :ivar explanation_url: the CA's ``explanationURL``, when it gave one.
    :ivar checked_at: when the CA was last asked.
    :ivar next_check_at: when to ask again (twice a day, or the CA's
        ``Retry-After``).
    :ivar opened_early: the window opened early: before half of the
        certificate's lifetime, or earlier than the CA first suggested
        (revocation, an incident: `gateway.translate.inventory.opened_early`).
    :ivar error: why the last question failed, else `None`.
    :ivar directory_url: the CA asked; stamped by the store.
    """

    id: str = attrs.field(validator=_str)
    account_id: int = attrs.field(validator=_int)
    cert_id: str = attrs.field(validator=_str)
    window_start: Optional[str] = attrs.field(default=None, validator=_optional_timestamp)
    window_end: Optional[str] = attrs.field(default=None, validator=_optional_timestamp)
    first_start: Optional[str] = attrs.field(default=None, validator=_optional_timestamp)
    explanation_url: Optional[str] = attrs.field(default=None, validator=_optional_str)
    checked_at: Optional[str] = attrs.field(default=None, validator=_optional_timestamp)
    next_check_at: Optional[str] = attrs.field(default=None, validator=_optional_timestamp)
    opened_early: bool = attrs.field(default=False, validator=v.instance_of(bool))
    error: Optional[str] = attrs.field(default=None, converter=_clip_error,
                                       validator=_optional_str)
    directory_url: Optional[str] = attrs.field(default=None, validator=_optional_str)


#: Every kind of record the store writes with `Insert`.
Record = Union[Account, Order, Authorization, Challenge, Certificate, Issuer, OrderAttempt,
               RenewalWindow]


@attrs.frozen
class Insert:
    """
    An operation of `IStore.write`: add ``record`` (an `Order`,
    `Authorization`, `Challenge`, `Certificate`, `Issuer`, `OrderAttempt`,
    or an `Account`, whose id the store assigns), checked as its ``add_*``
    method checks it.
    """

    record: Record


def _changes_copy(changes: Mapping[str, Any]) -> Dict[str, Any]:
    """
    An `Update`'s changes, detached from the caller's mapping.
    """
    return dict(changes)


@attrs.frozen
class Update:
    """
    An operation of `IStore.write`: change the ``record_type`` record ``id``
    as its ``update_*`` method would.
    """

    record_type: "type[Record]"
    id: Union[int, str]
    changes: Mapping[str, Any] = attrs.field(converter=_changes_copy)


#: An operation of `IStore.write`.
Operation = Union[Insert, Update]


# --- Consistency ---------------------------------------------------------------

#: `Finding` kinds.
UNSTORED_ORDER = "order-attempt-without-order"
PARTIAL_AUTHORIZATION = "authorization-without-challenges"
PARTIAL_ORDER = "order-without-its-authorizations"
ORPHAN_ROW = "orphan-row"


@attrs.frozen
class Finding:
    """
    Something in the state that a crash or an outside edit left incomplete
    (`IStore.inconsistencies`, ``acme-gateway check``).

    :ivar kind: `UNSTORED_ORDER` (a ``newOrder`` sent whose order was never
        stored), `PARTIAL_AUTHORIZATION` (a pending authorization without
        challenges), `PARTIAL_ORDER` (a pending or ready order some of whose
        authorizations are not stored) or `ORPHAN_ROW` (a row whose parent
        is missing).
    :ivar table: the table of the row concerned.
    :ivar record_id: its id.
    :ivar detail: one line for a person.
    :ivar directory_url: the CA the row belongs to, if known.
    """

    kind: str
    table: str
    record_id: str
    detail: str
    directory_url: Optional[str] = None

    def describe(self) -> str:
        return f"{self.kind}: {self.table} {self.record_id}: {self.detail}"


def origin_of(url: str) -> str:
    """
    ``scheme://host[:port]`` of a URL: how rows stored before the gateway
    recorded each row's CA are attributed to one (a CA's URLs share its
    directory's origin).
    """
    parts = url.split("/", 3)
    return "/".join(parts[:3]) if len(parts) >= 3 and parts[0].endswith(":") else url


# --- Issuer ids, updates and ordering --------------------------------------------


def issuer_id(der: bytes) -> str:
    """
    The id of the `Issuer` with this DER: the first 32 hex digits (128 bits)
    of its SHA-256.

    Deriving the id from the content makes ``add_issuer`` idempotent, so the
    same intermediate seen with every issuance is stored once.
    """
    if not isinstance(der, bytes):
        raise TypeError(f"an issuer DER must be bytes, not {der!r}")
    return hashlib.sha256(der).hexdigest()[:32]


R = TypeVar("R")

#: Fields an update may never change, per record type.  Ids are what v1
#: clients hold; the owning account decides whose key signs upstream, so
#: moving a record to another account would be a silent privilege change.
#: An object never moves to another CA either.
IMMUTABLE_FIELDS: Mapping[type, FrozenSet[str]] = {
    Account: frozenset({"id"}),
    Order: frozenset({"id", "account_id", "directory_url"}),
    Authorization: frozenset({"id", "account_id", "directory_url"}),
    Challenge: frozenset({"id", "account_id"}),
    Certificate: frozenset({"id", "account_id", "directory_url"}),
    OrderAttempt: frozenset({"id", "account_id", "directory_url", "identifiers", "created_at"}),
    RenewalWindow: frozenset({"id", "account_id", "directory_url"}),
}


def check_changes(record_type: type, changes: Mapping[str, Any]) -> None:
    """
    Reject an update that names an unknown or unchangeable field, before any
    store looks the record up.

    :raises TypeError: naming the offending fields.
    """
    known = {field.name for field in attrs.fields(record_type)}
    unknown = set(changes) - known
    if unknown:
        raise TypeError(
            f"unknown {record_type.__name__} fields: {', '.join(sorted(unknown))}"
        )
    frozen = set(changes) & IMMUTABLE_FIELDS.get(record_type, frozenset())
    if frozen:
        raise TypeError(
            f"{record_type.__name__} fields cannot change: {', '.join(sorted(frozen))}"
        )


def apply_changes(record: R, changes: Mapping[str, Any]) -> R:
    """
    Return ``record`` with ``changes`` applied, validated like a new record.

    :raises TypeError: for unknown or unchangeable fields (see
        `check_changes`), or wrongly typed values.
    :raises ValueError: for values the record rejects.
    """
    check_changes(type(record), changes)
    changed: R = attrs.evolve(cast(Any, record), **changes)
    return changed


def newest_first(rows: Iterable[Tuple[int, R]], attribute: str = "created_at") -> List[R]:
    """
    Order records newest first.

    :param rows: pairs of (insertion sequence, record); the sequence breaks
        ties between records made in the same second, latest insertion first.
    :param attribute: the timestamp field to order by.
    """
    ordered: Sequence[Tuple[int, R]] = sorted(
        rows,
        key=lambda row: (timestamp_instant(getattr(row[1], attribute)), row[0]),
        reverse=True,
    )
    return [record for _, record in ordered]


# --- The migration report ------------------------------------------------------

#: Caps that keep one client's report row small whatever it sends: a client
#: that asks for thousands of names, or rotates User-Agents, must not make
#: every request's upsert (or the status page) expensive.
MAX_USER_AGENT = 256
MAX_ADDRESS = 64
MAX_NAMES = 100
#: A DNS name has at most 253 characters; a longer one the gateway refused
#: is still shown, cut to this.
MAX_NAME = 255
MAX_THUMBPRINTS = 10
MAX_REASON = 400

#: Unicode categories shown escaped: lone surrogates (not text at all: no
#: UTF-8 encoder takes them), control characters (a terminal obeys them)
#: and format characters (bidi overrides reorder what a page shows), line
#: and paragraph separators.
_ESCAPED_CATEGORIES = frozenset({"Cs", "Cc", "Cf", "Zl", "Zp"})


def printable(value: str, limit: int) -> str:
    """
    ``value`` as text that any page, terminal, log or JSON document can
    carry: lone surrogates, control and format characters written as
    ``\\uXXXX`` escapes, and at most ``limit`` characters.

    The migration report records what clients send (User-Agents, names a
    refused request asked for, the problem it got) and shows it later; a
    value that cannot be encoded, or that steers a terminal, must never
    reach a renderer.
    """
    clipped = value[:limit]
    if clipped.isprintable():
        return clipped
    shown = "".join(_escaped(char) if unicodedata.category(char) in _ESCAPED_CATEGORIES
                    else char for char in clipped)
    return shown[:limit]


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _printable_user_agent(value: Any) -> Any:
    return printable(value, MAX_USER_AGENT) if isinstance(value, str) else value


def _printable_address(value: Any) -> Any:
    return printable(value, MAX_ADDRESS) if isinstance(value, str) else value


def _printable_reason(value: Any) -> Any:
    return printable(value, MAX_REASON) if isinstance(value, str) else value


def _printable_names(value: Any) -> Tuple[str, ...]:
    return tuple(printable(name, MAX_NAME) for name in _str_tuple(value))[:MAX_NAMES]


@attrs.frozen
class ClientVisit:
    """
    One v1 request as the migration report sees it.

    :ivar thumbprint: the account key's thumbprint when the request carried
        a verified JWS, else `None`.
    :ivar names: DNS names asked for (new-authz, new-cert), if any.
    :ivar certificate: whether it was a new-cert that issued.
    :ivar failure: why it failed (endpoint, status, problem), or `None` when
        it succeeded.
    """

    user_agent: str = attrs.field(converter=_printable_user_agent, validator=_str)
    address: str = attrs.field(converter=_printable_address, validator=_str)
    at: str = attrs.field(validator=_timestamp)
    thumbprint: Optional[str] = attrs.field(default=None, validator=_optional_str)
    names: Tuple[str, ...] = attrs.field(default=(), converter=_printable_names)
    certificate: bool = attrs.field(default=False, validator=v.instance_of(bool))
    failure: Optional[str] = attrs.field(
        default=None, converter=_printable_reason, validator=_optional_str
    )


@attrs.frozen
class LegacyClient:
    """
    A legacy client the gateway has served, identified by its source
    address and User-Agent (what an operator can find the machine by).

    :ivar thumbprints: account key thumbprints it signed with, most recent
        last (at most `MAX_THUMBPRINTS`).
    :ivar names: the names it asked for, sorted (at most `MAX_NAMES`).
    :ivar successes: requests answered below 400.
    :ivar failures: requests answered 400 or above.
    :ivar certificates: certificates issued to it.
    :ivar last_failure_reason: what its latest failure was.
    """

    user_agent: str = attrs.field(validator=_str)
    address: str = attrs.field(validator=_str)
    thumbprints: Tuple[str, ...] = attrs.field(converter=_str_tuple)
    names: Tuple[str, ...] = attrs.field(converter=_str_tuple)
    first_seen: str = attrs.field(validator=_timestamp)
    last_seen: str = attrs.field(validator=_timestamp)
    successes: int = attrs.field(validator=_int)
    failures: int = attrs.field(validator=_int)
    certificates: int = attrs.field(validator=_int)
    last_success: Optional[str] = attrs.field(validator=_optional_timestamp)
    last_failure: Optional[str] = attrs.field(validator=_optional_timestamp)
    last_failure_reason: Optional[str] = attrs.field(validator=_optional_str)


#: The most report rows the gateway keeps: visits by further signers are
#: counted in one row, `OVERFLOW_USER_AGENT` at `OVERFLOW_ADDRESS`.  Any
#: key can sign (a verified JWS proves possession, not trust), so signed
#: requests with fresh keys and User-Agents must not grow the state
#: without bound either.
MAX_CLIENTS = 5000
OVERFLOW_ADDRESS = "(any)"
OVERFLOW_USER_AGENT = f"(further clients: the report keeps at most {MAX_CLIENTS})"


def makes_no_row(visit: ClientVisit) -> bool:
    """
    Whether ``visit`` may only count toward a client already recorded: an
    unsigned request (a directory read, a nonce, a poll, a certificate
    download) proves nothing about who sent it, and its User-Agent is the
    sender's choice, so it never makes a row of its own.
    """
    return visit.thumbprint is None


def overflowing(visit: ClientVisit) -> ClientVisit:
    """
    ``visit`` counted in the overflow row, once the report holds
    `MAX_CLIENTS` rows.
    """
    return attrs.evolve(visit, address=OVERFLOW_ADDRESS, user_agent=OVERFLOW_USER_AGENT,
                        names=())


def _later(first: str, second: str) -> str:
    """
    The later of two RFC 3339 time stamps (``first`` when they are the same
    instant).  Two in the gateway's own spelling (`format_timestamp`:
    ``2026-12-03T15:30:00Z``, the same length, ``T`` and ``Z``) order as
    strings, so only other spellings are parsed (two parses were a fifth of
    `merge_visit`).
    """
    if (len(first) == len(second) == 20 and first[10] == second[10] == "T"
            and first[19] == second[19] == "Z"):
        return second if second > first else first
    return max(first, second, key=timestamp_instant)


def merge_visit(client: Optional[LegacyClient], visit: ClientVisit) -> LegacyClient:
    """
    The report row of ``visit``'s client after ``visit``: a new row for a
    client never seen, else ``client`` with the visit counted in.
    """
    if client is None:
        client = LegacyClient(
            user_agent=visit.user_agent, address=visit.address, thumbprints=(), names=(),
            first_seen=visit.at, last_seen=visit.at, successes=0, failures=0,
            certificates=0, last_success=None, last_failure=None, last_failure_reason=None,
        )
    thumbprints = client.thumbprints
    if visit.thumbprint is not None:
        thumbprints = tuple(t for t in thumbprints if t != visit.thumbprint) + (visit.thumbprint,)
        thumbprints = thumbprints[-MAX_THUMBPRINTS:]
    names = client.names
    if visit.names:
        names = tuple(sorted(set(names) | {normalize_identifier(n) for n in visit.names}))
        names = names[:MAX_NAMES]
    changes: Dict[str, Any] = {
        "thumbprints": thumbprints,
        "names": names,
        "last_seen": _later(client.last_seen, visit.at),
        "certificates": client.certificates + (1 if visit.certificate else 0),
    }
    if visit.failure is None:
        changes["successes"] = client.successes + 1
        changes["last_success"] = visit.at
    else:
        changes["failures"] = client.failures + 1
        changes["last_failure"] = visit.at
        changes["last_failure_reason"] = visit.failure
    return attrs.evolve(client, **changes)


@attrs.frozen
class AuthorizationRead:
    """
    A stored authorization with its owner and its challenges, read in one
    store call (`IStore.authorization_read`; three store calls, three
    hand-offs to the store's thread, per client poll before issue 15).

    :ivar owner: its account, `None` when the row is gone.
    :ivar challenges: insertion order, as `IStore.challenges_for_authorization`.
    """

    authorization: "Authorization"
    owner: Optional["Account"]
    challenges: Tuple["Challenge", ...]


@attrs.frozen
class NameReads:
    """
    What a v1 ``new-authz`` reads of the store before it asks the CA, in
    one call (`IStore.name_reads`; three store calls, three hand-offs to
    the store's thread, before issue 15).

    :ivar planned: the account's open planned orders (`IStore.
        planned_orders`), newest first, each with its authorizations for the
        name (insertion order).
    :ivar held: the account's current certificates holding the name
        (`IStore.current_certificates`).
    :ivar candidates: the account's authorizations for the name in the
        wanted statuses (`IStore.find_authorizations`), newest first.
    """

    planned: Tuple[Tuple["Order", Tuple["Authorization", ...]], ...]
    held: Tuple["Certificate", ...]
    candidates: Tuple["Authorization", ...]


@attrs.frozen
class Spend:
    """
    What an account has spent of its rate-limit budget, as one
    transaction sees it (`IStore.spend`).

    :ivar order_times: when each order counted in the window was created,
        oldest first.
    :ivar pending: its pending authorizations (expired ones included; the
        budget's rules judge expiry), oldest first.
    :ivar names_in_flight: identifiers of its ``newOrder`` requests sent and
        not yet answered (each may add a pending authorization).
    """

    order_times: Tuple[str, ...]
    pending: Tuple["Authorization", ...]
    names_in_flight: int

    def live_pending(self, now: float) -> Tuple["Authorization", ...]:
        """
        The pending authorizations not expired at ``now``.
        """
        return tuple(a for a in self.pending
                     if not a.expires or timestamp_instant(a.expires).timestamp() > now)

    def admits(self, orders: int, pending_authorizations: int, names: int, now: float) -> bool:
        """
        Whether one more order of ``names`` identifiers fits limits of
        ``orders`` in the window and ``pending_authorizations`` at once
        (in-flight names count as pending).  `IStore.reserve` decides with
        it inside its transaction; the budget words the refusal.
        """
        return (len(self.order_times) + 1 <= orders
                and len(self.live_pending(now)) + self.names_in_flight + names
                <= pending_authorizations)
