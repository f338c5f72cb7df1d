"""
Make the CSR test vectors of ``tests/vectors/csr/`` with the real legacy
clients' own CSR functions (see README.md there for the venvs).  Not run by
the suite: the files it wrote are committed.

    python make_vectors.py OUT_DIR certbot-0.31   # certbot 0.31 + acme 0.31
    python make_vectors.py OUT_DIR certbot-1.28   # certbot 1.28 + acme 1.28
    python make_vectors.py OUT_DIR certbot-1.32   # certbot 1.32 + acme 1.32 (.venvs/certbot1)

Each run generates fresh keys with the client's own key functions and keeps
only the CSRs (PEM, exactly as the client wrote them).
"""

import os
import sys
import tempfile

NAMES = ["legacy.example.test", "www.legacy.example.test"]


def write(out_dir, name, pem):
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(pem)
    print("wrote", name)


def certbot_031(out_dir):
    # certbot 0.31's own path: make_key, then init_save_csr, which reads
    # must_staple from the zope-registered configuration (a renewal config's
    # ``must_staple = True``).
    import zope.component
    import zope.interface
    from certbot import crypto_util, interfaces

    @zope.interface.implementer(interfaces.IConfig)
    class Config:
        strict_permissions = False
        must_staple = False

    config = Config()
    zope.component.provideUtility(config, interfaces.IConfig)

    class Key:  # certbot.util.Key is a namedtuple(file, pem)
        def __init__(self, pem):
            self.file, self.pem = None, pem

    with tempfile.TemporaryDirectory() as work:
        key = Key(crypto_util.make_key(2048))
        csr = crypto_util.init_save_csr(key, NAMES, work)
        write(out_dir, "certbot-0.31-rsa2048.pem", csr.data)
        config.must_staple = True
        csr = crypto_util.init_save_csr(key, NAMES, work)
        write(out_dir, "certbot-0.31-rsa2048-must-staple.pem", csr.data)


def certbot_128(out_dir):
    from acme import crypto_util as acme_crypto_util
    from certbot import crypto_util, util

    with tempfile.TemporaryDirectory() as work:
        rsa = util.Key(None, crypto_util.make_key(bits=2048))
        write(out_dir, "certbot-1.28-rsa2048.pem",
              crypto_util.generate_csr(rsa, NAMES, work, strict_permissions=False).data)
        ec = util.Key(None, crypto_util.make_key(key_type="ecdsa", elliptic_curve="secp256r1"))
        write(out_dir, "certbot-1.28-ecdsa-p256.pem",
              crypto_util.generate_csr(ec, NAMES, work, strict_permissions=False).data)
        write(out_dir, "certbot-1.28-ecdsa-p256-must-staple.pem",
              crypto_util.generate_csr(ec, NAMES, work, must_staple=True,
                                       strict_permissions=False).data)
        # acme 1.28's make_csr called directly, as clients built on the
        # library (not certbot) did, for one name.
        write(out_dir, "acme-1.28-rsa2048-one-name.pem",
              acme_crypto_util.make_csr(rsa.pem, [NAMES[0]]))


def certbot_132(out_dir):
    from certbot import crypto_util, util
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    with tempfile.TemporaryDirectory() as work:
        rsa = util.Key(None, crypto_util.make_key(bits=2048))
        pem = crypto_util.generate_csr(rsa, NAMES, work, strict_permissions=False).data
        write(out_dir, "certbot-1.32-rsa2048.pem", pem)
        write(out_dir, "certbot-1.32-rsa2048-must-staple.pem",
              crypto_util.generate_csr(rsa, NAMES, work, must_staple=True,
                                       strict_permissions=False).data)

    # The zero-length version field of a pre-1.0.2 OpenSSL whose client did
    # not set the version: certbot 1.32's CSR with its version INTEGER
    # emptied, signed again with the same key over those very bytes.
    from cryptography import x509

    csr = x509.load_pem_x509_csr(pem)
    info = csr.tbs_certrequest_bytes
    assert info[4:7] == b"\x02\x01\x00", info[:8].hex()
    body = info[4:7].replace(b"\x02\x01\x00", b"\x02\x00") + info[7:]
    info = b"\x30\x82" + len(body).to_bytes(2, "big") + body
    key = serialization.load_pem_private_key(rsa.pem, None)
    signature = key.sign(info, padding.PKCS1v15(), hashes.SHA256())
    algorithm = bytes.fromhex("300d06092a864886f70d01010b0500")
    bit_string = b"\x03\x82" + (len(signature) + 1).to_bytes(2, "big") + b"\x00" + signature
    body = info + algorithm + bit_string
    der = b"\x30\x82" + len(body).to_bytes(2, "big") + body
    write(out_dir, "openssl-pre-1.0.2-zero-length-version.der", der)


if __name__ == "__main__":
    out, client = sys.argv[1], sys.argv[2]
    {"certbot-0.31": certbot_031, "certbot-1.28": certbot_128, "certbot-1.32": certbot_132}[client](out)
