"""
v1 registrations (``new-reg``, ``reg/<id>``) translated to v2 accounts.

The upstream account is the client's own key (Let's Encrypt treats a v1
account key as the same v2 account), found with ``onlyReturnExisting`` or
created.  Agreement cannot be changed in v2 once an account exists, so a v1
``agreement`` is recorded locally; a contact change and a deactivation go
upstream.
"""

from __future__ import annotations

from typing import Optional

import attrs

from gateway.store import Account, DuplicateAccount
from gateway.translate.errors import InvalidContact, Malformed, Unauthorized
from gateway.translate.context import RETIRED, BoundAccount, Context
from gateway.v1.jws import VerifiedRequest

_REGISTRATION_FIELDS = {"resource", "contact", "agreement", "key", "status", "id", "initialIp",
                        "createdAt", "authorizations", "certificates"}


def _contact(payload: dict) -> Optional[tuple]:
    """
    The ``contact`` of a payload, checked as Boulder v1 did (``mailto:``
    URIs only), or ``None`` when absent.
    """
    if "contact" not in payload or payload["contact"] is None:
        return None
    contact = payload["contact"]
    if not isinstance(contact, list) or not all(isinstance(c, str) for c in contact):
        raise Malformed("Request payload did not parse as JSON: contact must be a list of strings")
    for entry in contact:
        if not entry.startswith("mailto:") or "@" not in entry or len(entry) > 320:
            raise InvalidContact(f"Contact method {entry!r} is not supported: use mailto: addresses")
    return tuple(contact)


def _agreement(payload: dict) -> Optional[str]:
    agreement = payload.get("agreement")
    if agreement is None or agreement == "":
        return None
    if not isinstance(agreement, str):
        raise Malformed("agreement must be a string")
    return agreement


def _check_fields(payload: dict) -> None:
    unknown = set(payload) - _REGISTRATION_FIELDS
    if unknown:
        raise Malformed(f"Unknown registration field(s): {', '.join(sorted(unknown))}")


@attrs.frozen
class Registered:
    """
    The outcome of ``new-reg``: the account, and whether it is new (201) or
    already existed (409 with its ``Location``).
    """

    account: Account
    created: bool


async def new_registration(context: Context, verified: VerifiedRequest, remote_ip: str) -> Registered:
    """
    ``new-reg``: the key must be in the key store; an account the gateway or
    the CA already knows is a conflict, as Boulder answered for a registered
    key.
    """
    payload = verified.payload
    _check_fields(payload)
    contact = _contact(payload) or ()
    agreement = _agreement(payload)
    key = await context.signing_key(verified.thumbprint)
    lock = context.lock_for("account:" + verified.thumbprint)
    await lock.acquire()
    try:
        existing = await context.store.account_by_thumbprint(verified.thumbprint)
        if existing is not None:
            if existing.status == RETIRED:
                raise Unauthorized(
                    "This key was replaced by a key change and cannot register again"
                )
            return Registered(existing, created=False)
        upstream = await context.upstream.find_account(key)
        created = upstream is None
        if created:
            upstream = await context.upstream.new_account(
                key,
                contact=contact,
                terms_of_service_agreed=bool(agreement) or context.policy.agree_to_terms,
            )
        try:
            account = await context.store.create_account(
                thumbprint=verified.thumbprint,
                public_jwk=verified.jwk.to_json(),
                contact=contact if created else tuple(upstream.contact) or contact,
                agreement=agreement,
                initial_ip=remote_ip,
                upstream_url=upstream.url,
            )
        except DuplicateAccount:
            account = await context.store.account_by_thumbprint(verified.thumbprint)
            return Registered(account, created=False)
        return Registered(account, created=created)
    finally:
        lock.release()


def check_update(payload: dict) -> None:
    """
    Check a ``reg/<id>`` payload on its own (fields, contact, agreement,
    status), before the signer is bound to an account: a malformed update
    must cost no upstream call and write nothing.

    :raises Malformed, InvalidContact:
    """
    _check_fields(payload)
    _contact(payload)
    _agreement(payload)
    if payload.get("status") not in (None, "valid", "deactivated"):
        raise Malformed("Invalid value provided for status field")


def names_signer(record_id, thumbprint: str, registration_id: str) -> bool:
    """
    Whether ``reg/<registration_id>`` is the signer's registration: its id,
    or its key's thumbprint.  The thumbprint form is the registration URL
    ``acme-gateway adopt`` gives a migrated certbot, whose stored one names
    the dead v1 CA and whose gateway id is not known before its first
    request; only that key can sign for it.
    """
    return registration_id == thumbprint or (record_id is not None and str(record_id) == registration_id)


async def check_owner(context: Context, thumbprint: str, registration_id: str) -> None:
    """
    Refuse a ``reg/<id>`` request not signed by that registration's key,
    before anything else happens (Boulder's 403).  A key the gateway has
    not seen yet has no registration id to match (but may use its
    thumbprint, see `names_signer`).
    """
    record = await context.store.account_by_thumbprint(thumbprint)
    if not names_signer(None if record is None else record.id, thumbprint, registration_id):
        raise Unauthorized("Request signing key did not match registration key")


async def apply_registration_update(
    context: Context, bound: BoundAccount, registration_id: str, payload: dict
) -> tuple:
    """
    ``reg/<id>``.

    :return: ``(account, deactivated)``; a deactivation answers 200, any
        other update 202.
    """
    if not names_signer(bound.record.id, bound.thumbprint, registration_id):
        raise Unauthorized("Request signing key did not match registration key")
    _check_fields(payload)
    contact = _contact(payload)
    agreement = _agreement(payload)
    status = payload.get("status")
    if status not in (None, "valid", "deactivated"):
        raise Malformed("Invalid value provided for status field")
    account = bound.record
    changes: dict = {}
    if contact is not None and contact != account.contact:
        updated = await context.upstream.update_account(bound.upstream, contact)
        changes["contact"] = tuple(updated.contact) if updated.contact else contact
    if agreement is not None and agreement != account.agreement:
        changes["agreement"] = agreement
    if status == "deactivated":
        await context.upstream.deactivate_account(bound.upstream)
        changes["status"] = "deactivated"
    if changes:
        account = await context.store.update_account(account.id, **changes)
    return account, status == "deactivated"
