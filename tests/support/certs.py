"""
Small certificate factories for unit tests (no CA involved).
"""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(text):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def make_chain(names=("leaf.example.test",)):
    """
    A leaf for ``names`` signed by a throw-away intermediate.

    :return: ``(leaf, intermediate, leaf_key)`` as ``cryptography`` objects.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    issuer = (
        x509.CertificateBuilder().subject_name(_name("test intermediate")).issuer_name(_name("test root"))
        .public_key(issuer_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(issuer.subject)
        .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return leaf, issuer, leaf_key


def make_chain_pem(names=("leaf.example.test",)):
    """
    A PEM chain body and its DER certificates, leaf first.
    """
    leaf, issuer, _ = make_chain(names)
    certificates = (leaf, issuer)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
    return pem, tuple(c.public_bytes(serialization.Encoding.DER) for c in certificates)
