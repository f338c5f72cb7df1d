"""
A tls-sni-01-only installer through the gateway process: real certbot
0.20.0 with its nginx plugin (``.venvs/certbot-nginx-0.20.0``; 0.20's
nginx authenticator answers tls-sni-01 and nothing else) configuring a real
Debian nginx of the test's own, against Debian's Pebble, all on loopback.

The machine is one whose certbot already had its account at the old v1 CA
(seeded, its key in the gateway's key store) and whose nginx serves the
name over HTTPS (``listen 127.0.0.1:PORT ssl``): certbot-nginx copies that
address into its challenge server block.  The gateway offers tls-sni-01
because it has a means (its HTTP-01 responder on Pebble's validation
port), checks certbot's answer there (``--tls-sni-check-port`` = nginx's
port, ``--tls-sni-check-resolver`` = the suite's loopback DNS server),
proves the name to Pebble itself, and certbot gets its certificate.
Without a means, tls-sni-01 is not offered and certbot has nothing to
answer.
"""

from __future__ import annotations

import os
import shutil

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.legacy import off_reactor
from tests.support.matrix import MatrixCertbot, matrix_venv, pem_ders
from tests.support.nginx import NginxSite, nginx_binary
from tests.support.stack import certificate_names, free_port, verify_chain

pytestmark = pytest.mark.e2e

VENV = "certbot-nginx-0.20.0"
NAME = "a.example.test"


@pytest.fixture
def nginx_site(tmp_path):
    if nginx_binary() is None:
        pytest.fail("Debian's nginx is not installed: run ./scripts/setup", pytrace=False)
    if not os.path.exists(os.path.join(matrix_venv(VENV), "bin", "certbot")):
        pytest.fail(f"{matrix_venv(VENV)} is missing: run ./scripts/setup "
                    f"(tests/legacy-clients/{VENV}.txt)", pytrace=False)
    site = NginxSite(str(tmp_path / "nginx"), NAME, free_port()).start()
    yield site
    site.stop()
    print(site.log_tail())


def _certbot(tmp_path, gateway, keys_dir) -> MatrixCertbot:
    """certbot 0.20 with the account it had at the old CA, its key in the gateway's store."""
    certbot = MatrixCertbot(VENV, str(tmp_path / "certbot"), gateway.directory_url)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account_id = certbot.seed_existing_account(key, regr_uri=f"{gateway.url}/acme/reg/4711")
    shutil.copy(certbot.account_key_path(), os.path.join(keys_dir, f"certbot-{account_id}.json"))
    return certbot


def _certonly_nginx(certbot: MatrixCertbot, site: NginxSite, check: bool = True):
    return certbot.certonly([NAME], "--nginx", "--nginx-server-root", site.directory,
                            "--nginx-ctl", nginx_binary(), check=check, timeout=240)


def test_certbot_020_nginx_gets_a_certificate_by_tls_sni_01(tmp_path, pebble, dns_server, gateways,
                                                             nginx_site):
    keys_dir = str(tmp_path / "keys")
    os.makedirs(keys_dir)
    gateway = gateways(pebble, keys_dir, start=False, extra_args=[
        "--http01-listen", f"tcp:{pebble.http_port}:interface=127.0.0.1",
        "--tls-sni-check-port", str(nginx_site.port),
        "--tls-sni-check-resolver", dns_server.address,
    ])
    certbot = _certbot(tmp_path, gateway, keys_dir)
    gateway.start()

    _certonly_nginx(certbot, nginx_site)

    leaf_der = pem_ders(certbot.live_cert(NAME))[0]
    issuers = pem_ders(certbot.chain_pem(NAME))
    leaf = verify_chain(leaf_der, issuers, pebble.root_pem(), NAME)
    assert certificate_names(leaf) == {NAME}
    log = gateway.log()
    # certbot answered tls-sni-01 (its only challenge), the gateway checked
    # the answer in nginx and proved the name with its own responder
    assert "/acme/challenge/" in log
    assert f"tls-sni-01 answer for {NAME} checked and the name proved upstream" in log
    assert f"revalidating {NAME} with http-01" in log
    with open(certbot.log_path) as f:
        certbot_log = f.read()
    assert "tls-sni-01" in certbot_log
    # and cleaned up after itself: nginx no longer includes the challenge block
    with open(nginx_site.conf_path) as f:
        assert "le_tls_sni_01" not in f.read()


def test_without_a_means_tls_sni_01_is_not_offered(tmp_path, pebble, gateways, nginx_site):
    keys_dir = str(tmp_path / "keys")
    os.makedirs(keys_dir)
    gateway = gateways(pebble, keys_dir, start=False)
    certbot = _certbot(tmp_path, gateway, keys_dir)
    gateway.start()

    result = _certonly_nginx(certbot, nginx_site, check=False)

    assert result.returncode != 0
    output = result.stdout + result.stderr
    with open(certbot.log_path) as f:
        output += f.read()
    assert ("Client with the currently selected authenticator does not support any combination "
            "of challenges that will satisfy the CA") in output
    assert "tls-sni-01" not in gateway.log()
