"""
Reading the CSRs legacy clients send to ``new-cert``.

The gateway needs three things from a CSR: the DNS names it asks for (the
CN and every SAN, lower-cased, deduplicated), its public key (Boulder
refused a CSR whose key is the account key), and whether its signature
holds.  The DER itself is passed upstream untouched.

Parsing is lenient where old clients were sloppy: the ``acme`` library
before 1.29 wrote version 2 (the integer 1) into CSRs, which
``cryptography`` 38 and later refuse to load, while CAs ignore the field.
Such a CSR is read from a copy with the version set to 1 (integer 0), for
its names and key only; its signature is then checked over the original
``certificationRequestInfo`` bytes.
"""

from __future__ import annotations

from typing import Optional

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from gateway.policy import DNSName, check_name_set, parse_csr_name
from gateway.problems import V1Problem

MAX_CSR_BYTES = 16 * 1024


@attrs.frozen
class ParsedCSR:
    """
    What the gateway uses of a CSR.

    :ivar der: the CSR exactly as the client sent it.
    :ivar names: the checked, deduplicated names (CN and SANs).
    :ivar public_key_der: the SubjectPublicKeyInfo, DER.
    """

    der: bytes = attrs.field(repr=False)
    names: tuple
    public_key_der: bytes = attrs.field(repr=False)


def _read_length(data: bytes, offset: int):
    first = data[offset]
    offset += 1
    if first < 0x80:
        return first, offset
    count = first & 0x7F
    if count == 0 or count > 4 or offset + count > len(data):
        raise ValueError("bad DER length")
    return int.from_bytes(data[offset:offset + count], "big"), offset + count


def _with_version_zero(der: bytes) -> Optional[bytes]:
    """
    A copy of ``der`` with the CSR version INTEGER set to 0, or ``None``
    when the layout is not the expected SEQUENCE { SEQUENCE { INTEGER ...
    """
    try:
        if der[0] != 0x30:
            return None
        _, inner = _read_length(der, 1)
        if der[inner] != 0x30:
            return None
        _, version_at = _read_length(der, inner + 1)
        if der[version_at:version_at + 2] != b"\x02\x01":
            return None
        return der[:version_at + 2] + b"\x00" + der[version_at + 3:]
    except (IndexError, ValueError):
        return None


def _load(der: bytes) -> x509.CertificateSigningRequest:
    try:
        return x509.load_der_x509_csr(der)
    except ValueError:
        patched = _with_version_zero(der)
        if patched is None or patched == der:
            raise
        return x509.load_der_x509_csr(patched)


def _signature_holds(csr: x509.CertificateSigningRequest) -> bool:
    try:
        key = csr.public_key()
        # Raises UnsupportedAlgorithm for a signature AlgorithmIdentifier
        # cryptography does not know (a mangled one, or one with parameters).
        algorithm = csr.signature_hash_algorithm
    except Exception:
        return False
    if algorithm is None:
        return False
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(csr.signature, csr.tbs_certrequest_bytes, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(csr.signature, csr.tbs_certrequest_bytes, ec.ECDSA(algorithm))
        else:
            return False
    except Exception:
        return False
    return True


def parse_csr(der: bytes, allow_wildcard: bool = False) -> ParsedCSR:
    """
    Read a v1 ``new-cert`` CSR.

    :raises V1Problem: ``malformed`` for anything the gateway cannot use.
    """
    if not der or len(der) > MAX_CSR_BYTES:
        raise V1Problem.malformed("Error parsing certificate request: empty or too large")
    try:
        csr = _load(der)
        public_key = csr.public_key()
    except Exception:
        raise V1Problem.malformed("Error parsing certificate request")
    if not isinstance(public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise V1Problem.malformed("Error creating new cert :: invalid public key in CSR")
    # The signature covers the original bytes of certificationRequestInfo; a
    # patched copy keeps them except for the version byte, so check against
    # the original where that parses.
    try:
        signed = x509.load_der_x509_csr(der)
    except ValueError:
        signed = None
    if signed is not None:
        valid = _signature_holds(signed)
    else:
        valid = _verify_original_signature(der, csr)
    if not valid:
        raise V1Problem.malformed("Error creating new cert :: invalid signature on CSR")

    raw_names = []
    try:
        for attribute in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            raw_names.append(attribute.value)
        try:
            extension = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            extension = None
        if extension is not None:
            others = [g for g in extension.value if not isinstance(g, x509.DNSName)]
            if others:
                raise V1Problem.malformed(
                    "Error creating new cert :: CSR contains identifiers other than DNS names"
                )
            raw_names.extend(extension.value.get_values_for_type(x509.DNSName))
    except V1Problem:
        raise
    except Exception:
        raise V1Problem.malformed("Error parsing certificate request extensions")
    names = check_name_set(parse_csr_name(n, allow_wildcard=allow_wildcard) for n in raw_names)
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ParsedCSR(der=der, names=names, public_key_der=spki)


def _verify_original_signature(der: bytes, patched: x509.CertificateSigningRequest) -> bool:
    """
    Check a version-2 CSR's signature over its original
    ``certificationRequestInfo``, which is the patched one's with the version
    byte restored.
    """
    tbs = bytearray(patched.tbs_certrequest_bytes)
    original_version_at = None
    try:
        _, version_at = _read_length(bytes(tbs), 1)
        if tbs[version_at:version_at + 3] == b"\x02\x01\x00":
            original_version_at = version_at + 2
    except (IndexError, ValueError):
        return False
    if original_version_at is None:
        return False
    restored = _with_version_zero(der)  # locate the version byte in the original
    if restored is None:
        return False
    # The original version byte sits at the same offset in the original DER's
    # info, so copy it back into the info bytes.
    info_offset = der.find(bytes(tbs[:version_at]))
    if info_offset < 0:
        return False
    tbs[original_version_at] = der[info_offset + original_version_at]
    try:
        key = patched.public_key()
        algorithm = patched.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(patched.signature, bytes(tbs), padding.PKCS1v15(), algorithm)
        else:
            key.verify(patched.signature, bytes(tbs), ec.ECDSA(algorithm))
    except Exception:
        return False
    return True


def names_of(parsed: ParsedCSR) -> tuple:
    """
    The sorted spellings of the CSR's names.
    """
    return tuple(sorted(n.spelled for n in parsed.names))


__all__ = ["ParsedCSR", "parse_csr", "names_of", "DNSName"]
