"""
``Link: rel="up"`` on ``/acme/issuer-cert/<id>`` comes from the store, so a
legacy client that walks its chain after a gateway restart still reaches
every issuer: the whole gateway over a `FakeCA` whose chains list two
issuers (intermediate, then root), restarted on the same state file.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from gateway.process.testing import FakeCA, build_test_gateway
from gateway.store.sqlite import SQLiteStore
from tests.security.harness import HELD_KEYS, KEY, NAME, Harness, fired


def der(certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def gateway_on(path: str, ca: FakeCA) -> Harness:
    """
    A gateway on the state file at ``path`` (opened inline), in front of
    ``ca``: each call is a start of the gateway.
    """
    store = SQLiteStore.inline(path, clock=ca.clock, upstream=ca.directory_url)
    return Harness(build_test_gateway(HELD_KEYS, ca=ca, store=store))


def walk_up(harness: Harness, url: str) -> list:
    """
    Follow ``Link: rel="up"`` from ``url`` to the end of the chain, as a v1
    client does; the DER of each issuer met.
    """
    issuers = []
    while True:
        reply = harness.get(url)
        assert reply.status == 200, reply.body
        issuers.append(reply.body)
        links = reply.links("up")
        if not links:
            return issuers
        assert len(issuers) < 5, "the chain does not end"
        (url,) = links


def test_issuer_links_survive_a_restart(tmp_path):
    path = str(tmp_path / "state.sqlite3")
    ca = FakeCA()
    ca.chain_issuers.append(ca.root)
    first = gateway_on(path, ca)
    first.register(KEY)
    certificate = first.issue((NAME,), KEY)
    (intermediate_url,) = certificate.links("up")
    chain = [der(ca.intermediate), der(ca.root)]
    assert walk_up(first, intermediate_url) == chain
    fired(first.gateway.store.close())

    restarted = gateway_on(path, ca)
    assert walk_up(restarted, intermediate_url) == chain
    assert restarted.get(certificate.header("location")).links("up") == [intermediate_url]
    fired(restarted.gateway.store.close())


def test_the_last_issuer_of_a_chain_has_no_link(tmp_path):
    """
    With a one-issuer chain (what most CAs send), the intermediate has no
    ``Link: rel="up"``, before a restart and after.
    """
    path = str(tmp_path / "state.sqlite3")
    ca = FakeCA()
    first = gateway_on(path, ca)
    first.register(KEY)
    (intermediate_url,) = first.issue((NAME,), KEY).links("up")
    assert walk_up(first, intermediate_url) == [der(ca.intermediate)]
    fired(first.gateway.store.close())
    assert walk_up(gateway_on(path, ca), intermediate_url) == [der(ca.intermediate)]


def test_an_issuer_listed_twice_is_not_its_own_parent(tmp_path):
    """
    A CA that lists the intermediate twice in a row still gets its
    certificate stored and served, and the chain ends instead of linking
    the intermediate to itself.
    """
    ca = FakeCA()
    ca.chain_issuers.append(ca.intermediate)
    gateway = gateway_on(str(tmp_path / "state.sqlite3"), ca)
    gateway.register(KEY)
    (intermediate_url,) = gateway.issue((NAME,), KEY).links("up")
    assert walk_up(gateway, intermediate_url) == [der(ca.intermediate)]
