"""
Migrating real legacy client installations with ``acme-gateway adopt``.

Each installation is made the way a migrating operator has it: a
certificate obtained long ago, and a stored configuration (certbot's
account directory and renewal file, dehydrated's ``CA=`` and account
directory) naming a v1 URL that no longer answers
(``http://127.0.0.1:1/directory``: nothing listens there).  To get a real
lineage, the certificate is first issued through a throw-away gateway, and
the installation is then rewritten to the dead URL, exactly as if the v1 CA
had issued it.

Then the operator adopts it (``acme-gateway adopt …`` as a process, with
``--dry-run`` first), starts the gateway on the key store adoption filled,
and runs the client the way cron does, without any server flag: it must
renew through the gateway with its original account key, and revoke.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.conftest import multi_name_means
from tests.e2e.test_legacy_clients import (
    assert_certbot_issued,
    assert_dehydrated_issued,
    pem_ders,
    seed_certbot_account,
    state_accounts,
    thumbprint_of,
    write_pem,
)
from tests.support.gateway_process import gateway_command
from tests.support.legacy import Certbot, Dehydrated, lineage_name, listen_well_known, off_reactor
from tests.support.trees import differences, snapshot

pytestmark = pytest.mark.e2e

#: Where the installations' v1 CA used to be.
DEAD = "http://127.0.0.1:1/directory"


def operator(*args: str) -> subprocess.CompletedProcess:
    """
    ``acme-gateway <args>`` as an operator runs it, with no
    ``ACME_GATEWAY_*`` settings from the test's environment.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACME_GATEWAY_")}
    return subprocess.run([*gateway_command(), *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


def adopt(*args: str, expect: int = 0) -> str:
    result = operator("adopt", *args)
    assert result.returncode == expect, f"adopt exited {result.returncode}:\n{result.stdout}{result.stderr}"
    return result.stdout


def state_contact(state_path: str) -> list:
    """The contact of the (only) account in the gateway's state."""
    connection = sqlite3.connect(f"file:{state_path}?mode=ro", uri=True)
    try:
        ((contact,),) = connection.execute("SELECT contact FROM accounts").fetchall()
    finally:
        connection.close()
    return json.loads(contact)


def serial_of(pem: bytes) -> str:
    (der,) = pem_ders(pem)
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


def check_adopt_cycle(location: list, root: str, gateway_url: str, keys: str) -> None:
    """
    The operator's safety net, on the real installation: ``--dry-run``
    changes no file; adopting twice changes nothing more; ``--undo``
    restores the installation byte for byte; then adopt for good.
    """
    args = [*location, "--gateway", gateway_url, "--keys", keys, "--host", "web1"]
    before = snapshot(root)
    out = adopt(*args, "--dry-run")
    assert "dry run" in out and "would edit" in out, out
    assert differences(before, snapshot(root)) == [] and os.listdir(keys) == []

    adopt(*args)
    adopted = snapshot(root)
    assert "nothing to change" in adopt(*args)
    assert differences(adopted, snapshot(root)) == []

    adopt(*location, "--undo")
    assert differences(before, snapshot(root)) == []
    adopt(*args)
    assert differences(adopted, snapshot(root)) == []


# --------------------------------------------------------------------------
# certbot 1.32
# --------------------------------------------------------------------------

def age_certbot(certbot: Certbot, old_url: str) -> None:
    """
    Make the installation what it was before the v1 shutdown: the account
    filed under the dead v1 URL, its registration there, and the renewal
    file's ``server`` naming it.
    """
    os.makedirs(os.path.dirname(certbot.accounts_dir(DEAD)), exist_ok=True)
    os.rename(certbot.accounts_dir(old_url), certbot.accounts_dir(DEAD))
    shutil.rmtree(os.path.dirname(certbot.accounts_dir(old_url)))
    regr_path = os.path.join(os.path.dirname(certbot.account_key_path(DEAD)), "regr.json")
    with open(regr_path) as f:
        regr = json.load(f)
    regr["uri"] = "http://127.0.0.1:1/acme/reg/4711"
    regr["new_authzr_uri"] = "http://127.0.0.1:1/acme/new-authz"
    with open(regr_path, "w") as f:
        json.dump(regr, f)
    renewal_dir = os.path.join(certbot.config_dir, "renewal")
    for name in os.listdir(renewal_dir):
        path = os.path.join(renewal_dir, name)
        with open(path) as f:
            text = f.read()
        assert f"server = {old_url}\n" in text
        with open(path, "w") as f:
            f.write(text.replace(f"server = {old_url}\n", f"server = {DEAD}\n"))


def test_adopted_certbot_renews_and_revokes(tmp_path, upstream, dns_server, gateways):
    """
    certbot 1.32 whose account and renewal file name a dead v1 URL: after
    ``adopt certbot``, ``certbot renew --force-renewal`` (no ``--server``)
    renews through the gateway with the very account key it had (the
    gateway's upstream account is the one that key always had at the CA),
    without registering anything.  Then ``certbot revoke`` works signed by
    the account key (the pre-migration certificate, which the gateway never
    saw) and signed by the certificate key (``--key-path``, the renewed
    one); Pebble reports both revoked, with the reasons certbot gave, and a
    second revocation is Boulder's "Certificate already revoked".
    ``certbot update_account`` and ``unregister`` reach the account too.
    (Two names: when the CA may not reuse, both gateways validate them
    again through their dns-01 hook.)
    """
    pebble = upstream
    key = rsa.generate_private_key(65537, 2048)
    names = ["adopted-certbot.example.test", "www.adopted-certbot.example.test"]
    lineage = lineage_name(names)
    means = multi_name_means(pebble, dns_server, tmp_path)

    setup_keys = str(tmp_path / "setup-keys")
    old = gateways(pebble, setup_keys, start=False, extra_args=means)
    certbot = Certbot(str(tmp_path / "certbot"), old.directory_url)
    account_id = seed_certbot_account(certbot, old, key, setup_keys)
    old.start()
    certbot.certonly_standalone(names, pebble.http_port)
    first = assert_certbot_issued(certbot, pebble, names)
    ((_, original_upstream_url, _),) = state_accounts(old.state)
    old.stop()
    age_certbot(certbot, old.directory_url)
    dead = certbot.renew(force=True, with_server=False, check=False)
    assert dead.returncode != 0, "certbot renewed against a v1 URL nobody serves"

    keys = str(tmp_path / "keys")
    gateway = gateways(pebble, keys, start=False, extra_args=means)
    check_adopt_cycle(["certbot", "--config-dir", certbot.config_dir], certbot.config_dir,
                      gateway.directory_url, keys)
    imported = os.path.join(keys, f"certbot-web1-{account_id}.json")
    assert os.stat(imported).st_mode & 0o777 == 0o600

    gateway.start()
    assert thumbprint_of(key) in gateway.keys_list()
    certbot.renew(force=True, with_server=False)
    renewed = assert_certbot_issued(certbot, pebble, names)
    assert renewed.serial_number != first.serial_number
    assert certbot.account_ids(gateway.directory_url) == [account_id]
    assert certbot.account_ids(DEAD) == [account_id]
    assert [a["id"] for a in certbot.load_accounts_with_certbot(gateway.directory_url)] == [account_id]
    assert state_accounts(gateway.state) == [(thumbprint_of(key), original_upstream_url, "valid")]

    # Signed by the account key, for the certificate from before the
    # migration: the gateway revokes it upstream as that account.
    certbot.server_url = gateway.directory_url
    first_path = os.path.join(certbot.config_dir, "archive", lineage, "cert1.pem")
    certbot.revoke(first_path, reason="keycompromise")
    status = pebble.certificate_status(format(first.serial_number, "x"))
    assert (status["Status"], status["Reason"]) == ("Revoked", 1), status
    again = certbot.revoke(first_path, check=False)
    assert again.returncode != 0
    with open(certbot.log_path) as f:
        assert ('{"type": "urn:acme:error:malformed", "detail": "Certificate already revoked", '
                '"status": 409}') in f.read()

    # Signed by the certificate key, found by lineage (its server: the gateway).
    certbot.run("revoke", "--cert-name", lineage, "--key-path", certbot.live_path(lineage, "privkey.pem"),
                "--reason", "superseded", "--no-delete-after-revoke", with_server=False)
    status = pebble.certificate_status(format(renewed.serial_number, "x"))
    assert (status["Status"], status["Reason"]) == ("Revoked", 4), status

    # The account's lifecycle through the registration URL adoption gave
    # certbot (the old one names the dead CA): contact update, deactivation.
    certbot.run("update_account", "-m", "new-admin@example.test")
    assert state_contact(gateway.state) == ["mailto:new-admin@example.test"]
    certbot.run("unregister")
    assert state_accounts(gateway.state) == [(thumbprint_of(key), original_upstream_url, "deactivated")]


# --------------------------------------------------------------------------
# dehydrated 0.7.0
# --------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_adopted_dehydrated_renews_and_revokes(tmp_path, upstream, gateways):
    """
    Debian's dehydrated 0.7.0 whose config says ``CA=`` a dead v1 URL and
    whose account lives under that URL's directory: after ``adopt
    dehydrated``, ``--cron --force`` renews through the gateway with the
    same account (the gateway's upstream account is the key's original
    one), and ``--revoke`` (signed by the account key) revokes it.
    """
    from twisted.internet import reactor

    pebble = upstream
    key = rsa.generate_private_key(65537, 2048)
    names = ["adopted-dehydrated.example.test"]
    workdir = str(tmp_path / "dehydrated")

    setup_keys = str(tmp_path / "setup-keys")
    old = gateways(pebble, setup_keys, start=False)
    dehydrated = Dehydrated(workdir, old.directory_url)
    write_pem(dehydrated.account_key_path(), key)
    with open(os.path.join(dehydrated.account_dir(), "registration_info.json"), "w") as f:
        f.write('{"id": 4242, "key": {}, "contact": [], "agreement": "", "status": "valid"}\n')
    shutil.copy(dehydrated.account_key_path(), os.path.join(setup_keys, "account_key.pem"))
    await off_reactor(old.start)

    listening = listen_well_known(reactor, pebble.http_port, dehydrated.wellknown)
    try:
        await off_reactor(dehydrated.issue, names[0])
        first_serial = serial_of(dehydrated.cert_pem(names[0]))
        ((_, original_upstream_url, _),) = state_accounts(old.state)
        await off_reactor(old.stop)

        # Before the shutdown: the config named the v1 CA, and the account
        # sat in the directory named after it.
        aged = Dehydrated(workdir, DEAD)
        os.rename(dehydrated.account_dir(), aged.account_dir())

        keys = str(tmp_path / "keys")
        gateway = gateways(pebble, keys, start=False)
        await off_reactor(check_adopt_cycle, ["dehydrated", "--basedir", workdir, "--config",
                                              aged.config_path], workdir, gateway.directory_url, keys)
        with open(aged.config_path) as f:
            assert f"CA={gateway.directory_url}\n" in f.read()
        (imported,) = os.listdir(keys)
        assert imported == f"dehydrated-web1-127.0.0.1_1-{thumbprint_of(key)[:12].rstrip('_-')}.pem"

        await off_reactor(gateway.start)
        await off_reactor(aged.issue, names[0], force=True)
        renewed_serial = serial_of(aged.cert_pem(names[0]))
        assert renewed_serial != first_serial
        assert_dehydrated_issued(aged, pebble, names)
        assert state_accounts(gateway.state) == [(thumbprint_of(key), original_upstream_url, "valid")]

        await off_reactor(aged.revoke, names[0])
    finally:
        await listening.stopListening()
    status = pebble.certificate_status(renewed_serial)
    assert status["Status"] == "Revoked", status
