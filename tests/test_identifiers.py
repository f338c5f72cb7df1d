"""
Identifier policy for v1 clients: wildcards accepted only as Let's
Encrypt's v2 accepts them, redundant names refused, names lower-cased and
IDNA-checked — every refusal a v1 ``malformed`` before any upstream order.
"""

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.keys.jose import AccountKey, b64url
from gateway.translate.policy import DNSName, check_name_set, parse_dns_name
from gateway.translate.errors import IdentifierRejected
from gateway.v1.problems import problem_for
from gateway.process.testing import build_test_gateway
from tests.integration.test_upstream_pebble import make_csr
from tests.support.v1_client import V1TestClient

KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))

REFUSED_IDENTIFIERS = [
    "*.*.example.test",      # more than one wildcard
    "a.*.example.test",      # not the leftmost label
    "*example.test",         # not a whole label
    "ex*mple.test",
    "*",
    "*.test",                # a wildcard needs a registered domain under the TLD
    "127.0.0.1",             # an IP address is not a DNS name
    "a..example.test",
    "-a.example.test",
    "example",               # a single label
    "a" * 64 + ".example.test",
    "",
]


@pytest.mark.parametrize("name", REFUSED_IDENTIFIERS)
def test_refused_names(name):
    """
    Each malformed name is a v1 ``malformed`` problem.
    """
    with pytest.raises(IdentifierRejected) as raised:
        parse_dns_name(name, allow_wildcard=True)
    problem = problem_for(raised.value)
    assert (problem.code, problem.status) == ("malformed", 400)


def test_names_are_lowercased_and_idna_encoded():
    """
    Upper case is folded; a U-label becomes its A-label; a wildcard keeps its
    base value apart from the flag.
    """
    assert parse_dns_name("WWW.Example.TEST") == DNSName("www.example.test")
    assert parse_dns_name("bücher.example.test") == DNSName("xn--bcher-kva.example.test")
    assert parse_dns_name("*.Example.test", allow_wildcard=True) == DNSName("example.test", True)


def test_redundant_name_refused_but_base_and_wildcard_allowed():
    """
    ``*.example.test`` with ``www.example.test`` is redundant; with
    ``example.test`` it is fine (two authorizations for one name).
    """
    base = check_name_set([DNSName("example.test", True), DNSName("example.test")])
    assert [n.spelled for n in base] == ["*.example.test", "example.test"]
    with pytest.raises(IdentifierRejected) as raised:
        check_name_set([DNSName("example.test", True), DNSName("www.example.test")])
    assert "redundant" in raised.value.detail


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("name", REFUSED_IDENTIFIERS)
async def test_new_authz_refusal_creates_no_order(name):
    """
    new-authz with a refused name answers 400 malformed, and the upstream
    CA sees no order.
    """
    gateway = build_test_gateway([KEY])
    client = V1TestClient(gateway.base_url, KEY, http=gateway.client)
    reply = await client.post(gateway.url("/acme/new-authz"), {
        "resource": "new-authz", "identifier": {"type": "dns", "value": name}})
    assert reply.status == 400, reply.body
    assert reply.json()["type"] == "urn:acme:error:malformed"
    assert gateway.ca.orders == []


@pytest_twisted.ensureDeferred
async def test_redundant_csr_refused_before_any_order():
    """
    new-cert for ``*.example.test`` and ``www.example.test`` is refused as
    malformed with no upstream order.
    """
    gateway = build_test_gateway([KEY])
    client = V1TestClient(gateway.base_url, KEY, http=gateway.client)
    csr, _ = make_csr(["*.example.test", "www.example.test"])
    reply = await client.post(gateway.url("/acme/new-cert"), {"resource": "new-cert", "csr": b64url(csr)})
    assert reply.status == 400, reply.body
    assert "redundant" in reply.json()["detail"]
    assert len(gateway.ca.orders) == 0


@pytest_twisted.ensureDeferred
async def test_wildcard_authorization_offers_only_dns01():
    """
    new-authz for ``*.example.test`` becomes a v2 wildcard order; the v1
    authorization shows ``*.example.test`` and only dns-01.
    """
    gateway = build_test_gateway([KEY])
    client = V1TestClient(gateway.base_url, KEY, http=gateway.client)
    reply = await client.post(gateway.url("/acme/new-authz"), {
        "resource": "new-authz", "identifier": {"type": "dns", "value": "*.Example.test"}})
    assert reply.status == 201, reply.body
    body = reply.json()
    assert body["identifier"] == {"type": "dns", "value": "*.example.test"}
    assert [c["type"] for c in body["challenges"]] == ["dns-01"]
    assert len(gateway.ca.orders) == 1


def _csr_naming(name: str) -> bytes:
    """
    A CSR whose CN is ``name`` as written, and whose SAN carries it too when
    it is ASCII (a SAN dNSName cannot hold a U-label).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
    if name.isascii():
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]),
                                        critical=False)
    return builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()).public_bytes(
        serialization.Encoding.DER)


#: CSR names the gateway would have to respell for the order, which the CA
#: then compares with the CSR's names as written: never issuable.
RESPELLED_CSR_NAMES = {
    "trailing.example.test.": "Domain name ends in a dot",
    " spaced.example.test": "surrounding spaces",
    "bücher.example.test": "xn--bcher-kva.example.test",
}


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("name", sorted(RESPELLED_CSR_NAMES))
async def test_csr_name_the_ca_would_not_match_is_refused_before_any_order(name):
    """
    A CSR naming ``name.`` (or a name with spaces, or a U-label) is refused
    as malformed, naming the name and what to change, with no upstream
    order — even with the name's authorization valid — instead of costing
    an order and a finalize the CA then refuses ("CSR is missing Order
    domain").
    """
    gateway = build_test_gateway([KEY])
    client = V1TestClient(gateway.base_url, KEY, http=gateway.client)
    reply = await client.post(gateway.url("/acme/new-cert"), {
        "resource": "new-cert", "csr": b64url(_csr_naming(name))})
    assert reply.status == 400, reply.body
    problem = reply.json()
    assert problem["type"] == "urn:acme:error:malformed"
    assert repr(name) in problem["detail"] and RESPELLED_CSR_NAMES[name] in problem["detail"]
    assert gateway.ca.orders == [] and gateway.ca.counts["finalize"] == 0


def test_csr_names_differing_only_in_case_are_accepted():
    """
    The CA lower-cases a CSR's names before comparing them, so upper case
    is no reason to refuse.
    """
    from gateway.translate.csr import parse_csr

    parsed = parse_csr(_csr_naming("WWW.Example.TEST"))
    assert [n.spelled for n in parsed.names] == ["www.example.test"]
