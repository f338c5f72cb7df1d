"""
`gateway.translate.policy` at its edges (issue 21): the name length cap at
253, numeric last labels, 100 and 101 names, a CSR naming none, U-labels that
need UTS-46 mapping, wildcards, the CSR spellings the CA cannot match, and
each refusal's words (they are the v1 problem's detail).
"""

from __future__ import annotations

import pytest

from gateway.translate.errors import IdentifierRejected
from gateway.translate.policy import (
    MAX_NAME_LENGTH, MAX_NAMES_PER_CERTIFICATE, DNSName, check_name_set, parse_csr_name,
    parse_dns_name, parse_v1_identifier, spellings,
)


def refused(call, *args, **kwargs) -> str:
    with pytest.raises(IdentifierRejected) as raised:
        call(*args, **kwargs)
    return raised.value.detail


def name_of_length(length: int) -> str:
    """A valid name of exactly ``length`` characters (63-character labels)."""
    labels, left = [], length - len(".test")
    while left > 0:
        size = min(63, left)
        labels.append("a" * size)
        left -= size + 1
    name = ".".join(labels) + ".test"
    name = name[len(name) - length:] if len(name) > length else name
    assert len(name) == length and not name.startswith(".")
    return name


def test_names_up_to_253_characters_are_accepted_and_longer_are_not():
    assert MAX_NAME_LENGTH == 253
    at_cap = name_of_length(253)
    assert parse_dns_name(at_cap) == DNSName(at_cap)
    over = name_of_length(254)
    assert refused(parse_dns_name, over) == f"Invalid identifier {over!r}: DNS name is too long"


def test_the_length_cap_counts_without_the_wildcard_prefix():
    name = name_of_length(253)
    assert parse_dns_name("*." + name, allow_wildcard=True) == DNSName(name, wildcard=True)


@pytest.mark.parametrize("name", ["example.123", "a.b.0", "*.example.42"])
def test_a_numeric_last_label_is_refused(name):
    assert refused(parse_dns_name, name, allow_wildcard=True) == (
        f"Invalid identifier {name!r}: the last label must not be numeric")


def test_a_last_label_with_a_digit_is_not_numeric():
    assert parse_dns_name("example.a1") == DNSName("example.a1")


@pytest.mark.parametrize("name", ["127.0.0.1", "::1", "2001:db8::1"])
def test_ip_addresses_are_refused_as_such(name):
    assert refused(parse_dns_name, name) == f"Invalid identifier {name!r}: IP addresses are not DNS names"


@pytest.mark.parametrize("name", ["localhost", "-a.example.test", "a_b.example.test", "a..example.test",
                                  "a" * 64 + ".example.test"])
def test_names_that_are_not_dns_names(name):
    assert refused(parse_dns_name, name) == f"Invalid identifier {name!r}: not a valid DNS name"


def test_a_label_of_63_characters_is_fine():
    name = "a" * 63 + ".example.test"
    assert parse_dns_name(name).value == name


@pytest.mark.parametrize("raw", [None, "", 7, ["a.example.test"]])
def test_a_name_must_be_a_non_empty_string(raw):
    assert refused(parse_dns_name, raw) == "Invalid identifier: the name must be a non-empty string"


@pytest.mark.parametrize("raw, value", [
    ("BÜcher.Example", "xn--bcher-kva.example"),      # upper-case U-label: mapped, then encoded
    ("faß.de", "xn--fa-hia.de"),                      # UTS-46 nontransitional: ß is kept
    ("  Mixed.Example.TEST.  ", "mixed.example.test"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
])
def test_names_are_mapped_lowered_and_encoded(raw, value):
    assert parse_dns_name(raw) == DNSName(value)


def test_an_invalid_idna_name_is_refused():
    raw = "a\u200db.example"
    detail = refused(parse_dns_name, raw)
    assert detail.startswith(f"Invalid identifier {raw!r}: not a valid IDNA name (")
    assert "200D" in detail


def test_wildcards():
    assert parse_dns_name("*.Example.test", allow_wildcard=True) == DNSName("example.test", True)
    assert DNSName("example.test", True).spelled == "*.example.test"
    assert DNSName("example.test").spelled == "example.test"
    assert refused(parse_dns_name, "*.example.test") == "Wildcard names not supported"
    assert refused(parse_dns_name, "*.*.example.test", allow_wildcard=True) == (
        "Invalid identifier '*.*.example.test': DNS name had more than one wildcard")
    assert refused(parse_dns_name, "a*.example.test", allow_wildcard=True) == (
        "Invalid identifier 'a*.example.test': DNS name had a malformed wildcard label")
    assert refused(parse_dns_name, "www.*.example.test", allow_wildcard=True) == (
        "Invalid identifier 'www.*.example.test': DNS name had a malformed wildcard label")
    assert refused(parse_dns_name, "*.test", allow_wildcard=True) == (
        "Invalid identifier '*.test': not a valid DNS name")


def test_v1_identifiers():
    assert parse_v1_identifier({"type": "dns", "value": "A.example.test"}) == DNSName("a.example.test")
    assert parse_v1_identifier({"type": "dns", "value": "*.example.test"}, allow_wildcard=True) == (
        DNSName("example.test", True))
    assert refused(parse_v1_identifier, {"type": "dns", "value": "*.example.test"}) == (
        "Wildcard names not supported")
    assert refused(parse_v1_identifier, {"type": "ip", "value": "127.0.0.1"}) == "Invalid identifier type"
    assert refused(parse_v1_identifier, {"value": "a.example.test"}) == "Invalid identifier type"
    assert refused(parse_v1_identifier, ["dns", "a.example.test"]) == (
        "Invalid identifier: expected an object with type and value")
    assert refused(parse_v1_identifier, {"type": "dns"}) == (
        "Invalid identifier: the name must be a non-empty string")


# --------------------------------------------------------------------------
# CSR names: spelled as the certificate will carry them
# --------------------------------------------------------------------------

def test_csr_names_differing_only_in_case_are_taken():
    assert parse_csr_name("WWW.Example.Test") == DNSName("www.example.test")
    assert parse_csr_name("*.Example.Test", allow_wildcard=True) == DNSName("example.test", True)


def test_a_wildcard_csr_name_needs_the_wildcard_allowed():
    assert refused(parse_csr_name, "*.example.test") == "Wildcard names not supported"


@pytest.mark.parametrize("raw, why", [
    ("www.example.test.", "Domain name ends in a dot; remove the trailing dot"),
    ("www.example.test. ", "Domain name ends in a dot; remove the trailing dot"),
    (" www.example.test", "the name has surrounding spaces"),
    ("www.example.test ", "the name has surrounding spaces"),
    ("bücher.example", "the name must be spelled as the certificate will carry it, 'xn--bcher-kva.example'"),
])
def test_csr_names_the_ca_cannot_match_are_refused_saying_why(raw, why):
    assert refused(parse_csr_name, raw) == (
        f"Error creating new cert :: CSR name {raw!r} cannot be issued as written: {why} "
        f"(the CA compares the CSR's names with the order's exactly)")


# --------------------------------------------------------------------------
# A certificate's names together
# --------------------------------------------------------------------------

def many(count: int) -> list:
    return [DNSName(f"n{i:03}.example.test") for i in range(count)]


def test_100_names_are_accepted_and_101_are_not():
    assert MAX_NAMES_PER_CERTIFICATE == 100
    assert len(check_name_set(many(100))) == 100
    assert refused(check_name_set, many(101)) == "CSR contains more than 100 DNS names"


def test_duplicates_count_once():
    assert len(check_name_set(many(100) + many(100))) == 100


def test_no_names_is_refused():
    assert refused(check_name_set, []) == "Error finalizing: the CSR names no DNS identifier"


def test_names_come_back_sorted_by_spelling():
    names = [DNSName("b.example.test"), DNSName("other.test", True), DNSName("a.example.test")]
    assert check_name_set(names) == (DNSName("other.test", True), DNSName("a.example.test"),
                                     DNSName("b.example.test"))
    assert spellings(names) == ("*.other.test", "a.example.test", "b.example.test")


def test_a_name_covered_by_a_wildcard_is_refused_but_the_base_is_not():
    base_and_wildcard = [DNSName("example.test"), DNSName("example.test", True)]
    assert check_name_set(base_and_wildcard) == (DNSName("example.test", True), DNSName("example.test"))
    assert refused(check_name_set, base_and_wildcard + [DNSName("www.example.test")]) == (
        "Domain name 'www.example.test' is redundant with a wildcard domain in the same request. "
        "Remove one or the other from the certificate request.")
    # two levels down is not covered by the wildcard
    deeper = [DNSName("example.test", True), DNSName("a.b.example.test")]
    assert check_name_set(deeper) == (DNSName("example.test", True), DNSName("a.b.example.test"))


def test_only_trailing_dots_are_stripped_before_lowering():
    """An upper-case name ending in X keeps its X (only dots are stripped)."""
    assert parse_dns_name("WWW.EXAMPLE.TX.") == DNSName("www.example.tx")
    assert parse_dns_name("MAX.EXAMPLE.XX") == DNSName("max.example.xx")


def test_a_single_label_name_has_no_wildcard_parent():
    """check_name_set takes any DNSName, even one no v1 request could make."""
    assert check_name_set([DNSName("localhost"), DNSName("example.test", True)]) == (
        DNSName("example.test", True), DNSName("localhost"))
