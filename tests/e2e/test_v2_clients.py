"""
Draft-era ACME v2 clients, and a current one, through the gateway's
``/v2/directory`` (``acme-gateway serve``) against Debian's Pebble 2.4 and
today's Pebble, on loopback: acme-tiny 4.0.4 and certbot 0.27.1 in v2 mode read with plain
``GET``s, which Pebble (like Let's Encrypt since 2020) refuses; certbot
5.8.0 speaks RFC 8555.  Each gets a certificate and renews it with the
account it already had (certbot's ``regr.json`` names Let's Encrypt's
account URL, which the gateway ties to the key by the signature; acme-tiny
has only its key), its key in the gateway's key store.

Pebble reuses every valid authorization here, as Let's Encrypt did: at
renewal acme-tiny and certbot 0.27 POST ``{}`` to the challenge of the
reused, already valid authorization, which Pebble refuses with 400 and
Boulder answered with the challenge unchanged -- as the gateway does,
without asking Pebble.
"""

from __future__ import annotations

import os
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.matrix import WebrootServer
from tests.support.stack import Pebble, certificate_names, current_pebble, free_port, verify_chain
from tests.support.v2_clients import ROWS

pytestmark = pytest.mark.e2e

#: The account URL a migrating machine's regr.json holds: Let's Encrypt's.
LE_ACCOUNT_URL = "https://acme-v02.api.letsencrypt.org/acme/acct/31415926"


@pytest.fixture(scope="module", params=["pebble-2.4", "pebble-current"])
def reusing_pebble(request, stack_dir, dns_server):
    """
    Debian's Pebble 2.4, then today's (`tests.support.stack.current_pebble`),
    each reusing every valid authorization.
    """
    from tests.conftest import _require_pebble

    _require_pebble()
    pebble = Pebble(os.path.join(stack_dir, "pebble"), dns_server.address, http_port=free_port(),
                    env={"PEBBLE_AUTHZREUSE": "100"},
                    binary=current_pebble() if request.param == "pebble-current" else None).start()
    yield pebble
    pebble.stop()


@pytest.fixture(scope="module")
def webroot(tmp_path_factory, reusing_pebble):
    server = WebrootServer(str(tmp_path_factory.mktemp("v2-clients") / "webroot"),
                           reusing_pebble.http_port).start()
    yield server
    server.stop()


def _count(log: str, pattern: str) -> int:
    return len(re.findall(pattern, log))


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_v2_client_issues_and_renews(row, tmp_path, reusing_pebble, webroot, gateways):
    missing = row.missing()
    if missing:
        pytest.fail(missing, pytrace=False)
    name = f"{row.id.replace('.', '-')}.v2.example.test"
    keys_dir = str(tmp_path / "keys")
    os.makedirs(keys_dir)
    gateway = gateways(reusing_pebble, keys_dir, start=False)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    driver = row.prepare(str(tmp_path / "client"), gateway.url + "/v2/directory", webroot, key,
                         keys_dir, LE_ACCOUNT_URL)
    gateway.start()

    issued = driver.issue(name)
    first_log = gateway.log()
    renewed = driver.renew(name)
    log = gateway.log()
    renewal_log = log[len(first_log):]

    for certificate in (issued, renewed):
        leaf = verify_chain(certificate.leaf_der, certificate.issuer_ders, reusing_pebble.root_pem(),
                            name)
        assert certificate_names(leaf) == {name}
    assert x509.load_der_x509_certificate(issued.leaf_der).serial_number != \
        x509.load_der_x509_certificate(renewed.leaf_der).serial_number
    if hasattr(driver, "registered_again"):
        assert not driver.registered_again()
    # one upstream account, the client's own key; every read went upstream
    # as POST-as-GET (Pebble refuses anything else)
    assert _count(log, r"upstream POST \S+/sign-me-up -> 201") <= 1
    assert _count(log, r"upstream GET \S+/authZ/") == 0
    if row.plain_gets:
        assert _count(log, r"GET /v2/authz/\S+ -> 200") >= 2
        assert _count(log, r"GET /v2/order/\S+ -> 200") >= 2
        assert _count(log, r"GET /v2/cert/\S+ -> 200") == 2
        # the renewal answered the reused, valid authorization's challenge,
        # and the gateway did not pass that on to Pebble
        assert _count(renewal_log, r"POST /v2/chall/\S+ -> 200") == 1
        assert _count(renewal_log, r"upstream POST \S+/chalZ/\S+ -> \d+ \(challenge,") == 0
    else:
        # certbot 5.8 leaves a valid authorization alone
        assert _count(renewal_log, r"POST /v2/chall/") == 0
    assert _count(log, r"-> 5\d\d") == 0
