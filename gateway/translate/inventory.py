"""
The renewal inventory's rules: which known certificate a client is
renewing, how ARI (RFC 9773) names a certificate, and what a suggested
renewal window says about it.

A v1 client renews a certificate the way it got it: one ``new-authz`` per
name, then ``new-cert``.  Its first ``new-authz`` for a name of a
certificate the gateway knows (issued through it, or imported by
``acme-gateway adopt``) is taken as the start of that certificate's
renewal (`renewal_target`), and the gateway orders the whole name set at
once.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

from gateway.keys.jose import b64url
from gateway.store import Certificate, RenewalWindow
from gateway.store.leaf import serial_der_bytes
from gateway.store.records import timestamp_instant


def ari_cert_id(certificate: Certificate) -> Optional[str]:
    """
    The ARI certID of a certificate (RFC 9773 §4.1): base64url of its
    Authority Key Identifier's keyIdentifier, a dot, and base64url of its
    serial's DER INTEGER content bytes; `None` without an AKI.
    """
    if not certificate.authority_key_id:
        return None
    key_id = bytes.fromhex(certificate.authority_key_id)
    return f"{b64url(key_id)}.{b64url(serial_der_bytes(int(certificate.serial, 16)))}"


def covers(certificate: Certificate, name: str) -> bool:
    """
    Whether ``name`` (spelled as a certificate spells it: ``*.example.com``
    for a wildcard) is one of the certificate's names.
    """
    return name.lower() in certificate.names


def _expiry(certificate: Certificate) -> float:
    return timestamp_instant(certificate.not_after).timestamp() if certificate.not_after else 0.0


def renewal_target(certificates: Iterable[Certificate], account_id: int, name: str,
                   now: float) -> Optional[Certificate]:
    """
    The certificate a ``new-authz`` for ``name`` most likely starts renewing:
    of the account's current certificates (the newest of each name set:
    `gateway.store.interface.IStore.current_certificates`) that hold the
    name, the one due soonest among those still valid, else the one that
    expired last; `None` when none holds the name.

    Soonest first because a client renews what is about to expire; an
    expired certificate only when nothing valid holds the name, since a
    client that moved the name to another certificate stopped renewing the
    old one.
    """
    candidates = [c for c in certificates
                  if c.account_id == account_id and not c.orphaned and covers(c, name)]
    valid = [c for c in candidates if _expiry(c) > now]
    if valid:
        return min(valid, key=_expiry)
    if candidates:
        return max(candidates, key=_expiry)
    return None


def exactly(certificates: Iterable[Certificate], account_id: int,
            names: Sequence[str]) -> Optional[Certificate]:
    """
    The account's current certificate for exactly ``names``, if any: an
    order for the same names renews it.
    """
    wanted = tuple(sorted({n.lower() for n in names}))
    for certificate in certificates:
        if (certificate.account_id == account_id and not certificate.orphaned
                and certificate.names == wanted):
            return certificate
    return None


def opened_early(window: RenewalWindow, certificate: Certificate) -> bool:
    """
    Whether the CA's suggested window opened early: it starts before half
    of the certificate's lifetime has passed (a CA suggests about two
    thirds; an earlier window means revocation or an incident), or it
    starts earlier than the first window the CA suggested for it (the
    window moved).
    """
    if window.window_start is None:
        return False
    start = timestamp_instant(window.window_start).timestamp()
    if window.first_start is not None and (
            start < timestamp_instant(window.first_start).timestamp() - 3600):
        return True
    if certificate.not_before and certificate.not_after:
        begin = timestamp_instant(certificate.not_before).timestamp()
        end = timestamp_instant(certificate.not_after).timestamp()
        return start < begin + (end - begin) / 2
    return False
