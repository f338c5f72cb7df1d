"""
The tls-sni-01 check (`gateway.validation.tlssni01`) against what a real
tls-sni-01-only installer provisions: certbot-nginx 0.20.0's authenticator
(``.venvs/certbot-nginx-0.20.0``, driven through certbot's plugin API by
``tests/support/certbot_nginx_tlssni01.py``) in Debian's nginx, on loopback.

The machine is one whose certbot configured HTTPS for ``a.example.test``
earlier (``listen 127.0.0.1:PORT ssl``); at renewal the plugin adds its
challenge server block, whose certificate names ``Z``'s SNI name, and
reloads nginx.  The checker, pointed at nginx's port
(``--tls-sni-check-port``) and at the suite's loopback DNS server
(``--tls-sni-check-resolver``), accepts that answer for the right key
authorization only, and no longer once the plugin has cleaned up.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import ssl
import subprocess
import time

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.keys.jose import AccountKey
from gateway.validation.tlssni01 import TLSSNI01Checker, z_name
from tests.support.legacy import clean_env, off_reactor
from tests.support.matrix import matrix_venv, write_pem_key
from tests.support.nginx import NginxSite, nginx_binary
from tests.support.stack import REPO_ROOT, free_port

pytestmark = pytest.mark.e2e

VENV = "certbot-nginx-0.20.0"
DRIVER = os.path.join(REPO_ROOT, "tests", "support", "certbot_nginx_tlssni01.py")
NAME = "a.example.test"


def _served_names(port: int, server_name: str) -> list:
    """The DNS SANs of the certificate nginx presents for ``server_name``
    (the standard library's TLS client: independent of the checker)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    certificate = x509.load_der_x509_certificate(der)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


def _wait_until_served(port: int, server_name: str, present: bool, timeout: float = 30) -> None:
    """nginx applies a reload asynchronously (new workers, old ones drained):
    wait until it presents (or stops presenting) the challenge certificate."""
    deadline = time.monotonic() + timeout
    while (server_name in _served_names(port, server_name)) != present:
        if time.monotonic() > deadline:
            raise AssertionError(f"nginx {'never' if present else 'still'} serves {server_name}")
        time.sleep(0.2)


class PluginRun:
    """certbot-nginx 0.20.0's perform, held open until `cleanup`."""

    def __init__(self, nginx: NginxSite, workdir: str, key_path: str, token: str):
        self.workdir = workdir
        python = os.path.join(matrix_venv(VENV), "bin", "python")
        self.process = subprocess.Popen(
            [python, DRIVER, "--nginx-server-root", nginx.directory, "--nginx-ctl", nginx_binary(),
             "--config-dir", os.path.join(workdir, "config"), "--work-dir", os.path.join(workdir, "work"),
             "--logs-dir", os.path.join(workdir, "logs"), "--account-key", key_path,
             "--domain", NAME, "--token", token],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(os.path.join(workdir, "driver.err"), "wb"),
            text=True, env=clean_env(), cwd=workdir)
        self.performed = self._line()

    def _line(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(30)
            with open(os.path.join(self.workdir, "driver.err"), errors="replace") as f:
                raise AssertionError(f"certbot_nginx_tlssni01.py exited {self.process.returncode}:\n"
                                     f"{f.read()[-6000:]}")
        return json.loads(line)

    def cleanup(self) -> dict:
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        done = self._line()
        self.process.wait(60)
        return done

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def nginx_site(tmp_path):
    if nginx_binary() is None:
        pytest.fail("Debian's nginx is not installed: run ./scripts/setup", pytrace=False)
    site = NginxSite(str(tmp_path / "nginx"), NAME, free_port()).start()
    yield site
    site.stop()
    print(site.log_tail())


@pytest_twisted.ensureDeferred
async def test_certbot_nginx_020_tls_sni_answer_passes_the_check(tmp_path, nginx_site, dns_server):
    if not os.path.exists(os.path.join(matrix_venv(VENV), "bin", "python")):
        pytest.fail(f"{matrix_venv(VENV)} is missing: run ./scripts/setup (tests/legacy-clients/{VENV}.txt)",
                    pytrace=False)
    from twisted.internet import reactor

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path = write_pem_key(str(tmp_path / "account.pem"), key)
    token = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    key_authorization = f"{token}.{AccountKey.from_private_key(key).thumbprint}"
    other_key = AccountKey.from_private_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    dns_host, dns_port = dns_server.address.rsplit(":", 1)
    checker = TLSSNI01Checker(reactor, port=nginx_site.port, resolver=(dns_host, int(dns_port)))
    workdir = str(tmp_path / "certbot")
    os.makedirs(workdir)

    run = await off_reactor(PluginRun, nginx_site, workdir, key_path, token)
    try:
        performed = run.performed
        # The plugin answers tls-sni-01 only, and what it will POST to the
        # v1 challenge is the key authorization the gateway computes.
        assert performed["preferred_challenges"] == ["tls-sni-01"]
        assert performed["response"] == {"resource": "challenge", "type": "tls-sni-01",
                                         "keyAuthorization": key_authorization}
        assert performed["z_domain"] == z_name(key_authorization)
        await off_reactor(_wait_until_served, nginx_site.port, z_name(key_authorization), True)

        result = await checker.check(NAME, key_authorization)
        assert result.valid, result.problem
        assert result.record.to_json() == {"hostname": NAME, "port": str(nginx_site.port),
                                           "addressesResolved": ["127.0.0.1"], "addressUsed": "127.0.0.1"}

        # Another account's key authorization asks for another name, which
        # nginx answers with its default server for that address: the
        # challenge block certbot put first, whose name is not the one asked for.
        wrong = await checker.check(NAME, f"{token}.{other_key.thumbprint}")
        assert wrong.problem.type == "urn:acme:error:unauthorized"
        shown = ", ".join(sorted([performed["z_domain"], "dummy"]))    # Boulder sorted them
        assert wrong.problem.detail.endswith(f'first certificate had names "{shown}"')

        cleaned = await off_reactor(run.cleanup)
        assert cleaned == {"cleaned_up": True}
        await off_reactor(_wait_until_served, nginx_site.port, z_name(key_authorization), False)
        after = await checker.check(NAME, key_authorization)
        assert after.problem.type == "urn:acme:error:unauthorized"
        assert after.problem.detail.endswith(f'first certificate had names "{NAME}"')
    finally:
        await off_reactor(run.stop)
