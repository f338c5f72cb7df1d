"""
Writing the certificates ``acme-gateway adopt`` found into the gateway's
state file, so that their first renewal through the gateway is already one
planned order carrying ARI ``replaces`` (`gateway.translate.inventory`).

Each certificate is filed under the registration of its account key: the
one the gateway already has, or a new one without an upstream account
(which the gateway finds or creates at the key's first request, as for any
migrating client).  Its issuers are stored with their ``Link: rel="up"``
parents, as for a certificate the gateway issued.  A certificate already
stored (same serial) is left alone, so adopting twice adds nothing.

It runs as a command, outside any reactor: the store's SQL runs inline.
SQLite's own locking makes this safe beside a running gateway.
"""

from __future__ import annotations

import time
from typing import Iterable, List, Optional

from twisted.internet.defer import Deferred

from gateway.adopt.certificates import HeldCertificate
from gateway.store import StoreError
from gateway.store.leaf import leaf_facts
from gateway.store.records import Certificate, format_timestamp
from gateway.store.sqlite import SQLiteStore


def _now(deferred: Deferred):
    """
    The result of a Deferred of the inline store (fired already).
    """
    outcome: List[object] = []
    deferred.addBoth(outcome.append)
    (result,) = outcome
    if hasattr(result, "raiseException"):
        result.raiseException()  # type: ignore[union-attr]
    return result


def record_certificates(state: str, found: Iterable[HeldCertificate],
                        now: Optional[float] = None) -> List[str]:
    """
    Add ``found`` to the renewal inventory of the state file at ``state``
    (created and migrated as the gateway would).

    :return: one report line per certificate.
    :raises StoreError: when the state file cannot be used.
    """
    store = SQLiteStore.inline(state)
    lines = []
    try:
        for held in found:
            lines.append(_record(store, held, now if now is not None else time.time()))
    finally:
        _now(store.close())
    return lines


def _record(store: SQLiteStore, held: HeldCertificate, now: float) -> str:
    try:
        facts = leaf_facts(held.leaf_der)
    except ValueError as error:
        return f"problem: {held.source}: not adopted, unusable certificate: {error}"
    names = ", ".join(facts.names)
    if _now(store.certificate_by_serial(facts.serial)) is not None:
        return f"certificate {names} (serial {facts.serial}) already in the inventory"
    account = _now(store.account_by_thumbprint(held.thumbprint))
    if account is None:
        account = _now(store.create_account(thumbprint=held.thumbprint,
                                            public_jwk=held.public_jwk))
    parent = None
    issuer_ids: List[str] = []
    for der in reversed(held.chain_ders):
        parent = _now(store.add_issuer(der, parent)).id
        issuer_ids.insert(0, parent)
    _now(store.add_certificate(Certificate(
        id=store.new_id(),
        account_id=account.id,
        order_id=None,
        serial=facts.serial,
        leaf_der=held.leaf_der,
        issuer_ids=tuple(issuer_ids),
        upstream_url="",
        issued_at=format_timestamp(now),
        names=facts.names,
        authority_key_id=facts.authority_key_id,
        not_before=facts.not_before,
        not_after=facts.not_after,
        adopted_from=held.source,
    )))
    return (f"certificate {names} (serial {facts.serial}, expires {facts.not_after}) added to "
            f"the renewal inventory of registration {account.id}")


__all__ = ["record_certificates", "StoreError"]
