"""
Reading the CSRs legacy clients send to ``new-cert``, as Boulder took them.

The gateway needs from a CSR the DNS names it asks for (the CN and every
SAN, lower-cased, deduplicated), its public key (Boulder refused a CSR whose
key is the account key), and whether its signature holds.  The DER itself
is passed upstream untouched: Boulder and Pebble parse it with Go's
``x509.ParseCertificateRequest``, which ignores the version.

What Boulder's v1 ``new-cert`` did with the version field, and so what the
gateway does:

- **any version INTEGER is accepted.**  pyOpenSSL's ``set_version(2)``, which
  the ``acme`` library before 1.29 (certbot 0.x and 1.0–1.28) called, writes
  the integer 2; ``cryptography`` refuses to load such a CSR
  (``x509.InvalidVersion``).  The gateway reads it from a copy whose version
  is 0, for its names, key and extensions only, and checks the signature over
  the original ``certificationRequestInfo``, the exact bytes the client
  signed;
- **a zero-length version is refused**, with Boulder's own words: before Go's
  parser, Boulder looked for ``INTEGER`` with length 0 where the version sits
  (bytes 8 and 9 of a CSR whose two SEQUENCE headers take four bytes each),
  which OpenSSL before 1.0.2 wrote when a client never set the version.  The
  gateway finds the field by walking the DER, so short (EC) CSRs get the same
  answer that Go's parser gave them in other words.

Two more rules of today's CAs, applied before any upstream order:

- a CSR that requests OCSP Must-Staple (the TLS Feature extension with
  ``status_request``, which old ``certbot --must-staple`` renewal configs
  still add) is refused with a detail saying how to drop the option: Let's
  Encrypt has refused such CSRs since May 2025;
- a CSR whose only name is its subject CN is passed through (Let's Encrypt
  reads the CN), and `ParsedCSR.cn_only` lets the issuance flow tell the
  client to add the name as a SAN when the CA refuses it (Pebble ignores the
  CN).
"""

from __future__ import annotations

from typing import Optional, Tuple

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from gateway.translate.policy import DNSName, check_name_set, parse_csr_name
from gateway.translate.errors import CSRRejected

MAX_CSR_BYTES = 16 * 1024

#: Boulder's answer to the zero-length version of a pre-1.0.2 OpenSSL.
ZERO_LENGTH_VERSION = (
    "CSR generated using a pre-1.0.2 OpenSSL with a client that doesn't properly specify the "
    "CSR version. See https://community.letsencrypt.org/t/openssl-bug-information/19591"
)

#: The refusal of an OCSP Must-Staple request, with the way out.
MUST_STAPLE = (
    "Error creating new cert :: the CSR requests OCSP Must-Staple (TLS Feature extension, "
    "status_request), which the CA no longer issues: Let's Encrypt has refused such requests "
    "since May 2025 and no longer runs OCSP. Drop the option and ask again: for certbot, remove "
    "`must_staple = True` from the certificate's renewal configuration "
    "(/etc/letsencrypt/renewal/<name>.conf) or stop passing --must-staple"
)

_SEQUENCE, _INTEGER = 0x30, 0x02


@attrs.frozen
class ParsedCSR:
    """
    What the gateway uses of a CSR.

    :ivar der: the CSR exactly as the client sent it.
    :ivar names: the checked, deduplicated names (CN and SANs).
    :ivar public_key_der: the SubjectPublicKeyInfo, DER.
    :ivar cn_only: the CSR has no SAN extension, so its name is only in the
        subject's CN (which some CAs ignore).
    """

    der: bytes = attrs.field(repr=False)
    names: Tuple[DNSName, ...]
    public_key_der: bytes = attrs.field(repr=False)
    cn_only: bool = False


class _BadDER(ValueError):
    pass


def _element(data: bytes, offset: int, end: int) -> Tuple[int, int, int]:
    """
    The DER element at ``offset`` (which must end by ``end``): ``(tag,
    content offset, content end)``.
    """
    if offset + 2 > end:
        raise _BadDER("truncated")
    tag, first = data[offset], data[offset + 1]
    offset += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or offset + count > end:
            raise _BadDER("bad length")
        length = int.from_bytes(data[offset:offset + count], "big")
        if length < 0x80 or data[offset] == 0:
            raise _BadDER("length not in DER form")
        offset += count
    if offset + length > end:
        raise _BadDER("truncated")
    return tag, offset, offset + length


def _header(tag: int, length: int) -> bytes:
    if length < 0x80:
        return bytes((tag, length))
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big")


@attrs.frozen
class _Layout:
    """
    Where things are in a CSR's DER: the ``certificationRequestInfo`` (the
    signed bytes) and its version INTEGER's content.
    """

    info: bytes
    info_start: int
    info_end: int
    version_start: int
    version_end: int
    version_content: bytes


def _layout(der: bytes) -> _Layout:
    tag, start, end = _element(der, 0, len(der))
    if tag != _SEQUENCE or end != len(der):
        raise _BadDER("not one SEQUENCE")
    tag, info_content, info_end = _element(der, start, end)
    if tag != _SEQUENCE:
        raise _BadDER("no certificationRequestInfo")
    tag, version_content, version_end = _element(der, info_content, info_end)
    if tag != _INTEGER:
        raise _BadDER("no version")
    return _Layout(
        info=der[start:info_end], info_start=start, info_end=info_end,
        version_start=info_content, version_end=version_end,
        version_content=der[version_content:version_end],
    )


def _with_version_zero(der: bytes, layout: _Layout) -> bytes:
    """
    A copy of ``der`` whose version INTEGER is 0, the enclosing lengths
    recomputed (a version of any length may be replaced).
    """
    # The version is the first element of the info, so nothing precedes it.
    info_body = b"\x02\x01\x00" + der[layout.version_end:layout.info_end]
    info = _header(_SEQUENCE, len(info_body)) + info_body
    body = info + der[layout.info_end:]
    return _header(_SEQUENCE, len(body)) + body


def _minimal_integer(content: bytes) -> bool:
    return len(content) == 1 or not (
        (content[0] == 0x00 and content[1] < 0x80) or (content[0] == 0xFF and content[1] >= 0x80)
    )


def _load(der: bytes) -> Tuple[x509.CertificateSigningRequest, bytes]:
    """
    The CSR, read with its version set to 0 when it is not, and the bytes its
    signature covers.

    :raises CSRRejected:
    """
    try:
        layout = _layout(der)
    except _BadDER:
        raise CSRRejected("Error parsing certificate request")
    if not layout.version_content:
        raise CSRRejected(ZERO_LENGTH_VERSION)
    if not _minimal_integer(layout.version_content):
        raise CSRRejected(
            "Error parsing certificate request: the version INTEGER is not minimally encoded")
    readable = der if layout.version_content == b"\x00" else _with_version_zero(der, layout)
    try:
        return x509.load_der_x509_csr(readable), layout.info
    except Exception:
        # ValueError, x509.InvalidVersion and whatever else cryptography
        # raises for bytes it cannot read: all the client's fault.
        raise CSRRejected("Error parsing certificate request")


def _signature_holds(csr: x509.CertificateSigningRequest, signed: bytes) -> bool:
    """
    Whether the CSR's signature holds over ``signed``, the original
    ``certificationRequestInfo``.
    """
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
            key.verify(csr.signature, signed, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(csr.signature, signed, ec.ECDSA(algorithm))
        else:
            return False
    except Exception:
        return False
    return True


def _requests_must_staple(csr: x509.CertificateSigningRequest) -> bool:
    try:
        features = csr.extensions.get_extension_for_class(x509.TLSFeature).value
    except x509.ExtensionNotFound:
        return False
    return any(feature in (x509.TLSFeatureType.status_request,
                           x509.TLSFeatureType.status_request_v2) for feature in features)


def parse_csr(der: bytes, allow_wildcard: bool = False) -> ParsedCSR:
    """
    Read a v1 ``new-cert`` CSR.

    :raises CSRRejected: for anything the gateway cannot use, including a
        CSR that requests OCSP Must-Staple.
    :raises IdentifierRejected: for a name it cannot issue for.
    """
    if not der or len(der) > MAX_CSR_BYTES:
        raise CSRRejected("Error parsing certificate request: empty or too large")
    csr, signed = _load(der)
    try:
        public_key = csr.public_key()
    except Exception:
        raise CSRRejected("Error parsing certificate request")
    if not isinstance(public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise CSRRejected("Error creating new cert :: invalid public key in CSR")
    if not _signature_holds(csr, signed):
        raise CSRRejected("Error creating new cert :: invalid signature on CSR")

    raw_names = []
    san: Optional[x509.SubjectAlternativeName] = None
    try:
        for attribute in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            raw_names.append(attribute.value)
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            san = None
        if san is not None:
            others = [g for g in san if not isinstance(g, x509.DNSName)]
            if others:
                raise CSRRejected(
                    "Error creating new cert :: CSR contains identifiers other than DNS names"
                )
            raw_names.extend(san.get_values_for_type(x509.DNSName))
        must_staple = _requests_must_staple(csr)
    except CSRRejected:
        raise
    except Exception:
        raise CSRRejected("Error parsing certificate request extensions")
    if must_staple:
        raise CSRRejected(MUST_STAPLE)
    names = check_name_set(parse_csr_name(n, allow_wildcard=allow_wildcard) for n in raw_names)
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ParsedCSR(der=der, names=names, public_key_der=spki, cn_only=san is None)


#: Upstream refusals of a finalize that may be the CA ignoring a CSR's CN.
_CSR_REFUSALS = frozenset({"badCSR", "unauthorized", "malformed", "rejectedIdentifier"})


def cn_only_refusal(parsed: ParsedCSR, code: str, ca_detail: str) -> Optional[CSRRejected]:
    """
    What the client gets when the CA refused to finalize with ``parsed``
    (v2 ``code`` and detail): for a CN-only CSR, a refusal saying to
    add the name as a SAN (the CA may ignore the CN, as Pebble does);
    ``None`` for any other CSR or refusal.
    """
    if not parsed.cn_only or code not in _CSR_REFUSALS:
        return None
    names = ", ".join(names_of(parsed))
    return CSRRejected(
        f"Error creating new cert :: the CA refused the CSR ({ca_detail}). The CSR names "
        f"{names} only in its subject's Common Name, which this CA does not read: add each name "
        f"as a subjectAltName DNS entry (for example `openssl req -new -key domain.key "
        f"-subj /CN={names_of(parsed)[0]} -addext subjectAltName=DNS:{names_of(parsed)[0]}`) "
        f"and send the new CSR"
    )


def names_of(parsed: ParsedCSR) -> Tuple[str, ...]:
    """
    The sorted spellings of the CSR's names.
    """
    return tuple(sorted(n.spelled for n in parsed.names))


__all__ = ["ParsedCSR", "parse_csr", "names_of", "cn_only_refusal", "DNSName", "MUST_STAPLE",
           "ZERO_LENGTH_VERSION"]
