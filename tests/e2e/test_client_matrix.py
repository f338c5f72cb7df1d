"""
The legacy-client matrix: each real ACME v1 client release the suite can
install (``tests/support/matrix.py``, venvs from ``tests/legacy-clients/``)
gets a certificate through ``acme-gateway serve`` and renews it, as a
migrating machine does: with the account it already had at the old v1 CA,
whose key is in the gateway's key store.

Per client: the certificate chains to Pebble's root and names exactly the
name asked for; the renewal is a new certificate; the client never made a
new account, and the gateway acted upstream for that one key only.

The whole matrix runs twice: against a Pebble that reuses every valid
authorization (as Let's Encrypt did for v1 flows) and against one that
reuses none (a renewal must validate again: Let's Encrypt's reuse window is
shrinking to hours).  One Pebble of each kind and one webroot server on its
http-01 port serve all clients; each client gets its own gateway process,
key and name.
"""

from __future__ import annotations

import os
import sqlite3
import ssl
import urllib.request

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.keys.jose import AccountKey
from tests.support.matrix import ROWS, WebrootServer, pem_ders
from tests.support.stack import Pebble, certificate_names, free_port, verify_chain

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["100", "0"], ids=["reuse100", "reuse0"])
def matrix_pebble(request, stack_dir, dns_server):
    """The matrix's Pebble, reusing all (``PEBBLE_AUTHZREUSE=100``) or no valid authorizations."""
    from tests.conftest import _require_pebble

    _require_pebble()
    pebble = Pebble(os.path.join(stack_dir, "pebble"), dns_server.address, http_port=free_port(),
                    env={"PEBBLE_AUTHZREUSE": request.param}).start()
    yield pebble
    pebble.stop()


@pytest.fixture(scope="module")
def matrix_webroot(tmp_path_factory, matrix_pebble):
    """One webroot for every client's http-01 files, served on Pebble's http-01 port."""
    server = WebrootServer(str(tmp_path_factory.mktemp("matrix") / "webroot"),
                           matrix_pebble.http_port).start()
    yield server
    server.stop()


def pebble_intermediate(pebble) -> bytes:
    """
    The DER of Pebble's intermediate, for a client that fetched no chain
    (dehydrated builds ``chain.pem`` from the leaf's AIA URL, which Pebble's
    leaves lack).
    """
    context = ssl.create_default_context(cafile=pebble.ca_bundle)
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    with opener.open(f"{pebble.management_url}/intermediates/0", timeout=5) as response:
        return pem_ders(response.read())[0]


def assert_issued(issued, pebble, name):
    issuers = issued.issuer_ders or [pebble_intermediate(pebble)]
    leaf = verify_chain(issued.leaf_der, issuers, pebble.root_pem(), name)
    assert certificate_names(leaf) == {name}
    return leaf


def gateway_accounts(state_path: str) -> list:
    connection = sqlite3.connect(f"file:{state_path}?mode=ro", uri=True)
    try:
        return connection.execute("SELECT thumbprint, status FROM accounts ORDER BY id").fetchall()
    finally:
        connection.close()


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_legacy_client_issues_and_renews_with_its_existing_account(
        row, tmp_path, matrix_pebble, matrix_webroot, gateways):
    missing = row.missing()
    if missing:
        pytest.fail(missing, pytrace=False)
    keys_dir = str(tmp_path / "keys")
    os.makedirs(keys_dir)
    key = rsa.generate_private_key(65537, 2048)
    thumbprint = AccountKey.from_private_key(key).thumbprint

    gateway = gateways(matrix_pebble, keys_dir, start=False)
    driver = row.prepare(str(tmp_path / "client"), gateway.directory_url, matrix_webroot, key, keys_dir)
    gateway.start()

    name = f"{row.id.replace('.', '-').replace('_', '-').lower()}.matrix.example.test"
    first = assert_issued(driver.issue(name), matrix_pebble, name)
    renewed = assert_issued(driver.renew(name), matrix_pebble, name)

    assert renewed.serial_number != first.serial_number, "the renewal returned the same certificate"
    assert not driver.registered_again(), f"{row.label} made itself a new account"
    assert gateway_accounts(gateway.state) == [(thumbprint, "valid")]
