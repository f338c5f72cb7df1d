"""
`gateway.translate.profiles`: which profile an order asks for, by the
operator's rules (``[[profile-rule]]`` tables of the config file) and
``--profile``; each rule criterion on its own and together, the refusal of a
table that cannot be a rule (the operator reads its words at start-up), and
the profiles the CA does not offer, with where each was named.
"""

from __future__ import annotations

import pytest

from gateway.process.upstream_options import OptionError, profile_policy
from gateway.translate.profiles import ProfilePolicy, ProfileRule, rule_from_table

THUMB = "thumb-A"


@pytest.mark.parametrize("rule, thumbprint, user_agent, names, expected", [
    # thumbprint alone
    (ProfileRule("p", thumbprint=THUMB), THUMB, "any", ["a.test"], True),
    (ProfileRule("p", thumbprint=THUMB), "thumb-B", "any", ["a.test"], False),
    # user agent: a shell pattern over the whole User-Agent, ignoring case
    (ProfileRule("p", user_agent="CertbotACMEClient/0.*"), THUMB, "certbotacmeclient/0.31.0", [], True),
    (ProfileRule("p", user_agent="certbotacmeclient/0.*"), THUMB, "CertbotACMEClient/0.31.0", [], True),
    (ProfileRule("p", user_agent="CertbotACMEClient/0.*"), THUMB, "CertbotACMEClient/1.0", [], False),
    (ProfileRule("p", user_agent="Certbot"), THUMB, "Certbot/0.31 extra", [], False),
    # names: every name must match, ignoring case; an order of no names matches no names rule
    (ProfileRule("p", names="*.lab.example.com"), THUMB, "ua", ["A.Lab.Example.com", "b.lab.example.com"], True),
    (ProfileRule("p", names="*.LAB.example.com"), THUMB, "ua", ["a.lab.example.com"], True),
    (ProfileRule("p", names="*.lab.example.com"), THUMB, "ua", ["a.lab.example.com", "www.example.com"], False),
    (ProfileRule("p", names="*.lab.example.com"), THUMB, "ua", [], False),
    # every criterion given must hold
    (ProfileRule("p", thumbprint=THUMB, user_agent="acme.sh*"), THUMB, "acme.sh/2.8", ["x.test"], True),
    (ProfileRule("p", thumbprint=THUMB, user_agent="acme.sh*"), "thumb-B", "acme.sh/2.8", ["x.test"], False),
    (ProfileRule("p", thumbprint=THUMB, user_agent="acme.sh*"), THUMB, "certbot", ["x.test"], False),
    (ProfileRule("p", user_agent="acme.sh*", names="*.test"), THUMB, "acme.sh/2.8", ["x.example"], False),
    # a rule of no criteria (never made from a table) matches everything
    (ProfileRule("p"), THUMB, "ua", [], True),
])
def test_a_rule_matches_when_every_criterion_given_holds(rule, thumbprint, user_agent, names, expected):
    assert rule.matches(thumbprint, user_agent, names) is expected


def test_the_first_matching_rule_wins_then_the_default():
    policy = ProfilePolicy(default="classic", rules=(
        ProfileRule("shortlived", user_agent="*short*"),
        ProfileRule("tlsserver", thumbprint=THUMB),
        ProfileRule("never", thumbprint=THUMB),
    ))
    assert policy.choose(THUMB, "short-client", ["a.test"]) == "shortlived"
    assert policy.choose(THUMB, "other", ["a.test"]) == "tlsserver"
    assert policy.choose("thumb-B", "other", ["a.test"]) == "classic"
    assert ProfilePolicy().choose(THUMB, "other", ["a.test"]) is None
    by_names = ProfilePolicy(default="classic", rules=(ProfileRule("shortlived", names="*.lab.test"),))
    assert by_names.choose(THUMB, "any", ["a.lab.test", "b.lab.test"]) == "shortlived"
    assert by_names.choose(THUMB, "any", ["a.lab.test", "www.test"]) == "classic"


def test_a_rule_from_a_table_keeps_each_criterion_under_its_own_name():
    rule = rule_from_table({"profile": "shortlived", "thumbprint": THUMB,
                            "user-agent": "acme.sh*", "names": "*.test"})
    assert rule == ProfileRule(profile="shortlived", thumbprint=THUMB, user_agent="acme.sh*",
                               names="*.test")
    assert rule_from_table({"profile": "classic", "names": "*.test"}) == ProfileRule(
        profile="classic", names="*.test")


@pytest.mark.parametrize("table, message", [
    ({"profile": "p", "names": "*.test", "colour": "red", "agent": "x"},
     "unknown key(s) agent, colour (a rule has profile, thumbprint, user-agent, names)"),
    ({"profile": "p", "user_agent": "x"},
     "unknown key(s) user_agent (a rule has profile, thumbprint, user-agent, names)"),
    ({"profile": "p", "names": 3}, "names must be a non-empty string"),
    ({"profile": "p", "thumbprint": "  "}, "thumbprint must be a non-empty string"),
    ({"profile": "", "thumbprint": THUMB}, "profile must be a non-empty string"),
    ({"profile": "p", "user-agent": ["a"]}, "user-agent must be a non-empty string"),
    ({"thumbprint": THUMB}, "a rule needs a profile"),
    ({"profile": "p"}, "a rule needs at least one of thumbprint, user-agent, names"),
])
def test_a_table_that_is_no_rule_is_refused_with_what_is_wrong(table, message):
    with pytest.raises(ValueError) as raised:
        rule_from_table(table)
    assert str(raised.value) == message


def test_the_operator_reads_which_rule_is_wrong():
    with pytest.raises(OptionError) as raised:
        profile_policy("classic", [{"profile": "a", "names": "*.test"}, {"profile": "b"}])
    assert "rule 2: a rule needs at least one of thumbprint, user-agent, names" in str(raised.value)


def test_describe_spells_the_rule_as_the_config_file_does():
    assert ProfileRule("shortlived", thumbprint=THUMB, user_agent="acme.sh*", names="*.test").describe() == (
        "thumbprint = 'thumb-A', user-agent = 'acme.sh*', names = '*.test', profile = 'shortlived'")
    assert ProfileRule("classic", names="*.test").describe() == "names = '*.test', profile = 'classic'"


def test_unknown_lists_every_profile_the_ca_does_not_offer_in_order():
    policy = ProfilePolicy(default="classic", rules=(
        ProfileRule("shortlived", user_agent="a*"),
        ProfileRule("tlsserver", names="*.test"),
        ProfileRule("gone", thumbprint=THUMB),
    ))
    assert policy.unknown(["classic", "tlsserver"]) == [
        ("profile-rule 1 (user-agent = 'a*', profile = 'shortlived')", "shortlived"),
        ("profile-rule 3 (thumbprint = 'thumb-A', profile = 'gone')", "gone"),
    ]
    assert policy.unknown(iter(["shortlived", "tlsserver", "gone"])) == [("--profile", "classic")]
    assert policy.unknown(["classic", "shortlived", "tlsserver", "gone"]) == []
    assert ProfilePolicy().unknown([]) == []
