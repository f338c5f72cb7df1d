"""
One-shot preparation for deploy/compose.yaml, run in the acme-gateway image
before anything else starts.  It leaves behind what a real migration starts
from:

- a TLS certificate for Pebble (named ``pebble``, the service's host name)
  and the CA that verifies it, which the gateway trusts with
  ``ACME_GATEWAY_UPSTREAM_CA_BUNDLE``, and Pebble's configuration;
- a certbot 1.x account that "already exists" for the gateway's v1
  directory, as on a machine that registered at the old v1 CA;
- a copy of that account key for the gateway's read-only key store, owned
  by the gateway's user;
- for deploy/compose-replicas.yaml (when ``STATE_PASSWORD_FILE`` is set), a
  random password for the gateway's PostgreSQL role, which PostgreSQL sets
  at its first start and the gateway replicas log in with.

Everything is kept when it already exists, so ``docker compose up`` again
keeps the same account.  Paths come from the environment so that the test
suite can run it outside a container.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import shutil

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.clients import certbot

SETUP_DIR = os.environ.get("SETUP_DIR", "/setup")
CERTBOT_CONFIG_DIR = os.environ.get("CERTBOT_CONFIG_DIR", "/etc/letsencrypt")
GATEWAY_KEYS_DIR = os.environ.get("GATEWAY_KEYS_DIR", "/keys")
GATEWAY_DIRECTORY = os.environ.get("GATEWAY_DIRECTORY", "http://gateway:4000/directory")
PEBBLE_HOST = os.environ.get("PEBBLE_HOST", "pebble")
KEY_OWNER = int(os.environ.get("KEY_OWNER", "10001"))
STATE_PASSWORD_FILE = os.environ.get("STATE_PASSWORD_FILE")


def _write(path: str, data: bytes, mode: int) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
        f.write(data)


def pebble_tls(directory: str) -> dict:
    """
    A CA and a server certificate for ``PEBBLE_HOST`` (Go checks SANs only).
    """
    os.makedirs(directory, exist_ok=True)
    paths = {name: os.path.join(directory, f"{name}.pem") for name in ("ca", "cert", "key")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme-gateway compose example CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PEBBLE_HOST)]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(PEBBLE_HOST), x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(paths["ca"], ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(paths["cert"], leaf.public_bytes(serialization.Encoding.PEM), 0o644)
    # A throw-away key of a throw-away test CA, readable by whichever user
    # the Pebble image runs as.
    _write(paths["key"], key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), 0o644)
    return paths


def pebble_config(tls: dict) -> dict:
    return {
        "pebble": {
            "listenAddress": "0.0.0.0:14000",
            "managementListenAddress": "0.0.0.0:15000",
            "certificate": tls["cert"],
            "privateKey": tls["key"],
            "httpPort": 80,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }


def legacy_account() -> str:
    """
    certbot's existing account for the gateway's directory, and the copy of
    its key in the gateway's key store; the path of that copy.
    """
    os.makedirs(GATEWAY_KEYS_DIR, exist_ok=True)
    copy = os.path.join(GATEWAY_KEYS_DIR, "legacy-certbot-account.json")
    if os.path.exists(copy):
        return copy
    key = rsa.generate_private_key(65537, 2048)
    base = GATEWAY_DIRECTORY.rsplit("/directory", 1)[0]
    account_id = certbot.write_account(CERTBOT_CONFIG_DIR, GATEWAY_DIRECTORY, key,
                                       regr_uri=f"{base}/acme/reg/1",
                                       creation_host="legacy-host.example.test")
    original = os.path.join(certbot.accounts_dir(CERTBOT_CONFIG_DIR, GATEWAY_DIRECTORY),
                            account_id, "private_key.json")
    shutil.copyfile(original, copy)
    os.chmod(copy, 0o400)
    if os.geteuid() == 0:
        os.chown(copy, KEY_OWNER, KEY_OWNER)
    return copy


def state_password(path: str) -> None:
    """
    A random password at ``path``, unless one is there (PostgreSQL sets it
    only when it makes its data directory: a new one would lock the
    gateway out).  Readable by the example's other containers, which run as
    their own users (PostgreSQL's image as 999, the gateway as 10001); the
    volume is mounted into this example's services only.
    """
    if not os.path.exists(path):
        _write(path, secrets.token_urlsafe(24).encode() + b"\n", 0o444)
        os.chmod(path, 0o444)


def main() -> None:
    tls = pebble_tls(os.path.join(SETUP_DIR, "pebble-tls"))
    with open(os.path.join(SETUP_DIR, "pebble.json"), "w") as f:
        json.dump(pebble_config(tls), f, indent=2)
    if STATE_PASSWORD_FILE:
        state_password(STATE_PASSWORD_FILE)
    copy = legacy_account()
    print(f"setup: Pebble TLS in {os.path.dirname(tls['ca'])}, certbot account in "
          f"{CERTBOT_CONFIG_DIR}, gateway key {copy}")


if __name__ == "__main__":
    main()
