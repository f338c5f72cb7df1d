"""
What a certificate says about itself that the renewal inventory keeps: its
names, serial, the key id of its issuer, and its validity.

A renewal is planned from these (which names to order together), ARI
(RFC 9773) identifies a certificate by its issuer's key id and its serial,
and the report shows when each certificate expires.  They are read once,
when a certificate is stored (issued through the gateway, or imported by
``acme-gateway adopt``), and kept in its row.

Pure: parsing only (``cryptography``), no I/O.
"""

from __future__ import annotations

from typing import Optional, Tuple

import attrs
from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.store.records import format_timestamp


@attrs.frozen
class LeafFacts:
    """
    The inventory's view of a leaf certificate.

    :ivar serial: the serial in lower-case hex without leading zeros, as
        the store and v1 URLs spell it.
    :ivar serial_der: the serial's DER INTEGER content bytes (with the
        leading zero byte a positive number whose top bit is set needs):
        the second half of an ARI certID.
    :ivar names: its DNS names (subjectAltName, else the subject CN),
        lower-cased and sorted, as an order's identifier set is.
    :ivar authority_key_id: the keyIdentifier of its Authority Key
        Identifier extension, in lower-case hex, or `None` without one.
    :ivar not_before: its validity, as RFC 3339 in UTC (whole seconds).
    """

    serial: str
    serial_der: bytes = attrs.field(repr=False)
    names: Tuple[str, ...]
    authority_key_id: Optional[str]
    not_before: str
    not_after: str


def serial_der_bytes(serial: int) -> bytes:
    """
    The content bytes of the DER INTEGER encoding of a (non-negative)
    serial number: big-endian, minimal, with a leading zero byte when the
    top bit would otherwise be set (RFC 9773 §4.1 uses exactly these).
    """
    if serial < 0:
        raise ValueError("a certificate serial is never negative")
    return serial.to_bytes(serial.bit_length() // 8 + 1, "big")


def _names(certificate: x509.Certificate) -> Tuple[str, ...]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    except x509.ExtensionNotFound:
        names = set()
    if not names:
        names = {str(a.value).lower()
                 for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    return tuple(sorted(names))


def _authority_key_id(certificate: x509.Certificate) -> Optional[str]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    key_identifier = extension.value.key_identifier
    return key_identifier.hex() if key_identifier else None


def leaf_facts(der: bytes) -> LeafFacts:
    """
    The inventory's facts of the DER certificate ``der``.

    :raises ValueError: when it does not parse.
    """
    certificate = x509.load_der_x509_certificate(der)
    return LeafFacts(
        serial=format(certificate.serial_number, "x"),
        serial_der=serial_der_bytes(certificate.serial_number),
        names=_names(certificate),
        authority_key_id=_authority_key_id(certificate),
        not_before=format_timestamp(certificate.not_valid_before_utc.timestamp()),
        not_after=format_timestamp(certificate.not_valid_after_utc.timestamp()),
    )
