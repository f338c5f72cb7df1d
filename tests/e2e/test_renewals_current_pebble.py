"""
What a 2026 CA asks of clients, against today's Pebble (ARI, profiles,
``replaces``, External Account Binding, long chains), with real certbot
1.32 in v1 mode through the gateway process:

- a 3-name certificate issued with a means, then renewed through a gateway
  restarted with **no** means at one upstream ``newOrder`` that Pebble logs
  as an ARI replacement, with authorization reuse 0 % (and on Debian's
  Pebble 2.4, which has no ARI: one order without ``replaces``);
- the same for a certificate from before the migration, which
  ``acme-gateway adopt … --state`` put in the inventory;
- a chain of four intermediates (``PEBBLE_CHAIN_LENGTH=4``), which certbot
  builds by following ``Link: rel="up"`` one issuer at a time;
- a profile chosen by a per-client rule of the config file, which reaches
  the CA (the order Pebble returns names it, and the leaf has its lifetime);
- EAB required by Pebble: certbot issues and revokes with ``--eab-kid`` /
  ``--eab-hmac-key``, and without them gets a 4xx naming ``--eab-kid``.

Orders are counted at a TLS pass-through in front of Pebble
(`tests.support.upstream_proxy`), so the counts are what the CA saw.
"""

from __future__ import annotations

import os
import sqlite3

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.keys.jose import b64url
from tests.e2e.conftest import DNS01_HOOK
from tests.e2e.test_legacy_clients import assert_certbot_issued, seed_certbot_account
from tests.e2e.test_resilience import proxied
from tests.support.legacy import Certbot, lineage_name, off_reactor
from tests.support.matrix import pem_ders
from tests.support.stack import free_port

pytestmark = pytest.mark.e2e

NO_REUSE = {"PEBBLE_AUTHZREUSE": "0"}


def dns01_means(dns_server, workdir) -> list:
    """The gateway's dns-01 hook into the test DNS server (its means)."""
    return ["--dns01-hook",
            f"{DNS01_HOOK} {dns_server.api_url} {os.path.join(str(workdir), 'dns01-hook.log')}"]


def state_rows(state_path: str, sql: str) -> list:
    connection = sqlite3.connect(f"file:{state_path}?mode=ro", uri=True)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


@pytest.mark.parametrize("build", ["current", "debian-2.4"])
@pytest_twisted.ensureDeferred
async def test_a_three_name_renewal_without_means_is_one_ari_replacement(
        tmp_path, pebble_factory, dns_server, gateways, build):
    """
    Debian's Pebble 2.4 has no ARI: the renewal is still one planned
    order, without ``replaces``.
    """
    current = build == "current"
    pebble = await off_reactor(pebble_factory, env=NO_REUSE, http_port=free_port(),
                               current=current)
    proxy, listening, upstream = await proxied(pebble)
    try:
        keys_dir = str(tmp_path / "keys")
        gateway = await off_reactor(gateways, upstream, keys_dir, start=False,
                                    extra_args=dns01_means(dns_server, tmp_path))
        certbot = Certbot(str(tmp_path / "certbot"), gateway.directory_url)
        seed_certbot_account(certbot, gateway, rsa.generate_private_key(65537, 2048), keys_dir)
        await off_reactor(gateway.start)

        names = ["ari-a.example.test", "ari-b.example.test", "ari-c.example.test"]
        await off_reactor(certbot.certonly_standalone, names, pebble.http_port)
        first = assert_certbot_issued(certbot, pebble, names)
        assert "is a replacement of" not in pebble.log()

        # No means any more: only the client's own validations can make the
        # renewal work, which they do when all go to the order it finalizes.
        gateway.extra_args = ()
        await off_reactor(gateway.restart)
        orders = proxy.counts["order-plz"]
        await off_reactor(certbot.renew, force=True)
        renewed = assert_certbot_issued(certbot, pebble, names)
        assert renewed.serial_number != first.serial_number
        assert proxy.counts["order-plz"] - orders == 1, "not one upstream newOrder"
        replacing = state_rows(gateway.state,
                               "SELECT replaces FROM orders WHERE replaces IS NOT NULL")
        if not current:
            assert replacing == []
            return
        assert pebble.log().count("is a replacement of") == 1
        ((replaces,),) = replacing
        assert replaces.endswith("." + b64url(first.serial_number.to_bytes(
            first.serial_number.bit_length() // 8 + 1, "big")))
    finally:
        await listening.stopListening()


def test_a_chain_of_four_intermediates_reaches_certbot_through_up_links(
        tmp_path, pebble_factory, gateways):
    pebble = pebble_factory(env={"PEBBLE_CHAIN_LENGTH": "4"}, http_port=free_port(), current=True)
    keys_dir = str(tmp_path / "keys")
    gateway = gateways(pebble, keys_dir, start=False)
    certbot = Certbot(str(tmp_path / "certbot"), gateway.directory_url)
    seed_certbot_account(certbot, gateway, rsa.generate_private_key(65537, 2048), keys_dir)
    gateway.start()

    names = ["long-chain.example.test"]
    certbot.certonly_standalone(names, pebble.http_port)
    chain = pem_ders(certbot.chain_pem(lineage_name(names)))
    assert len(chain) == 4, "certbot did not follow up to the fourth intermediate"
    issuers = [x509.load_der_x509_certificate(der) for der in chain]
    for child, parent in zip(issuers, issuers[1:]):
        assert child.issuer == parent.subject
    assert_certbot_issued(certbot, pebble, names)

    gateway.restart()
    certbot.renew(force=True)
    assert len(pem_ders(certbot.chain_pem(lineage_name(names)))) == 4


#: Today's Pebble with two profiles; "shortlived" lasts six days.
PROFILES = {"profiles": {
    "default": {"description": "The default profile", "validityPeriod": 7776000},
    "shortlived": {"description": "Six days", "validityPeriod": 518400},
}}


def test_a_profile_chosen_by_a_per_client_rule_reaches_the_ca(tmp_path, pebble_factory, gateways):
    pebble = pebble_factory(config=PROFILES, http_port=free_port(), current=True)
    keys_dir = str(tmp_path / "keys")
    config = tmp_path / "gateway.toml"
    config.write_text('[[profile-rule]]\nuser-agent = "CertbotACMEClient/*"\n'
                      'profile = "shortlived"\n')
    gateway = gateways(pebble, keys_dir, start=False,
                       extra_args=["--profile", "default", "--config", str(config)])
    certbot = Certbot(str(tmp_path / "certbot"), gateway.directory_url)
    seed_certbot_account(certbot, gateway, rsa.generate_private_key(65537, 2048), keys_dir)
    gateway.start()

    names = ["short.example.test"]
    certbot.certonly_standalone(names, pebble.http_port)
    leaf = assert_certbot_issued(certbot, pebble, names)
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime.days <= 6, f"not the shortlived profile: {lifetime}"
    profiles = {row[0] for row in state_rows(gateway.state, "SELECT profile FROM orders")}
    assert profiles == {"shortlived"}, "the orders Pebble returned name another profile"


def test_a_profile_the_ca_does_not_offer_stops_start_up(tmp_path, pebble_factory, gateways):
    pebble = pebble_factory(config=PROFILES, http_port=free_port(), current=True)
    keys_dir = str(tmp_path / "keys")
    gateway = gateways(pebble, keys_dir, start=False, extra_args=["--profile", "tlsserver"])
    certbot = Certbot(str(tmp_path / "certbot"), gateway.directory_url)
    seed_certbot_account(certbot, gateway, rsa.generate_private_key(65537, 2048), keys_dir)
    with pytest.raises(Exception):
        gateway.start()
    log = gateway.log()
    assert "tlsserver" in log and "shortlived" in log


EAB_KID = "kid-of-the-gateway"
EAB_KEY = b64url(os.urandom(32))
EAB_REQUIRED = {"externalAccountBindingRequired": True,
                "externalAccountMACKeys": {EAB_KID: EAB_KEY}}


def test_eab_required_register_issue_and_revoke_with_the_flags(tmp_path, pebble_factory,
                                                               gateways):
    pebble = pebble_factory(config=EAB_REQUIRED, http_port=free_port(), current=True)
    keys_dir = str(tmp_path / "keys")
    gateway = gateways(pebble, keys_dir, start=False,
                       extra_args=["--eab-kid", EAB_KID, "--eab-hmac-key", EAB_KEY])
    certbot = Certbot(str(tmp_path / "certbot"), gateway.directory_url)
    seed_certbot_account(certbot, gateway, rsa.generate_private_key(65537, 2048), keys_dir)
    gateway.start()

    names = ["bound.example.test"]
    certbot.certonly_standalone(names, pebble.http_port)
    leaf = assert_certbot_issued(certbot, pebble, names)
    ((upstream_url,),) = state_rows(gateway.state, "SELECT upstream_url FROM accounts")
    assert upstream_url and upstream_url.startswith(f"https://localhost:{pebble.port}/")

    certbot.revoke(certbot.live_path(lineage_name(names)))
    ((revoked_at,),) = state_rows(
        gateway.state, f"SELECT revoked_at FROM certificates WHERE serial = '{leaf.serial_number:x}'")
    assert revoked_at


def test_eab_required_without_the_flags_is_a_4xx_naming_them(tmp_path, pebble_factory, gateways):
    pebble = pebble_factory(config=EAB_REQUIRED, http_port=free_port(), current=True)
    keys_dir = str(tmp_path / "keys")
    gateway = gateways(pebble, keys_dir, start=False)
    certbot = Certbot(str(tmp_path / "certbot"), gateway.directory_url)
    seed_certbot_account(certbot, gateway, rsa.generate_private_key(65537, 2048), keys_dir)
    gateway.start()

    result = certbot.certonly_standalone(["unbound.example.test"], pebble.http_port, check=False)
    assert result.returncode != 0
    # certbot 1.32 on Python 3.11 then trips over the error while printing
    # it (josepy's frozen exception); its log keeps the problem document.
    with open(certbot.log_path, errors="replace") as f:
        log = f.read()
    assert '"type": "urn:acme:error:unauthorized"' in log, result.stdout + result.stderr
    assert '"status": 403' in log
    assert "--eab-kid KID --eab-hmac-key KEY" in log
    assert "Traceback" not in gateway.log()
    assert " 500 " not in gateway.log()
    assert state_rows(gateway.state, "SELECT upstream_url FROM accounts WHERE upstream_url "
                                     "IS NOT NULL") == []


@pytest_twisted.ensureDeferred
async def test_an_adopted_certbot_certificate_renews_as_one_ari_replacement(
        tmp_path, pebble_factory, dns_server, gateways):
    """
    certbot's 3-name certificate from before the migration (issued through
    a throw-away gateway whose state is discarded, then the installation
    rewritten to a dead v1 URL, as in `test_migration`): ``adopt certbot
    … --state`` files it in the new gateway's inventory, so ``certbot renew``
    (no server flag), through that gateway with no means and no reuse, is
    one ``newOrder`` that Pebble logs as a replacement of the old order.
    """
    from tests.e2e.test_migration import DEAD, adopt, age_certbot

    pebble = await off_reactor(pebble_factory, env=NO_REUSE, http_port=free_port(), current=True)
    proxy, listening, upstream = await proxied(pebble)
    try:
        names = ["adopted-a.example.test", "adopted-b.example.test", "adopted-c.example.test"]
        setup_keys = str(tmp_path / "setup-keys")
        old = await off_reactor(gateways, upstream, setup_keys, start=False,
                                extra_args=dns01_means(dns_server, tmp_path))
        certbot = Certbot(str(tmp_path / "certbot"), old.directory_url)
        seed_certbot_account(certbot, old, rsa.generate_private_key(65537, 2048), setup_keys)
        await off_reactor(old.start)
        await off_reactor(certbot.certonly_standalone, names, pebble.http_port)
        first = assert_certbot_issued(certbot, pebble, names)
        await off_reactor(old.stop)
        age_certbot(certbot, old.directory_url)

        keys = str(tmp_path / "keys")
        gateway = await off_reactor(gateways, upstream, keys, start=False)
        out = await off_reactor(adopt, "certbot", "--config-dir", certbot.config_dir,
                                "--gateway", gateway.directory_url, "--keys", keys,
                                "--state", gateway.state)
        assert "added to the renewal inventory" in out, out
        await off_reactor(gateway.start)
        orders = proxy.counts["order-plz"]
        await off_reactor(certbot.renew, force=True, with_server=False)
        renewed = assert_certbot_issued(certbot, pebble, names)
        assert renewed.serial_number != first.serial_number
        assert proxy.counts["order-plz"] - orders == 1, "not one upstream newOrder"
        assert pebble.log().count("is a replacement of") == 1
        assert certbot.account_ids(DEAD)
    finally:
        await listening.stopListening()
