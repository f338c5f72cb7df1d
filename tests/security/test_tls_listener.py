"""
The v1 face over TLS: ``acme-gateway serve --listen ssl:…`` as its own
process, with a server certificate from a throw-away test CA
(`gateway.process.devstack.make_tls_certificates`), and certbot 1.32 -- a real v1
client -- trusting that CA and nothing else, getting a certificate from
Pebble through ``https://localhost:PORT/directory``.

A client that does not trust the test CA must fail the handshake, and
plain HTTP on the TLS port gets no v1 answer: the listener really is TLS.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import urllib.error
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.process.devstack import make_tls_certificates
from gateway.keys.jose import AccountKey
from tests.support.gateway_process import GatewayProcess
from tests.support.legacy import Certbot, lineage_name
from tests.support.stack import certificate_names, free_port, verify_chain

pytestmark = pytest.mark.e2e


class TLSGatewayProcess(GatewayProcess):
    """
    `GatewayProcess` listening with ``ssl:`` on ``localhost``: its URL is
    ``https://localhost:PORT`` and its readiness check trusts ``tls["ca"]``.

    :param tls: the paths `make_tls_certificates` returned.
    """

    def __init__(self, workdir, pebble, keys_dir, tls: dict, **kwargs):
        self.tls = tls
        super().__init__(workdir, pebble, keys_dir, **kwargs)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def command(self) -> list:
        command = super().command()
        command[command.index("--listen") + 1] = (
            f"ssl:{self.port}:interface=127.0.0.1:"
            f"privateKey={self.tls['key']}:certKey={self.tls['cert']}"
        )
        return command

    def directory(self) -> dict:
        context = ssl.create_default_context(cafile=self.tls["ca"])
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=context))
        with opener.open(self.directory_url, timeout=5) as response:
            return json.loads(response.read())


@pytest.fixture
def reusing_pebble(pebble_factory):
    """
    A Pebble that reuses valid authorizations, as Let's Encrypt does (v1
    clients authorize each name through its own new-authz first).
    """
    return pebble_factory(env={"PEBBLE_AUTHZREUSE": "100"}, http_port=free_port())


def pem_ders(pem: bytes) -> list:
    return [c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(pem)]


def test_certbot_over_tls_listener(tmp_path, reusing_pebble):
    """
    certbot 1.32 with an existing account, trusting only the test CA, gets a
    two-name certificate over http-01 through the gateway's HTTPS listener;
    the certificate chains to Pebble's root.
    """
    pebble = reusing_pebble
    tls = make_tls_certificates(str(tmp_path / "tls"))
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    gateway = TLSGatewayProcess(str(tmp_path / "gateway"), pebble, str(keys_dir), tls)
    key = rsa.generate_private_key(65537, 2048)
    certbot = Certbot(str(tmp_path / "certbot"), gateway.directory_url, ca_bundle=tls["ca"])
    account_id = certbot.seed_existing_account(key, regr_uri=f"{gateway.url}/acme/reg/4711")
    shutil.copy(certbot.account_key_path(), os.path.join(keys_dir, f"certbot-{account_id}.json"))
    try:
        gateway.start()
        assert gateway.announced_directory.startswith("https://")

        names = ["tls-a.example.test", "tls-b.example.test"]
        certbot.certonly_standalone(names, pebble.http_port)
        lineage = lineage_name(names)
        (leaf_der,) = pem_ders(certbot.live_cert(lineage))
        issuers = pem_ders(certbot.chain_pem(lineage))
        for name in names:
            leaf = verify_chain(leaf_der, issuers, pebble.root_pem(), name)
        assert certificate_names(leaf) == set(names)
        assert certbot.account_ids() == [account_id]
        assert AccountKey.from_private_key(key).thumbprint in gateway.keys_list()

        # Trusting the system roots only, the handshake fails.
        with pytest.raises(urllib.error.URLError) as failure:
            urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                gateway.directory_url, timeout=5)
        assert isinstance(failure.value.reason, ssl.SSLCertVerificationError)
        # Plain HTTP on the TLS port gets no v1 answer.
        connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=5)
        try:
            connection.request("GET", "/directory")
            body = connection.getresponse().read()
        except (http.client.HTTPException, OSError):
            body = b""
        finally:
            connection.close()
        assert b"new-reg" not in body
    finally:
        gateway.stop()
        print(f"--- acme-gateway output ({gateway.log_path}) ---\n{gateway.log()}")
