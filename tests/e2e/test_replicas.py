"""
Several gateway replicas on one PostgreSQL, behind a round-robin balancer
that sends each request of a client to the next replica (issue 16): real
``acme-gateway serve`` processes on a throwaway cluster
(`tests.support.postgres`), real legacy clients, a real Pebble.

- certbot 1.32 and the acme 1.32 v1 client issue and renew through the
  balancer: a nonce one replica issued is redeemed at another, an
  authorization made by one is polled at the next, the CA's HTTP-01
  requests reach whichever replica (answers are in the state);
- one replica is killed with SIGKILL while clients run concurrently, and
  every client still gets its certificates, each for its own CSR key;
- the order budget gives exactly its limit across replicas;
- the state password reaches the replicas through the environment and
  appears in none of their output.
"""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet import defer

from tests.e2e.test_legacy_clients import (
    assert_certbot_issued,
    assert_issued,
    seed_certbot_account,
    write_pem,
)
from tests.support.legacy import Certbot, off_reactor, run_acme1_client
from tests.support.replicas import Replicas
from tests.support.stack import free_port
from tests.support.v1_client import V1TestClient
from tests.support.v1_flows import new_account_key, obtain, pause

pytestmark = pytest.mark.e2e


@pytest.fixture
def replicas(tmp_path, postgres_cluster):
    """
    ``replicas(pebble, keys_dir, count=3, extra_args=())``: replicas on a
    fresh database, started; all are stopped when the test ends, and their
    output printed.
    """
    made = []

    def make(pebble, keys_dir, count=3, extra_args=(), start=True):
        os.makedirs(keys_dir, exist_ok=True)
        database = postgres_cluster.create_database()
        group = Replicas(str(tmp_path / f"replicas-{len(made)}"), pebble, keys_dir,
                         postgres_cluster.uri(database), count=count,
                         password=postgres_cluster.password, extra_args=extra_args)
        group.database = database
        made.append(group)
        return group.start() if start else group

    yield make
    for group in made:
        group.stop()
        print(group.logs())


def assert_password_never_printed(group: Replicas, password: str) -> None:
    for gateway in group.gateways:
        assert password not in gateway.log()
        assert " ".join(gateway.command()).find(password) < 0


def test_certbot_issues_and_renews_through_three_replicas(tmp_path, pebble_factory, replicas,
                                                         postgres_cluster):
    """
    certbot 1.32, with the account it already had, gets a two-name
    certificate and renews it through the balancer; each of its requests
    went to the next replica, and every replica served some.  The CA
    reuses no authorization, so the renewal's second name is validated by
    the gateway itself, answered by whichever replica the CA reached.
    """
    pebble = pebble_factory(http_port=free_port())
    keys_dir = str(tmp_path / "keys")
    group = replicas(pebble, keys_dir, start=False)
    certbot = Certbot(str(tmp_path / "certbot"), group.directory_url)
    key = rsa.generate_private_key(65537, 2048)
    account_id = seed_certbot_account(certbot, group.gateways[0], key, keys_dir)
    group.start()

    names = ["replicas-a.example.test", "replicas-b.example.test"]
    certbot.certonly_webroot(names, str(tmp_path / "webroot"))
    first = assert_certbot_issued(certbot, pebble, names)
    certbot.renew(force=True)
    renewed = assert_certbot_issued(certbot, pebble, names)
    assert renewed.serial_number != first.serial_number
    assert certbot.account_ids() == [account_id], "certbot registered a new account"
    served = group.served()
    assert all(count > 0 for count in served), served
    assert_password_never_printed(group, postgres_cluster.password)


@pytest_twisted.ensureDeferred
async def test_acme1_client_registers_issues_and_renews_through_three_replicas(
        tmp_path, pebble_factory, replicas):
    """
    acme 1.32's v1 ``Client`` registers, gets a certificate for two names
    and the chain through ``Link rel="up"``, then renews with the account
    it found again by key — every request through the balancer.
    """
    pebble = pebble_factory(http_port=free_port())
    keys_dir = str(tmp_path / "keys")
    key_path = write_pem(os.path.join(keys_dir, "account.pem"),
                         ec.generate_private_key(ec.SECP256R1()))
    group = await off_reactor(replicas, pebble, keys_dir)
    names = ["acme1-replicas.example.test", "www.acme1-replicas.example.test"]
    for round_, register in enumerate((True, False)):
        result = await off_reactor(
            run_acme1_client, group.directory_url, key_path, names,
            out_dir=str(tmp_path / f"out-{round_}"), webroot=str(tmp_path / "webroot"),
            register=register, find_existing=not register)
        assert result["cert_uri"].startswith(group.url + "/acme/cert/")
        out = result["out_dir"]
        with open(os.path.join(out, "cert.der"), "rb") as f:
            leaf_der = f.read()
        chain_dir = os.path.join(out, "chain")
        issuers = []
        for index in range(len(os.listdir(chain_dir))):
            with open(os.path.join(chain_dir, f"{index}.der"), "rb") as f:
                issuers.append(f.read())
        assert issuers, "no chain fetched through Link rel=up"
        assert_issued(leaf_der, issuers, pebble, names)
    served = await off_reactor(group.served)
    assert all(count > 0 for count in served), served


@pytest_twisted.ensureDeferred
async def test_a_replica_killed_during_concurrent_clients_loses_nothing(
        tmp_path, pebble_factory, replicas):
    """
    Four v1 clients get certificates concurrently through the balancer (two
    validating through new-authz, two relying on the gateway's own
    revalidation) while one replica is killed with SIGKILL.  A request the
    dead replica was answering fails (a 502 from the balancer, as from any);
    the client's retry goes to another replica and completes.  Every client
    gets its certificates, each for the key of its own CSR, and the
    survivors serve on without the dead one's locks.
    """
    pebble = pebble_factory(http_port=free_port())
    keys_dir = str(tmp_path / "keys")
    clients = [new_account_key() for _ in range(4)]
    for index, key in enumerate(clients):
        write_pem(os.path.join(keys_dir, f"client-{index}.pem"), key.private_key)
    group = await off_reactor(replicas, pebble, keys_dir)
    rounds = 3
    issued, wrong_keys, failed_attempts = [], [], []
    killed = []

    async def client_run(index: int, key) -> None:
        for round_ in range(rounds):
            names = [f"kill{index}-{round_}.example.test"]
            if index % 2:
                names.append(f"kill{index}-{round_}-b.example.test")
            for attempt in range(40):
                try:
                    outcome = await obtain(group.url, key, names, authorize=index % 2 == 0)
                except Exception:
                    outcome = None
                if outcome is not None and outcome.ok:
                    if outcome.leaf_key() != outcome.csr_key:
                        wrong_keys.append((index, round_))
                    issued.append((index, round_))
                    break
                failed_attempts.append((index, round_))
                await pause(0.3)
            else:
                raise AssertionError(f"client {index} stranded on round {round_}")

    async def killer() -> None:
        # Kill while the first round is in flight everywhere.
        while len(issued) < 2:
            await pause(0.05)
        group.gateways[1].kill()
        killed.append(True)

    work = [defer.ensureDeferred(client_run(i, key)) for i, key in enumerate(clients)]
    await defer.ensureDeferred(killer())
    results = await defer.DeferredList(work, consumeErrors=True)
    failures = [r for ok, r in results if not ok]
    print(f"kill: {len(issued)} certificates, {len(failed_attempts)} failed attempts")
    assert killed
    assert not failures, failures[0]
    assert wrong_keys == []
    assert sorted(issued) == [(i, r) for i in range(4) for r in range(rounds)]
    refused = (await off_reactor(group.v1.counts))["refused"]
    assert refused[f"127.0.0.1:{group.gateways[1].port}"] > 0, "the dead replica was skipped"


@pytest_twisted.ensureDeferred
async def test_order_budget_is_exact_across_replicas(tmp_path, pebble_factory, replicas):
    """
    ``--order-limit 3`` on three replicas: twelve parallel ``new-authz``
    for twelve names of one account, spread over the replicas, create
    exactly three orders; the other nine are refused with 429 before
    anything is sent upstream.
    """
    pebble = pebble_factory(http_port=free_port())
    keys_dir = str(tmp_path / "keys")
    key = new_account_key()
    write_pem(os.path.join(keys_dir, "account.pem"), key.private_key)
    group = await off_reactor(replicas, pebble, keys_dir,
                              extra_args=["--order-limit", "3", "--order-window", "3600"])

    async def new_authz(index: int):
        client = V1TestClient(group.url, key)
        directory = await client.directory()
        return await client.post(directory["new-authz"], {
            "resource": "new-authz",
            "identifier": {"type": "dns", "value": f"budget{index}.example.test"}})

    replies = await defer.gatherResults(
        [defer.ensureDeferred(new_authz(i)) for i in range(12)], consumeErrors=True)
    statuses = sorted(reply.status for reply in replies)
    assert statuses == [201] * 3 + [429] * 9, [(r.status, r.body[:200]) for r in replies]
    for reply in replies:
        if reply.status == 429:
            assert reply.json()["type"] == "urn:acme:error:rateLimited"
            assert "--order-limit" in reply.json()["detail"]
