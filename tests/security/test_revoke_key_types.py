"""
``revoke-cert`` for certificates of every key type a certificate may carry
(issue 18 item 5): Ed25519, Ed448 and DSA certificates were a 500 with a
traceback (``public_jwk()`` raised ``UnsupportedKey`` while the gateway
asked whether the certificate's own key had signed the request), from any
key; EC certificates on curves the JOSE library does not name (secp256k1,
Brainpool) still were, through its ``ValueError``.

A v1 JWS can only be signed by an RSA (2048 bits or more), P-256 or P-384
key, so a certificate for any other key cannot have signed the request: it
is revoked as the account that signed it, like any other — upstream's
answer in v1 words, or success when that account may revoke it.
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from gateway.keys.jose import b64url
from gateway.process.testing import CACertificate
from tests.security.harness import KEY, OTHER, Harness, assert_v1_problem, logged_failures

ISSUER_KEY = ec.generate_private_key(ec.SECP256R1())

#: Certificate keys no v1 JWS can be signed with.
KEY_TYPES = {
    "Ed25519": ed25519.Ed25519PrivateKey.generate,
    "Ed448": ed448.Ed448PrivateKey.generate,
    "DSA-2048": lambda: dsa.generate_private_key(2048),
    "EC-secp256k1": lambda: ec.generate_private_key(ec.SECP256K1()),
    "EC-brainpoolP256r1": lambda: ec.generate_private_key(ec.BrainpoolP256R1()),
    "EC-P521": lambda: ec.generate_private_key(ec.SECP521R1()),
    "RSA-1024": lambda: rsa.generate_private_key(65537, 1024),
}


def certificate_for(private_key, serial: int = 0x1234) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.test")])
    start = datetime.datetime(2026, 1, 1)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(private_key.public_key()).serial_number(serial)
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.example.test")]),
                           critical=False)
            .sign(ISSUER_KEY, hashes.SHA256()))


def revoke(harness: Harness, certificate: x509.Certificate, key=KEY):
    der = certificate.public_bytes(serialization.Encoding.DER)
    with logged_failures() as failures:
        reply = harness.post("/acme/revoke-cert", {
            "resource": "revoke-cert", "certificate": b64url(der), "reason": 1}, key=key)
    assert failures == [], "the gateway logged an unhandled failure"
    return reply


def plant(harness: Harness, certificate: x509.Certificate, key=KEY) -> CACertificate:
    """
    ``certificate`` in the upstream CA, issued to ``key``'s account there.
    """
    ca = harness.gateway.ca
    account = next(a for a in ca.accounts.values() if a.thumbprint == key.thumbprint)
    planted = CACertificate(id="planted", url=ca.url("/cert/planted"), account_id=account.id,
                            certificate=certificate,
                            der=certificate.public_bytes(serialization.Encoding.DER))
    ca.certificates.append(planted)
    return planted


@pytest.mark.parametrize("key_type", sorted(KEY_TYPES))
def test_unknown_certificate_is_a_v1_problem(key_type):
    """
    A certificate the CA never issued: the CA's 404, as a v1 problem.
    """
    harness = Harness.fresh()
    harness.register()
    reply = revoke(harness, certificate_for(KEY_TYPES[key_type]()))
    assert_v1_problem(reply, 404, "malformed", "Certificate not found")


@pytest.mark.parametrize("key_type", sorted(KEY_TYPES))
def test_issuing_account_revokes_it(key_type):
    """
    The account the CA issued the certificate to revokes it: 200, and the
    CA has it revoked with the reason given.
    """
    harness = Harness.fresh()
    harness.register()
    planted = plant(harness, certificate_for(KEY_TYPES[key_type]()))
    reply = revoke(harness, planted.certificate)
    assert reply.status == 200, reply.body
    assert planted.revoked_reason == 1


@pytest.mark.parametrize("key_type", sorted(KEY_TYPES))
def test_another_account_is_refused(key_type):
    """
    Another account's certificate: the CA's refusal, as a v1
    ``unauthorized``; nothing is revoked.
    """
    harness = Harness.fresh()
    harness.register()
    harness.register(OTHER)
    planted = plant(harness, certificate_for(KEY_TYPES[key_type]()), key=OTHER)
    reply = revoke(harness, planted.certificate)
    assert_v1_problem(reply, 403, "unauthorized")
    assert planted.revoked_reason is None
