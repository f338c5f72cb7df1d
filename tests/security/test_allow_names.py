"""
The names policy, ``--allow-names PATTERN…`` (issue 18 item 7).

With ``--http01-listen`` or a dns-01 means the gateway validates names
itself, so any key in the store got certificates for any name routed to
the gateway — in managed mode any key at all, names another account holds
included.  ``--allow-names`` bounds what any account may get: exact names
and ``*.suffix`` patterns; any other name is a v1 ``unauthorized`` before
an account is bound or an order made.  Managed mode refuses to start
without it, saying why.
"""

from __future__ import annotations

import pytest

from gateway.keys.jose import b64url
from gateway.process import cli
from gateway.process.config import Layers, use_layers
from gateway.process.testing import build_test_gateway
from gateway.translate.context import Policy
from gateway.translate.policy import AllowedNames, parse_dns_name
from tests.security.harness import KEY, Harness, assert_v1_problem, make_csr
from tests.security.test_managed_on_demand import fresh_key, made

PATTERNS = ("www.example.test", "*.hosted.example.test")


def names_policy(patterns=PATTERNS) -> Policy:
    return Policy(allowed_names=AllowedNames.parse(patterns))


@pytest.mark.parametrize("name, allowed", [
    ("www.example.test", True),
    ("WWW.Example.Test", True),
    ("example.test", False),
    ("mail.example.test", False),
    ("a.hosted.example.test", True),
    ("a.b.hosted.example.test", True),
    ("*.hosted.example.test", True),
    ("*.a.hosted.example.test", True),
    ("hosted.example.test", False),
    ("evilhosted.example.test", False),
    ("*.example.test", False),
    ("www.example.test.evil.test", False),
])
def test_patterns(name, allowed):
    """
    An exact name allows itself only; ``*.suffix`` every name and wildcard
    below the suffix, never the suffix itself or a name that merely ends
    in its letters.
    """
    policy = AllowedNames.parse(PATTERNS)
    assert policy.allows(parse_dns_name(name, allow_wildcard=True)) is allowed


@pytest.mark.parametrize("pattern", ["*", "*.com", "www.*.example.test", "exa mple.test", ""])
def test_bad_patterns(pattern):
    with pytest.raises(ValueError):
        AllowedNames.parse([pattern])


@pytest.fixture
def harness():
    return Harness(build_test_gateway([KEY], policy=names_policy()))


def test_new_authz_outside_the_policy_refused_before_any_order(harness):
    harness.register()
    before = harness.snapshot()
    reply = harness.new_authz("mail.example.test")
    assert_v1_problem(reply, 403, "unauthorized", "mail.example.test", "--allow-names")
    after = harness.snapshot()
    assert after["upstream"] == before["upstream"]
    assert after["store"]["orders"] == before["store"]["orders"]
    assert after["store"]["authorizations"] == before["store"]["authorizations"]
    assert harness.new_authz("a.hosted.example.test").status == 201


def test_new_cert_with_one_name_outside_refused_before_any_order(harness):
    harness.register()
    harness.authorize("www.example.test")
    orders = harness.gateway.ca.counts["newOrder"]
    reply = harness.post("/acme/new-cert", {
        "resource": "new-cert",
        "csr": b64url(make_csr(["www.example.test", "other.example.org"]))})
    assert_v1_problem(reply, 403, "unauthorized", "other.example.org")
    assert "www.example.test," not in reply.json()["detail"]
    assert harness.gateway.ca.counts["newOrder"] == orders
    reply = harness.post("/acme/new-cert", {"resource": "new-cert",
                                            "csr": b64url(make_csr(["www.example.test"]))})
    assert reply.status == 201, reply.body


def test_without_the_flag_any_name(tmp_path):
    harness = Harness(build_test_gateway([KEY]))
    harness.register()
    assert harness.new_authz("mail.example.test").status == 201


def test_managed_fresh_key_outside_the_policy_makes_nothing(tmp_path):
    """
    In managed mode a fresh key asking for a name outside the policy gets
    no account, key file or order: the names are checked first.
    """
    directory = str(tmp_path / "managed")
    harness = Harness(build_test_gateway([KEY], policy=names_policy(), unknown_keys="managed",
                                         managed_keys=directory))
    harness.state = {"directory": directory}
    before = made(harness)
    reply = harness.new_authz("victim.example.org", key=fresh_key())
    assert_v1_problem(reply, 403, "unauthorized", "victim.example.org")
    assert made(harness) == before
    assert harness.gateway.ca.counts["newOrder"] == 0


# -- the flag ---------------------------------------------------------------------------


def _serve_config(argv, environ=None):
    use_layers(Layers(environ=environ or {}))
    parser = cli.build_parser()
    return cli.serve_config(parser, parser.parse_args(argv))


@pytest.fixture
def serve_args(tmp_path):
    (tmp_path / "keys").mkdir()
    return ["serve", "--upstream", "https://ca.test/dir", "--keys", str(tmp_path / "keys"),
            "--state", str(tmp_path / "state.sqlite3")]


def test_flag_and_variable(serve_args):
    config = _serve_config(serve_args + ["--allow-names", "www.example.test",
                                         "*.Hosted.example.test"])
    assert config.allow_names == ("www.example.test", "*.hosted.example.test")
    config = _serve_config(serve_args, {"ACME_GATEWAY_ALLOW_NAMES": "a.example.test, *.b.test"})
    assert config.allow_names == ("a.example.test", "*.b.test")
    assert _serve_config(serve_args).allow_names == ()


def test_bad_pattern_fails_start_up(serve_args, capsys):
    with pytest.raises(SystemExit):
        _serve_config(serve_args + ["--allow-names", "*.com"])
    assert "--allow-names: '*.com' is not a DNS name" in capsys.readouterr().err


def test_managed_mode_requires_it(serve_args, capsys):
    """
    ``--unknown-keys managed`` without ``--allow-names`` does not start,
    and says why; with it, it does.
    """
    managed = serve_args + ["--unknown-keys", "managed",
                            "--http01-listen", "tcp:0:interface=127.0.0.1"]
    with pytest.raises(SystemExit):
        _serve_config(managed)
    error = capsys.readouterr().err
    assert "--unknown-keys: managed mode needs --allow-names" in error
    assert "any name routed to the gateway" in error
    config = _serve_config(managed + ["--allow-names", "*.example.test"])
    assert config.unknown_keys == "managed" and config.allow_names == ("*.example.test",)
