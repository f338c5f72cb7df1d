"""
v1 registrations (``new-reg``, ``reg/<id>``) translated to v2 accounts, and
the v2 face's ``newAccount`` and account URL, which are the same flows.

The upstream account is the client's own key (Let's Encrypt treats a v1
account key as the same v2 account), found with ``onlyReturnExisting`` or
created.  Agreement cannot be changed in v2 once an account exists, so a v1
``agreement`` is recorded locally; a contact change and a deactivation go
upstream.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import attrs

from gateway.status import Status
from gateway.store import Account, DuplicateAccount
from gateway.translate.accounts import bind, bind_existing, create_upstream_account
from gateway.translate.context import Context
from gateway.translate.errors import AccountMissing, Unauthorized, flow
from gateway.translate.requests import NewAccount, NewReg, RegUpdate, Signer


@attrs.frozen
class Registered:
    """
    The outcome of ``new-reg``: the account, and whether it is new (201) or
    already existed (409 with its ``Location``).
    """

    account: Account
    created: bool


async def new_registration(context: Context, request: NewReg) -> Registered:
    """
    ``new-reg``: the key must be one the gateway signs with; an account the
    gateway or the CA already knows is a conflict, as Boulder answered for a
    registered key.
    """
    return await _register(context, request.signer, request.contact, request.agreement,
                           bool(request.agreement))


new_registration = flow(new_registration)


async def new_account(context: Context, request: NewAccount) -> Registered:
    """
    A v2 ``newAccount``: the key's account (200), or a new one (201); with
    ``onlyReturnExisting``, never a new one.
    """
    signer = request.signer
    if request.only_existing:
        known = await context.store.account_by_thumbprint(signer.thumbprint)
        if known is None or known.status == Status.RETIRED:
            key = context.keys.client_key(signer.thumbprint)
            if key is None or await context.upstream.find_account(key) is None:
                raise AccountMissing("No account exists with the provided key")
    registered = await _register(context, signer, request.contact, None, request.terms_agreed)
    if registered.account.status != Status.VALID:
        raise Unauthorized(f"Account is not valid, has status \"{registered.account.status}\"")
    return registered


new_account = flow(new_account)


async def _register(context: Context, signer: Signer, contact: Tuple[str, ...],
                    agreement: Optional[str], agreed: bool) -> Registered:
    key = await context.keys.obtain(signer.thumbprint)
    lock = context.locks.lock_for("account:" + signer.thumbprint)
    await lock.acquire()
    try:
        existing: Optional[Account] = await context.store.account_by_thumbprint(signer.thumbprint)
        if existing is not None:
            if existing.status == Status.RETIRED:
                raise Unauthorized(
                    "This key was replaced by a key change and cannot register again"
                )
            return Registered(existing, created=False)
        upstream = await context.upstream.find_account(key)
        created = upstream is None
        if upstream is None:
            upstream = await create_upstream_account(
                context.upstream, context.policy.bindings, key,
                contact=contact,
                terms_of_service_agreed=agreed or context.policy.agree_to_terms,
            )
        try:
            account: Account = await context.store.create_account(
                thumbprint=signer.thumbprint,
                public_jwk=signer.jwk.to_json(),
                contact=contact if created else tuple(upstream.contact) or contact,
                agreement=agreement,
                initial_ip=signer.address,
                upstream_url=upstream.url,
            )
        except DuplicateAccount:
            raced = await context.store.account_by_thumbprint(signer.thumbprint)
            if raced is None:
                raise
            return Registered(raced, created=False)
        return Registered(account, created=created)
    finally:
        lock.release()


def names_signer(record_id: Optional[int], thumbprint: str, registration_id: str) -> bool:
    """
    Whether ``reg/<registration_id>`` is the signer's registration: its id,
    or its key's thumbprint.  The thumbprint form is the registration URL
    ``acme-gateway adopt`` gives a migrated certbot, whose stored one names
    the dead v1 CA and whose gateway id is not known before its first
    request; only that key can sign for it.
    """
    return registration_id == thumbprint or (record_id is not None
                                             and str(record_id) == registration_id)


@attrs.frozen
class Updated:
    """
    The outcome of ``reg/<id>``: the account, and whether it was
    deactivated (200; any other update answers 202).
    """

    account: Account
    deactivated: bool


async def update_registration(context: Context, request: RegUpdate) -> Updated:
    """
    ``reg/<id>``.  A request not signed by that registration's key is
    refused before the signer is bound (Boulder's 403): a key the gateway
    has not seen yet has no registration id to match, but may use its
    thumbprint (`names_signer`).
    """
    signer = request.signer
    known: Optional[Account] = await context.store.account_by_thumbprint(signer.thumbprint)
    if not names_signer(None if known is None else known.id, signer.thumbprint,
                        request.registration_id):
        raise Unauthorized("Request signing key did not match registration key")
    bound = await bind_existing(context, signer)
    if not names_signer(bound.record.id, bound.thumbprint, request.registration_id):
        raise Unauthorized("Request signing key did not match registration key")
    account = bound.record
    changes: Dict[str, Any] = {}
    if request.contact is not None and request.contact != account.contact:
        updated = await context.upstream.update_account(bound.upstream, request.contact)
        changes["contact"] = tuple(updated.contact) if updated.contact else request.contact
    if request.agreement is not None and request.agreement != account.agreement:
        changes["agreement"] = request.agreement
    deactivated = request.status == Status.DEACTIVATED
    if deactivated:
        await context.upstream.deactivate_account(bound.upstream)
        changes["status"] = Status.DEACTIVATED
    if changes:
        account = await context.store.update_account(account.id, **changes)
    return Updated(account, deactivated)


update_registration = flow(update_registration)
