"""
`gateway.translate.csr` on CSRs as real legacy clients wrote them (the committed
vectors of ``tests/vectors/csr/``, made with the clients' own CSR functions;
see the README there), and on edits of them: Boulder's rules for the version
field, the signature over the exact bytes signed, OCSP Must-Staple, CN-only
CSRs — and, through a whole in-memory gateway, that the refusals come before
any upstream order.
"""

from __future__ import annotations

import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from gateway.translate.csr import MUST_STAPLE, ZERO_LENGTH_VERSION, names_of, parse_csr
from gateway.translate.errors import Refused
from gateway.v1.problems import V1Problem, problem_for

VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors", "csr")
NAMES = ("legacy.example.test", "www.legacy.example.test")

#: CSRs whose version INTEGER is 2 (pyOpenSSL ``set_version(2)``).
VERSION_2 = {
    "certbot-0.31-rsa2048.pem": NAMES,
    "certbot-1.28-rsa2048.pem": NAMES,
    "certbot-1.28-ecdsa-p256.pem": NAMES,
    "acme-1.28-rsa2048-one-name.pem": NAMES[:1],
}
MUST_STAPLE_VECTORS = (
    "certbot-0.31-rsa2048-must-staple.pem",      # version 2, RSA
    "certbot-1.28-ecdsa-p256-must-staple.pem",   # version 2, P-256
    "certbot-1.32-rsa2048-must-staple.pem",      # version 0, RSA
)


def vector(name: str) -> bytes:
    """The DER of a committed vector (PEM files are converted)."""
    with open(os.path.join(VECTORS, name), "rb") as f:
        data = f.read()
    if data.startswith(b"-----BEGIN"):
        import base64

        body = b"".join(line for line in data.splitlines() if not line.startswith(b"-----"))
        return base64.b64decode(body)
    return data


def refusal(der: bytes) -> V1Problem:
    """
    The refusal of ``der``, as the v1 client reads it: a 400 ``malformed``.
    """
    with pytest.raises(Refused) as raised:
        parse_csr(der, allow_wildcard=True)
    problem = problem_for(raised.value)
    assert problem is not None
    assert problem.status == 400
    assert problem.code == "malformed"
    return problem


def spki(der: bytes) -> bytes:
    """The SubjectPublicKeyInfo inside a CSR, found without cryptography's CSR parser."""
    # certificationRequestInfo ::= SEQUENCE { version, subject, subjectPKInfo, attributes }
    outer = _children(der, 0)[0]
    info = _children(der, outer[0])
    version, subject, key = info[0], info[1], info[2]
    return der[key[0]:key[2]]


def _children(der: bytes, offset: int) -> list:
    """``(start, content start, end)`` of each element inside the one at ``offset``."""
    _, content, end = _tlv(der, offset)
    found, at = [], content
    while at < end:
        _, inner, stop = _tlv(der, at)
        found.append((at, inner, stop))
        at = stop
    return found


def _tlv(der: bytes, offset: int) -> tuple:
    first = der[offset + 1]
    at = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        length = int.from_bytes(der[at:at + count], "big")
        at += count
    return der[offset], at, at + length


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    size = (n.bit_length() + 7) // 8
    return bytes((0x80 | size,)) + n.to_bytes(size, "big")


def csr_with_version(key, version_tlv: bytes, names=("crafted.example.test",)) -> bytes:
    """
    A CSR for ``names`` whose version element is ``version_tlv`` (raw DER),
    signed by ``key`` over exactly those bytes, as a client with that
    version would have signed it.
    """
    built = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    der = built.public_bytes(serialization.Encoding.DER)
    info_start, info_content, info_end = _children(der, 0)[0]
    version = _children(der, info_start)[0]
    body = version_tlv + der[version[2]:info_end]
    info = b"\x30" + _length(len(body)) + body
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(info, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = key.sign(info, ec.ECDSA(hashes.SHA256()))
    algorithm = der[info_end:_children(der, 0)[1][2]]
    bits = b"\x03" + _length(len(signature) + 1) + b"\x00" + signature
    whole = info + algorithm + bits
    return b"\x30" + _length(len(whole)) + whole


def flip(der: bytes, index: int) -> bytes:
    edited = bytearray(der)
    edited[index] ^= 0x01
    return bytes(edited)


def version_offset(der: bytes) -> int:
    """The offset of the version INTEGER's one content byte."""
    info = _children(der, 0)[0]
    version = _children(der, info[0])[0]
    assert version[2] - version[1] == 1
    return version[1]


# --------------------------------------------------------------------------
# Any version INTEGER
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(VERSION_2))
def test_version_2_csrs_of_old_clients_are_read(name):
    """
    certbot 0.31 and 1.28 and acme 1.28 wrote version 2 (RSA and P-256);
    cryptography alone refuses such a CSR with ``x509.InvalidVersion``,
    which is not a ``ValueError`` — the gateway reads it.
    """
    der = vector(name)
    assert der[version_offset(der)] == 2
    with pytest.raises(x509.InvalidVersion):
        x509.load_der_x509_csr(der)
    assert not issubclass(x509.InvalidVersion, ValueError)

    parsed = parse_csr(der)
    assert names_of(parsed) == tuple(sorted(VERSION_2[name]))
    assert parsed.der == der, "the DER goes upstream as the client sent it"
    assert parsed.public_key_der == spki(der)
    assert not parsed.cn_only


def test_version_0_csr_of_certbot_1_32_is_read():
    der = vector("certbot-1.32-rsa2048.pem")
    assert der[version_offset(der)] == 0
    parsed = parse_csr(der)
    assert names_of(parsed) == NAMES
    assert parsed.public_key_der == spki(der)


@pytest.mark.parametrize("version_tlv", [
    b"\x02\x01\x01",              # version 2 in the sense of X.509 (the integer 1)
    b"\x02\x01\x7f",
    b"\x02\x01\xff",              # -1
    b"\x02\x02\x01\x00",          # 256: a longer INTEGER changes the lengths around it
    b"\x02\x08\x7f" + b"\xff" * 7,
], ids=["1", "127", "minus-1", "256", "int64-max"])
@pytest.mark.parametrize("kind", ["rsa", "p256"])
def test_any_version_integer_is_accepted(version_tlv, kind):
    """
    Boulder let Go's parser ignore the version: any well-formed INTEGER
    passes, and the signature is checked over the bytes as signed.
    """
    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    der = csr_with_version(key, version_tlv)
    parsed = parse_csr(der)
    assert names_of(parsed) == ("crafted.example.test",)
    assert parsed.public_key_der == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_a_version_integer_not_in_der_form_is_refused():
    key = ec.generate_private_key(ec.SECP256R1())
    problem = refusal(csr_with_version(key, b"\x02\x02\x00\x02"))
    assert "Error parsing certificate request" in problem.detail


# --------------------------------------------------------------------------
# The zero-length version, refused as Boulder refused it
# --------------------------------------------------------------------------

def test_zero_length_version_is_refused_with_boulders_words():
    """
    The vector has Boulder's layout: INTEGER of length 0 at bytes 8 and 9
    (two four-byte SEQUENCE headers before it).
    """
    der = vector("openssl-pre-1.0.2-zero-length-version.der")
    assert der[8:10] == b"\x02\x00"
    assert refusal(der).detail == ZERO_LENGTH_VERSION


def test_zero_length_version_of_a_short_csr_is_refused_too():
    """
    A P-256 CSR is shorter than 256 bytes, so its headers are shorter and
    Boulder's byte offsets miss the field (Go's parser then refused it); the
    gateway finds the field wherever it is and answers the same.
    """
    der = csr_with_version(ec.generate_private_key(ec.SECP256R1()), b"\x02\x00")
    assert der[8:10] != b"\x02\x00"
    assert refusal(der).detail == ZERO_LENGTH_VERSION


# --------------------------------------------------------------------------
# The signature covers the exact bytes the client signed
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["certbot-1.28-rsa2048.pem", "certbot-1.28-ecdsa-p256.pem"])
def test_version_2_csr_claiming_version_0_fails_its_signature(name):
    """
    Setting the version of a signed version-2 CSR to 0 (what the gateway
    does to its reading copy) is an edit the signature does not cover: a
    gateway that checked the copy would accept this.
    """
    der = vector(name)
    edited = bytearray(der)
    edited[version_offset(der)] = 0
    assert "invalid signature" in refusal(bytes(edited)).detail


def test_version_0_csr_claiming_version_2_fails_its_signature():
    der = vector("certbot-1.32-rsa2048.pem")
    edited = bytearray(der)
    edited[version_offset(der)] = 2
    assert "invalid signature" in refusal(bytes(edited)).detail


@pytest.mark.parametrize("name", [
    "certbot-1.32-rsa2048.pem",       # RSA, version 0
    "certbot-1.28-rsa2048.pem",       # RSA, version 2
    "certbot-0.31-rsa2048.pem",       # RSA, version 2
    "certbot-1.28-ecdsa-p256.pem",    # P-256, version 2
])
@pytest.mark.parametrize("where", ["signature", "signed-name"])
def test_bad_signatures_are_refused(name, where):
    """
    A bit flipped in the signature value, or in the signed SAN (the name's
    last letter), of real RSA and P-256 CSRs.
    """
    der = vector(name)
    if where == "signature":
        edited = flip(der, len(der) - 1)
    else:
        at = der.index(b"legacy.example.test") + len("legacy.example.tes")
        edited = der[:at] + b"x" + der[at + 1:]
    assert "invalid signature on CSR" in refusal(edited).detail


# --------------------------------------------------------------------------
# OCSP Must-Staple
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", MUST_STAPLE_VECTORS)
def test_must_staple_is_refused_with_the_way_out(name):
    problem = refusal(vector(name))
    assert problem.detail == MUST_STAPLE
    assert "must_staple = True" in problem.detail and "--must-staple" in problem.detail


# --------------------------------------------------------------------------
# CN-only
# --------------------------------------------------------------------------

def test_cn_only_csr_is_passed_through():
    """
    ``openssl req -new -key domain.key -subj /CN=…`` (acme-tiny's single-name
    recipe): no SAN extension; the CN is the name.
    """
    der = vector("openssl-cn-only-rsa2048.pem")
    parsed = parse_csr(der)
    assert names_of(parsed) == ("cn-only.example.test",)
    assert parsed.cn_only
    assert parsed.der == der


# --------------------------------------------------------------------------
# Through a whole in-memory gateway: refusals before any upstream order
# --------------------------------------------------------------------------

from gateway.keys.jose import b64url  # noqa: E402
from tests.test_v1_face import FaceTestCase  # noqa: E402


class NewCertTests(FaceTestCase):
    """
    ``new-cert`` with the vectors, a registered account, and a FakeCA.
    """

    def new_cert(self, der: bytes):
        return self.post("/acme/new-cert", {"resource": "new-cert", "csr": b64url(der)})

    def test_must_staple_is_refused_before_any_order(self):
        self.register()
        self.authorize("legacy.example.test")
        self.authorize("www.legacy.example.test")
        orders = self.ca.counts["newOrder"]
        for name in MUST_STAPLE_VECTORS:
            reply = self.new_cert(vector(name))
            problem = self.assertProblem(reply, 400, "malformed", "Must-Staple", "must_staple = True")
            self.assertEqual(problem["detail"], MUST_STAPLE)
        self.assertEqual(self.ca.counts["newOrder"], orders)
        self.assertEqual(self.ca.counts["finalize"], 0)

    def test_must_staple_costs_no_upstream_call_even_for_an_unbound_account(self):
        """
        A client that never registered: the CSR is checked before its
        account is looked up or created upstream.
        """
        reply = self.new_cert(vector("certbot-1.32-rsa2048-must-staple.pem"))
        self.assertProblem(reply, 400, "malformed", "Must-Staple")
        self.assertEqual(self.ca.counts["newAccount"], 0)
        self.assertEqual(self.ca.counts["newOrder"], 0)

    def test_zero_length_version_is_refused_before_any_order(self):
        self.register()
        reply = self.new_cert(vector("openssl-pre-1.0.2-zero-length-version.der"))
        problem = self.assertProblem(reply, 400, "malformed", "pre-1.0.2 OpenSSL")
        self.assertEqual(problem["detail"], ZERO_LENGTH_VERSION)
        self.assertEqual(self.ca.counts["newOrder"], 0)

    def test_bad_signature_of_a_version_2_csr_is_a_v1_problem(self):
        """
        Before, ``x509.InvalidVersion`` escaped here as a 500.
        """
        self.register()
        der = vector("certbot-1.28-rsa2048.pem")
        reply = self.new_cert(flip(der, len(der) - 1))
        self.assertProblem(reply, 400, "malformed", "invalid signature on CSR")
        self.assertEqual(self.ca.counts["newOrder"], 0)

    def test_cn_only_csr_refused_upstream_says_to_add_a_san(self):
        """
        The CA refuses the finalize as Pebble does (it reads only SANs): the
        v1 error carries the CA's words and says to add the name as a SAN.
        """
        self.register()
        self.authorize("cn-only.example.test")
        self.ca.fail_next("/finalize/", 403, {
            "type": "unauthorized",
            "detail": "Order includes different number of DNSnames identifiers than CSR specifies"})
        reply = self.new_cert(vector("openssl-cn-only-rsa2048.pem"))
        self.assertProblem(reply, 400, "malformed", "different number of DNSnames",
                           "only in its subject's Common Name", "subjectAltName",
                           "cn-only.example.test")

    def test_cn_only_csr_passes_through_to_a_ca_that_reads_the_cn(self):
        """
        The FakeCA reads the CN, as Let's Encrypt does: the certificate comes.
        """
        self.register()
        self.authorize("cn-only.example.test")
        reply = self.new_cert(vector("openssl-cn-only-rsa2048.pem"))
        self.assertEqual(reply.status, 201, reply.body)
        self.assertEqual(self.ca.counts["finalize"], 1)

    def test_a_refused_csr_with_sans_gets_the_cas_words_only(self):
        self.register()
        self.authorize()
        self.ca.fail_next("/finalize/", 400, {"type": "badCSR", "detail": "key too weak"})
        from tests.test_v1_face import make_csr

        reply = self.new_cert(make_csr([NAME_WWW]))
        problem = self.assertProblem(reply, 400, "malformed", "key too weak")
        self.assertNotIn("subjectAltName", problem["detail"])


NAME_WWW = "www.example.test"
