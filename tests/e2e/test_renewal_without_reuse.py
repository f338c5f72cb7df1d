"""
Renewals when the CA reuses no authorization, as Let's Encrypt's shrinking
reuse windows make ever more likely: real certbot 1.32 in v1 mode, with the
account it already had, through the gateway process, with **no** means for
the gateway to validate names itself.  Every run must issue a new
certificate at exactly one upstream order.

The orders are counted at a TLS pass-through in front of Pebble
(`tests.support.upstream_proxy`), so the count is what the CA saw.  Both
Debian's Pebble 2.4 and today's Pebble are the upstream.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.test_legacy_clients import assert_certbot_issued, seed_certbot_account
from tests.e2e.test_resilience import proxied
from tests.support.legacy import Certbot, lineage_name, off_reactor
from tests.support.stack import free_port

pytestmark = pytest.mark.e2e

NO_REUSE = {"PEBBLE_AUTHZREUSE": "0"}


@pytest.mark.parametrize("build", ["debian-2.4", "current"])
@pytest_twisted.ensureDeferred
async def test_certbot_certonly_and_three_renewals_at_one_order_each(
        tmp_path, pebble_factory, gateways, build):
    pebble = await off_reactor(pebble_factory, env=NO_REUSE, http_port=free_port(),
                               current=build == "current")
    proxy, listening, upstream = await proxied(pebble)
    try:
        keys_dir = str(tmp_path / "keys")
        gateway = await off_reactor(gateways, upstream, keys_dir, start=False)
        certbot = Certbot(str(tmp_path / "certbot"), gateway.directory_url)
        seed_certbot_account(certbot, gateway, rsa.generate_private_key(65537, 2048), keys_dir)
        await off_reactor(gateway.start)

        names = ["renew-every-time.example.test"]
        serials = []
        for run in ("certonly", "renew 1", "renew 2", "renew 3"):
            orders, asked = proxy.created["order-plz"], proxy.counts["order-plz"]
            if run == "certonly":
                await off_reactor(certbot.certonly_standalone, names, pebble.http_port)
            else:
                await off_reactor(certbot.renew, force=True)
            leaf = assert_certbot_issued(certbot, pebble, names)
            serials.append(leaf.serial_number)
            assert proxy.created["order-plz"] - orders == 1, f"{run}: not one upstream order"
            # A renewal's newOrder carries ARI's `replaces`; today's Pebble
            # refuses it (500, "could not find order resulting in the given
            # certificate serial number") when the replaced serial has its
            # high bit set: it looks up the CertID's DER serial bytes, leading
            # zero included, among serials it stored without one.  The gateway
            # then orders again without `replaces`: one refused request, no
            # second order.
            assert proxy.counts["order-plz"] - asked <= 2, f"{run}: newOrder asked more than twice"
        assert len(set(serials)) == 4, "every run issued a new certificate"
        assert proxy.counts["finalize-order"] == 4
        assert lineage_name(names) in certbot.live_path(names[0])
    finally:
        await listening.stopListening()
