"""
The legacy-client harness itself works, without a gateway: certbot 1.32 and
acme 1.32 run from the legacy venv, a seeded certbot account is one certbot's
own storage loads, Debian's dehydrated runs with the config the harness
writes, the dns-01 hooks reach the test DNS server, and the http-01 files
are served while a blocking client runs off the reactor.
"""

import json
import os
import stat
import subprocess
import urllib.error
import urllib.request

import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.legacy import (
    ACME1_CLIENT_SCRIPT,
    HOOKS_DIR,
    Certbot,
    Dehydrated,
    clean_env,
    legacy_python,
    lineage_name,
    listen_well_known,
    off_reactor,
)
from tests.support.stack import free_port

pytestmark = pytest.mark.e2e

SERVER = "http://127.0.0.1:4000/directory"


def test_certbot_1_32_runs_from_the_legacy_venv(tmp_path):
    assert Certbot(str(tmp_path), SERVER).version() == "certbot 1.32.0"


def test_legacy_venv_has_the_v1_acme_library():
    snippet = (
        "import json, warnings; warnings.simplefilter('ignore');"
        "import acme, josepy, OpenSSL; from acme import client;"
        "from importlib.metadata import version as v;"
        "print(json.dumps({p: v(p) for p in ('acme', 'certbot', 'josepy', 'pyOpenSSL', 'cryptography')}"
        " | {'v1': hasattr(client, 'Client')}))"
    )
    result = subprocess.run([legacy_python(), "-c", snippet], env=clean_env(), capture_output=True,
                            text=True, timeout=60, check=True)
    versions = json.loads(result.stdout)
    assert versions["acme"] == versions["certbot"] == "1.32.0"
    assert versions["v1"] is True
    assert versions["josepy"].startswith("1.13.")


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_seeded_account_is_loaded_by_certbots_own_storage(tmp_path, kind):
    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    certbot = Certbot(str(tmp_path), SERVER)
    regr_uri = "http://127.0.0.1:4000/acme/reg/1234"

    account_id = certbot.seed_existing_account(key, regr_uri=regr_uri)

    key_path = certbot.account_key_path()
    assert key_path == os.path.join(
        str(tmp_path), "config", "accounts", "127.0.0.1:4000", "directory", account_id, "private_key.json"
    )
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o400
    with open(key_path) as f:
        assert "d" in json.load(f), "private_key.json must hold the private members"

    (account,) = certbot.load_accounts_with_certbot()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    assert account["id"] == account_id
    assert account["public_key_pem"] == public_pem
    assert account["regr_uri"] == regr_uri
    assert account["new_authzr_uri"] == "http://127.0.0.1:4000/acme/new-authz"
    # Another server's accounts live elsewhere: certbot would register there.
    assert certbot.load_accounts_with_certbot("http://127.0.0.1:4001/directory") == []


def test_lineage_name_drops_the_wildcard_label():
    assert lineage_name(["*.example.test", "example.test"]) == "example.test"
    assert lineage_name("a.example.test") == "a.example.test"


def test_dehydrated_runs_with_the_harness_config(tmp_path):
    dehydrated = Dehydrated(str(tmp_path), "https://localhost:14000/directory", ca_bundle="/tmp/ca.pem")
    assert dehydrated.version() == "0.7.0"
    assert "--cron" in dehydrated.help()
    with open(dehydrated.config_path) as f:
        config = f.read().splitlines()
    assert "API=1" in config
    assert "CA=https://localhost:14000/directory" in config
    assert "CURL_OPTS='--cacert /tmp/ca.pem'" in config
    assert dehydrated.account_key_path().startswith(os.path.join(str(tmp_path), "accounts", ""))


def test_acme1_client_script_runs_under_the_legacy_python():
    result = subprocess.run([legacy_python(), ACME1_CLIENT_SCRIPT, "--help"], env=clean_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for option in ("--directory", "--key", "--names", "--challenge", "--webroot", "--dns-api", "--out"):
        assert option in result.stdout


def _txt_records(dns_server) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(dns_server.api_url + "/", timeout=5) as response:
        return json.loads(response.read())


def test_dns_hooks_publish_and_clear_txt_records(dns_server):
    env = clean_env({"ACME_GATEWAY_TEST_DNS_API": dns_server.api_url,
                     "CERTBOT_DOMAIN": "hooks.example.test", "CERTBOT_VALIDATION": "certbot-value"})
    subprocess.run([os.path.join(HOOKS_DIR, "certbot-dns-auth.sh")], env=env, check=True, timeout=30)
    assert "certbot-value" in _txt_records(dns_server)["_acme-challenge.hooks.example.test"]
    subprocess.run([os.path.join(HOOKS_DIR, "certbot-dns-cleanup.sh")], env=env, check=True, timeout=30)
    assert "_acme-challenge.hooks.example.test" not in _txt_records(dns_server)

    hook = os.path.join(HOOKS_DIR, "dehydrated-hook.sh")
    env = clean_env({"ACME_GATEWAY_TEST_DNS_API": dns_server.api_url, "CHALLENGETYPE": "dns-01"})
    subprocess.run([hook, "deploy_challenge", "dh.example.test", "tok", "dh-value"], env=env, check=True, timeout=30)
    assert "dh-value" in _txt_records(dns_server)["_acme-challenge.dh.example.test"]
    subprocess.run([hook, "clean_challenge", "dh.example.test", "tok", "dh-value"], env=env, check=True, timeout=30)
    assert "_acme-challenge.dh.example.test" not in _txt_records(dns_server)
    # http-01 and the other handlers are no-ops, even without the DNS API
    for args in (["deploy_challenge", "a.example.test", "tok", "v"], ["deploy_cert", "x"], ["some_future_hook"]):
        env = clean_env({"CHALLENGETYPE": "http-01"})
        subprocess.run([hook, *args], env=env, check=True, timeout=30)


@pytest_twisted.ensureDeferred
async def test_well_known_files_are_served_to_a_blocking_client(tmp_path):
    from twisted.internet import reactor

    webroot = tmp_path / "webroot"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    (webroot / ".well-known" / "acme-challenge" / "tok-webroot").write_text("key-auth-1")
    (webroot / "tok-flat").write_text("key-auth-2")
    port = free_port()
    listening = listen_well_known(reactor, port, str(webroot))

    def fetch(token):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://127.0.0.1:{port}/.well-known/acme-challenge/{token}"
        try:
            with opener.open(url, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, b""

    try:
        assert await off_reactor(fetch, "tok-webroot") == (200, b"key-auth-1")
        assert await off_reactor(fetch, "tok-flat") == (200, b"key-auth-2")
        assert (await off_reactor(fetch, "missing"))[0] == 404
        assert (await off_reactor(fetch, "..%2Fsecret"))[0] == 404
        assert len(listening.resource.requests) == 4
    finally:
        await listening.stopListening()
