"""
`gateway.translate.csr` at its edges (issue 21, the mutants that survived the
suite): the DER walker's length rules, a CSR with bytes after it or with
something other than SEQUENCE/INTEGER where the version sits, the minimal
INTEGER rule at its boundaries, keys and signature algorithms the gateway
cannot check, CN and SAN names together, the size cap, and the words of the
CN-only refusal.
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519
from cryptography.x509.oid import NameOID

from gateway.translate.csr import (
    MAX_CSR_BYTES, ParsedCSR, _BadDER, _element, _header, _minimal_integer, _signature_holds,
    cn_only_refusal, names_of, parse_csr,
)
from gateway.translate.errors import CSRRejected
from gateway.translate.policy import parse_csr_name
from tests.test_csr import _children, refusal


def build(key, cn=None, sans=None, extensions=()) -> bytes:
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if sans is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)


P256 = ec.generate_private_key(ec.SECP256R1())


# --------------------------------------------------------------------------
# The DER walker
# --------------------------------------------------------------------------

def test_element_reads_short_and_long_lengths():
    assert _element(b"\x04\x00", 0, 2) == (0x04, 2, 2), "a two-byte element fits exactly"
    assert _element(b"\x04\x03abc", 0, 5) == (0x04, 2, 5)
    long_form = b"\x04\x81\x80" + b"a" * 0x80
    assert _element(long_form, 0, len(long_form)) == (0x04, 3, 3 + 0x80), "0x80 is the first long length"
    two_bytes = b"\x04\x82\x01\x00" + b"a" * 256
    assert _element(two_bytes, 0, len(two_bytes)) == (0x04, 4, 4 + 256)
    assert _element(b"xx\x04\x01a", 2, 5) == (0x04, 4, 5), "offsets count from the element"


@pytest.mark.parametrize("data, end", [
    (b"\x04", 1),                                  # no length byte
    (b"\x04\x00", 1),                              # the end falls inside the header
    (b"\x04\x05abc", 5),                           # short form, content cut
    (b"\x04\x80" + b"a" * 0x80, 0x82),             # indefinite length (BER, not DER)
    (b"\x04\x85\x01\x00\x00\x00\x00", 7),          # five length bytes
    (b"\x04\x82\x01", 3),                          # length bytes cut
    (b"\x04\x81\x05abcde", 8),                     # long form for a length under 0x80
    (b"\x04\x82\x00\x80" + b"a" * 0x80, 0x84),     # leading zero in a long length
    (b"\x04\x81\x80" + b"a" * 0x7F, 0x82),         # long form, content cut
], ids=["no-length", "header-cut", "short-cut", "indefinite", "five-length-bytes",
        "length-cut", "long-for-short", "leading-zero", "long-cut"])
def test_element_refuses_what_is_not_der(data, end):
    with pytest.raises(_BadDER):
        _element(data, 0, end)


def test_element_reads_a_four_byte_length():
    """The longest length the walker takes (a CSR is capped far below it)."""
    length = 1 << 24
    data = b"\x04\x84" + length.to_bytes(4, "big") + bytes(length)
    assert _element(data, 0, len(data)) == (0x04, 6, 6 + length)


@pytest.mark.parametrize("length, expected", [
    (0, b"\x30\x00"),
    (0x7F, b"\x30\x7f"),
    (0x80, b"\x30\x81\x80"),
    (0xFF, b"\x30\x81\xff"),
    (0x100, b"\x30\x82\x01\x00"),
])
def test_header_writes_der_lengths(length, expected):
    assert _header(0x30, length) == expected


@pytest.mark.parametrize("content, minimal", [
    (b"\x00", True),
    (b"\x00\x7f", False),          # the 0x00 adds nothing
    (b"\x00\x80", True),           # the 0x00 keeps 0x80 positive
    (b"\xff\x80", False),          # the 0xff adds nothing
    (b"\xff\x7f", True),           # the 0xff keeps it negative
    (b"\xff\x7f\x80", True),       # only the second byte decides
    (b"\x01\x00", True),
])
def test_minimal_integer(content, minimal):
    assert _minimal_integer(content) is minimal


def test_a_csr_with_bytes_after_it_is_refused():
    der = build(P256, sans=["trailing.example.test"])
    problem = refusal(der + b"\x00")
    assert problem.detail == "Error parsing certificate request"


@pytest.mark.parametrize("where", ["outer", "info", "version"])
def test_a_csr_with_the_wrong_element_is_refused(where):
    """
    The outer element, the certificationRequestInfo and the version are
    found by their tags: another tag there is not a CSR.
    """
    der = bytearray(build(P256, sans=["tags.example.test"]))
    info = _children(bytes(der), 0)[0]
    version = _children(bytes(der), info[0])[0]
    at = {"outer": 0, "info": info[0], "version": version[0]}[where]
    der[at] = 0x31  # SET
    assert refusal(bytes(der)).detail == "Error parsing certificate request"


# --------------------------------------------------------------------------
# Keys and signatures the gateway cannot check
# --------------------------------------------------------------------------

def test_an_ed25519_csr_is_refused_for_its_key():
    der = build(ed25519.Ed25519PrivateKey.generate(), sans=["ed.example.test"])
    assert refusal(der).detail == "Error creating new cert :: invalid public key in CSR"


def test_a_dsa_csr_is_refused_for_its_key():
    der = build(dsa.generate_private_key(2048), sans=["dsa.example.test"])
    assert refusal(der).detail == "Error creating new cert :: invalid public key in CSR"


def test_the_signature_of_a_key_other_than_rsa_or_ec_does_not_hold():
    """Even a DSA signature that verifies is not one the gateway accepts."""
    der = build(dsa.generate_private_key(2048), sans=["dsa.example.test"])
    csr = x509.load_der_x509_csr(der)
    assert csr.is_signature_valid
    assert _signature_holds(csr, csr.tbs_certrequest_bytes) is False


def test_an_unknown_signature_algorithm_is_a_bad_signature():
    """
    ecdsa-with-SHA256 (1.2.840.10045.4.3.2) made 1.2.840.10045.4.3.9 in the
    outer AlgorithmIdentifier, which the signature does not cover:
    cryptography cannot name its hash, so the signature cannot hold.
    """
    der = build(P256, sans=["alg.example.test"])
    oid = bytes.fromhex("06082a8648ce3d040302")
    assert der.count(oid) == 1
    edited = der.replace(oid, oid[:-1] + b"\x09")
    assert refusal(edited).detail == "Error creating new cert :: invalid signature on CSR"
    csr = x509.load_der_x509_csr(edited)
    assert _signature_holds(csr, csr.tbs_certrequest_bytes) is False


def test_a_good_signature_holds_and_a_bad_one_does_not():
    csr = x509.load_der_x509_csr(build(P256, sans=["sig.example.test"]))
    assert _signature_holds(csr, csr.tbs_certrequest_bytes) is True
    assert _signature_holds(csr, csr.tbs_certrequest_bytes + b"\x00") is False


# --------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------

def test_a_cn_outside_the_sans_is_one_of_the_names():
    der = build(P256, cn="Outside.Example.Test", sans=["inside.example.test", "INSIDE.example.test"])
    parsed = parse_csr(der)
    assert names_of(parsed) == ("inside.example.test", "outside.example.test")
    assert not parsed.cn_only
    assert parsed.der == der


def test_a_csr_with_a_san_but_no_cn():
    parsed = parse_csr(build(P256, sans=["only-san.example.test"]))
    assert names_of(parsed) == ("only-san.example.test",)
    assert not parsed.cn_only


def test_a_csr_with_an_ip_address_san_is_refused():
    import ipaddress

    builder = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName([
                   x509.DNSName("ip.example.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                   critical=False))
    der = builder.sign(P256, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    assert refusal(der).detail == (
        "Error creating new cert :: CSR contains identifiers other than DNS names")


def test_a_csr_with_an_unreadable_extension_is_refused():
    """A SAN extension whose value is not a GeneralNames SEQUENCE."""
    bad_san = x509.UnrecognizedExtension(x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x04\x00")
    der = build(P256, cn="ext.example.test", extensions=[bad_san])
    assert refusal(der).detail == "Error parsing certificate request extensions"


def test_must_staple_v2_is_refused_and_other_tls_features_are_not():
    from gateway.translate.csr import MUST_STAPLE

    v2 = x509.TLSFeature([x509.TLSFeatureType.status_request_v2])
    assert refusal(build(P256, sans=["v2.example.test"], extensions=[v2])).detail == MUST_STAPLE
    parsed = parse_csr(build(P256, sans=["plain.example.test"], extensions=[
        x509.BasicConstraints(ca=False, path_length=None)]))
    assert names_of(parsed) == ("plain.example.test",)


# --------------------------------------------------------------------------
# Size
# --------------------------------------------------------------------------

def _csr_of_size(size: int) -> bytes:
    """A well-signed P-256 CSR of exactly ``size`` bytes (an OU pads it)."""
    names = ["size.example.test"]

    def made(pad: int) -> bytes:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "size.example.test"),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "p" * pad)])
        key = ec.derive_private_key(7, ec.SECP256R1())
        return (x509.CertificateSigningRequestBuilder().subject_name(subject)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
                .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))

    # ECDSA signatures vary in length by a byte or two: search for the size.
    # The OU is a PrintableString; its length is not bound in a CSR.
    pad = size - len(made(1)) + 1
    for _ in range(50):
        der = made(max(pad, 1))
        if len(der) == size:
            return der
        pad += size - len(der)
    raise AssertionError(f"no CSR of {size} bytes")


def test_the_size_cap_is_16_kib():
    assert MAX_CSR_BYTES == 16 * 1024
    at_cap = _csr_of_size(MAX_CSR_BYTES)
    assert names_of(parse_csr(at_cap)) == ("size.example.test",)
    over = _csr_of_size(MAX_CSR_BYTES + 1)
    assert refusal(over).detail == "Error parsing certificate request: empty or too large"
    assert refusal(b"").detail == "Error parsing certificate request: empty or too large"


def test_an_unreadable_public_key_is_refused():
    """A SubjectPublicKeyInfo naming P-256 with a point not on the curve."""
    ec_der = build(P256, sans=["point.example.test"])
    point = P256.public_key().public_bytes(serialization.Encoding.X962,
                                           serialization.PublicFormat.UncompressedPoint)
    assert ec_der.count(point) == 1
    broken = ec_der.replace(point, b"\x04" + b"\x01" * 64)
    assert refusal(broken).detail == "Error parsing certificate request"


# --------------------------------------------------------------------------
# The CN-only refusal
# --------------------------------------------------------------------------

def _parsed(names, cn_only):
    return ParsedCSR(der=b"", names=tuple(parse_csr_name(n) for n in names),
                     public_key_der=b"", cn_only=cn_only)


def test_the_cn_only_refusal_in_full():
    refused = cn_only_refusal(_parsed(["b.example.test", "a.example.test"], True), "badCSR", "no SAN")
    assert isinstance(refused, CSRRejected)
    assert refused.detail == (
        "Error creating new cert :: the CA refused the CSR (no SAN). The CSR names "
        "a.example.test, b.example.test only in its subject's Common Name, which this CA does not "
        "read: add each name as a subjectAltName DNS entry (for example `openssl req -new -key "
        "domain.key -subj /CN=a.example.test -addext subjectAltName=DNS:a.example.test`) and send "
        "the new CSR")


@pytest.mark.parametrize("code", ["badCSR", "unauthorized", "malformed", "rejectedIdentifier"])
def test_the_cn_only_refusal_answers_the_csr_refusals(code):
    assert cn_only_refusal(_parsed(["a.example.test"], True), code, "x") is not None


@pytest.mark.parametrize("code", ["serverInternal", "rateLimited", "orderNotReady", ""])
def test_the_cn_only_refusal_leaves_other_refusals(code):
    assert cn_only_refusal(_parsed(["a.example.test"], True), code, "x") is None


def test_the_cn_only_refusal_leaves_csrs_with_sans():
    assert cn_only_refusal(_parsed(["a.example.test"], False), "badCSR", "x") is None


# --------------------------------------------------------------------------
# What a second look found
# --------------------------------------------------------------------------

def test_a_version_not_minimally_encoded_is_refused_in_these_words():
    from tests.test_csr import csr_with_version

    problem = refusal(csr_with_version(P256, b"\x02\x02\x00\x02"))
    assert problem.detail == (
        "Error parsing certificate request: the version INTEGER is not minimally encoded")


@pytest.mark.parametrize("info", [
    b"\x02\x01\x00",                                   # a version and nothing else
    b"\x02\x01\x02\x30\x00",                           # version 2: read through the version-0 copy
], ids=["version-0", "version-2"])
def test_a_csr_cryptography_cannot_read_is_refused(info):
    body = b"\x30" + bytes((len(info),)) + info
    der = b"\x30" + bytes((len(body),)) + body
    assert refusal(der).detail == "Error parsing certificate request"


def test_an_ed25519_signature_never_holds():
    """Its hash algorithm is None: the gateway checks RSA and ECDSA only."""
    csr = x509.load_der_x509_csr(build(ed25519.Ed25519PrivateKey.generate(), sans=["ed.example.test"]))
    assert csr.signature_hash_algorithm is None
    assert _signature_holds(csr, csr.tbs_certrequest_bytes) is False


def test_wildcard_csr_names_only_when_allowed():
    der = build(P256, sans=["*.wild.example.test", "wild.example.test"])
    assert refusal_of_names(der) == "Wildcard names not supported"
    parsed = parse_csr(der, allow_wildcard=True)
    assert names_of(parsed) == ("*.wild.example.test", "wild.example.test")


def refusal_of_names(der: bytes) -> str:
    from gateway.translate.errors import IdentifierRejected

    with pytest.raises(IdentifierRejected) as raised:
        parse_csr(der)
    return raised.value.detail
