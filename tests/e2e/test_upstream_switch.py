"""
The path every operator takes: staging first, then production — or, in a
demo, a Pebble restarted on a new port.  The gateway restarts with another
``--upstream`` on the same ``--state``; nothing of the old CA (account
URLs, orders, authorizations) is used with the new one, the client's
accounts are found or created again there by key, and the certificates
from the old CA stay readable and revocable there while it answers.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.test_legacy_clients import (
    REUSING,
    assert_certbot_issued,
    seed_certbot_account,
    state_accounts,
    thumbprint_of,
)
from tests.support.legacy import Certbot, lineage_name
from tests.support.stack import free_port

pytestmark = pytest.mark.e2e


def stored_certificate_id(state: str, serial: str) -> str:
    connection = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        (certificate_id,) = connection.execute(
            "SELECT id FROM certificates WHERE serial = ?", (serial,)).fetchone()
        return certificate_id
    finally:
        connection.close()


def fetch(url: str) -> tuple:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return response.status, response.read()


def test_certbot_renews_after_the_gateway_moves_to_another_ca(tmp_path, pebble_factory, gateways):
    """
    certbot 1.32 (an account it already had) gets a certificate through the
    gateway from Pebble A.  The gateway restarts with ``--upstream`` naming
    a fresh Pebble B on the same state file; ``certbot renew`` then works,
    from B, under an account the gateway found or created at B by key.  The
    first certificate is still served at its v1 URL, and revoking it goes to
    A, which still answers.
    """
    http_port = free_port()
    pebble_a = pebble_factory(env=REUSING, http_port=http_port)
    keys_dir = str(tmp_path / "keys")
    key = rsa.generate_private_key(65537, 2048)
    gateway = gateways(pebble_a, keys_dir, start=False)
    certbot = Certbot(str(tmp_path / "certbot"), gateway.directory_url)
    seed_certbot_account(certbot, gateway, key, keys_dir)
    gateway.start()
    names = ["switch-a.example.test", "switch-b.example.test"]
    certbot.certonly_standalone(names, http_port)
    first = assert_certbot_issued(certbot, pebble_a, names)
    ((_, url_at_a, _),) = state_accounts(gateway.state)
    assert url_at_a.startswith(f"https://localhost:{pebble_a.port}/")

    gateway.stop()
    pebble_b = pebble_factory(env=REUSING, http_port=http_port)
    gateway.pebble = pebble_b
    gateway.start()
    certbot.renew(force=True)
    renewed = assert_certbot_issued(certbot, pebble_b, names)
    assert renewed.serial_number != first.serial_number
    ((thumbprint, url_at_b, status),) = state_accounts(gateway.state)
    assert thumbprint == thumbprint_of(key) and status == "valid"
    assert url_at_b.startswith(f"https://localhost:{pebble_b.port}/")
    assert f"localhost:{pebble_a.port}" not in gateway.log().split("=== ")[-1], \
        "the gateway used something of the old CA with the new one"

    first_serial = format(first.serial_number, "x")
    status_code, body = fetch(f"{gateway.url}/acme/cert/{stored_certificate_id(gateway.state, first_serial)}")
    assert status_code == 200
    assert body == first.public_bytes(serialization.Encoding.DER)

    lineage = lineage_name(names)
    first_path = os.path.join(certbot.config_dir, "archive", lineage, "cert1.pem")
    assert x509.load_pem_x509_certificate(open(first_path, "rb").read()).serial_number == first.serial_number
    certbot.revoke(first_path, reason="superseded")
    revoked = pebble_a.certificate_status(first_serial)
    assert (revoked["Status"], revoked["Reason"]) == ("Revoked", 4), revoked
