"""
`gateway.translate.inventory`, the renewal inventory's rules, at their
edges: which of an account's certificates a ``new-authz`` renews (soonest
due among the valid, else the one that expired last; never another
account's or an orphan), the certificate for exactly a set of names, the
ARI certID of a certificate without an issuer key id, and when a suggested
window opened early (half the lifetime; an hour's slack before the first
window).
"""

from __future__ import annotations

from gateway.store import Certificate, RenewalWindow
from gateway.store.records import format_timestamp, timestamp_instant
from gateway.translate.inventory import ari_cert_id, covers, exactly, opened_early, renewal_target

DAY = 86400.0
NOW = timestamp_instant("2026-06-01T00:00:00Z").timestamp()


def at(seconds: float) -> str:
    return format_timestamp(seconds)


def certificate(id, names=("a.test",), account_id=1, not_before=None, not_after=None,
                orphaned=False, authority_key_id="0a0b", serial="0102"):
    return Certificate(
        id=id, account_id=account_id, order_id=None, serial=serial, leaf_der=b"",
        issuer_ids=(), upstream_url="", issued_at="2026-01-01T00:00:00Z", orphaned=orphaned,
        names=tuple(names), authority_key_id=authority_key_id,
        not_before=not_before, not_after=not_after)


def window(start=None, first=None):
    return RenewalWindow(id="c", account_id=1, cert_id="x.y", window_start=start, first_start=first)


def test_no_issuer_key_id_no_ari_cert_id():
    assert ari_cert_id(certificate("c", authority_key_id=None)) is None
    assert ari_cert_id(certificate("c", authority_key_id="")) is None
    assert ari_cert_id(certificate("c", authority_key_id="01", serial="ff")) == "AQ.AP8"


def test_covers_reads_the_name_ignoring_case():
    held = certificate("c", names=("*.example.test", "a.test"))
    assert covers(held, "A.TEST")
    assert covers(held, "*.Example.test")
    assert not covers(held, "b.example.test")


def test_the_soonest_due_valid_certificate_is_renewed():
    later = certificate("later", not_after=at(NOW + 60 * DAY))
    sooner = certificate("sooner", not_after=at(NOW + 10 * DAY))
    expired = certificate("expired", not_after=at(NOW - DAY))
    assert renewal_target([later, expired, sooner], 1, "A.test", NOW) is sooner
    assert renewal_target([sooner, later], 1, "a.test", NOW) is sooner


def test_a_certificate_expiring_now_is_no_longer_valid():
    ending = certificate("ending", not_after=at(NOW))
    older = certificate("older", not_after=at(NOW - 5 * DAY))
    assert renewal_target([older, ending], 1, "a.test", NOW) is ending
    still = certificate("still", not_after=at(NOW + 1))
    assert renewal_target([ending, still], 1, "a.test", NOW) is still


def test_without_a_valid_one_the_last_to_expire_is_renewed():
    first = certificate("first", not_after=at(NOW - 30 * DAY))
    last = certificate("last", not_after=at(NOW - DAY))
    unknown = certificate("unknown")
    assert renewal_target([first, last, unknown], 1, "a.test", NOW) is last
    assert renewal_target([last, first], 1, "a.test", NOW) is last


def test_other_accounts_orphans_and_other_names_are_not_renewed():
    mine = certificate("mine", not_after=at(NOW + 50 * DAY))
    theirs = certificate("theirs", account_id=2, not_after=at(NOW + DAY))
    orphan = certificate("orphan", orphaned=True, not_after=at(NOW + DAY))
    other_name = certificate("other", names=("b.test",), not_after=at(NOW + DAY))
    assert renewal_target([theirs, orphan, other_name, mine], 1, "a.test", NOW) is mine
    assert renewal_target([theirs, orphan, other_name], 1, "a.test", NOW) is None
    assert renewal_target([], 1, "a.test", NOW) is None


def test_exactly_the_names_of_a_certificate_of_the_account():
    pair = certificate("pair", names=("a.test", "b.test"))
    theirs = certificate("theirs", names=("a.test", "b.test"), account_id=2)
    orphan = certificate("orphan", names=("a.test", "b.test"), orphaned=True)
    single = certificate("single", names=("a.test",))
    assert exactly([theirs, orphan, single, pair], 1, ["B.test", "a.test", "b.TEST"]) is pair
    assert exactly([theirs, orphan, single, pair], 1, ["a.test"]) is single
    assert exactly([theirs, orphan], 1, ["a.test", "b.test"]) is None
    assert exactly([pair], 1, ["a.test", "b.test", "c.test"]) is None


def test_a_window_before_half_the_lifetime_opened_early():
    begin, end = NOW, NOW + 90 * DAY
    held = certificate("c", not_before=at(begin), not_after=at(end))
    assert opened_early(window(at(begin + 30 * DAY)), held)
    assert opened_early(window(at(begin + 45 * DAY - 1)), held)
    assert not opened_early(window(at(begin + 45 * DAY)), held)
    assert not opened_early(window(at(begin + 60 * DAY)), held)


def test_a_window_without_a_start_or_a_lifetime_says_nothing():
    held = certificate("c", not_before=at(NOW), not_after=at(NOW + 90 * DAY))
    assert not opened_early(window(None, first=at(NOW + 60 * DAY)), held)
    assert not opened_early(window(at(NOW + DAY)), certificate("c", not_after=at(NOW + 90 * DAY)))
    assert not opened_early(window(at(NOW + DAY)), certificate("c", not_before=at(NOW)))


def test_a_window_that_moved_more_than_an_hour_earlier_opened_early():
    held = certificate("c", not_before=at(NOW), not_after=at(NOW + 90 * DAY))
    first = NOW + 60 * DAY
    assert opened_early(window(at(first - 3601), first=at(first)), held)
    assert not opened_early(window(at(first - 3600), first=at(first)), held)
    assert not opened_early(window(at(first + DAY), first=at(first)), held)
    # without a lifetime, only the move counts
    no_lifetime = certificate("c")
    assert opened_early(window(at(first - 2 * 3600), first=at(first)), no_lifetime)
    assert not opened_early(window(at(first - 10), first=at(first)), no_lifetime)


def test_a_certificate_without_an_expiry_ranks_below_every_dated_one():
    """Not even one that expired at the epoch's first second is passed over for it."""
    undated = certificate("undated")
    epoch = certificate("epoch", not_after="1970-01-01T00:00:00Z")
    assert renewal_target([epoch, undated], 1, "a.test", NOW) is epoch
    assert renewal_target([undated], 1, "a.test", NOW) is undated
