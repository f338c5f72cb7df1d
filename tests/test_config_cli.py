"""
Configuration layering (`gateway.process.config`) and the operational commands of
the command line: every ``serve`` flag from the command line, the
environment or a TOML file, in that order of precedence; start-up failures
that name the flag and where its value came from; ``report`` and
``healthcheck``.
"""

from __future__ import annotations

import json
import os

import pytest
import pytest_twisted
from twisted.internet import reactor

from gateway.process import cli
from gateway.process.config import Layers, config_path, env_name, load_config_file, use_layers
from gateway.operations.probe import url_for_endpoint
from gateway.store import ClientVisit
from gateway.store.sqlite import SQLiteStore
from tests.support.stack import free_port


def parse(argv, environ=None, file_values=None, file_path="gateway.toml"):
    """
    Parse ``argv`` as `cli.main` does, against the given environment and
    config file values.
    """
    use_layers(Layers(environ=environ or {}, file_values=file_values or {}, file_path=file_path))
    return cli.build_parser().parse_args(argv)


def serve_actions():
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    serve = commands.choices["serve"]
    return serve, [a for a in serve._actions if a.option_strings and a.dest != "help"]


def test_precedence_command_line_environment_file_default():
    """
    The command line wins over the environment, which wins over the file,
    which wins over the default.
    """
    base = ["serve", "--upstream", "https://ca.test/dir", "--keys", "/k"]
    assert parse(base).log_format == "text"
    assert parse(base, file_values={"log-format": "json"}).log_format == "json"
    assert parse(base, environ={"ACME_GATEWAY_LOG_FORMAT": "xml"},
                 file_values={"log-format": "json"}).log_format == "xml"
    assert parse(base + ["--log-format", "text"], environ={"ACME_GATEWAY_LOG_FORMAT": "xml"},
                 file_values={"log-format": "json"}).log_format == "text"


def test_required_flags_may_come_from_file_or_environment():
    """
    ``--upstream`` and ``--keys`` are required unless the environment or
    the file gives them.
    """
    args = parse(["serve"], environ={"ACME_GATEWAY_KEYS": "/k"},
                 file_values={"upstream": "https://ca.test/dir"})
    assert (args.upstream, args.keys) == ("https://ca.test/dir", "/k")


def test_every_serve_flag_is_documented_with_its_variable_and_key():
    """
    ``serve --help`` documents every flag, its variable and its config key.
    """
    serve, actions = serve_actions()
    text = serve.format_help().replace("\n", " ").replace("  ", " ")
    text = " ".join(text.split())
    for action in actions:
        flag = action.option_strings[-1]
        assert action.help and len(action.help) > 20, flag
        assert flag in text
        assert env_name(flag) in text.replace("- ", "-").replace("_ ", "_"), flag
    assert "command line wins over the environment" in text


def test_config_file_keys(tmp_path):
    """
    Keys are flag names (dashes or underscores); booleans and numbers
    become the text a flag would carry; other types, bad TOML and
    unreadable files are errors naming the file.
    """
    path = tmp_path / "g.toml"
    path.write_text('upstream = "https://ca.test/dir"\nagree_to_terms = false\nrequest-timeout = 12.5\n')
    assert load_config_file(str(path)) == {
        "upstream": "https://ca.test/dir", "agree-to-terms": "false", "request-timeout": "12.5"}
    path.write_text("keys = ['a', 'b']\n")
    with pytest.raises(ValueError, match="keys: expected a string"):
        load_config_file(str(path))
    path.write_text("keys = [\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config_file(str(path))
    with pytest.raises(ValueError, match="cannot read"):
        load_config_file(str(tmp_path / "absent.toml"))


def test_config_path_is_found_before_parsing():
    """
    ``--config FILE``, ``--config=FILE`` or ``ACME_GATEWAY_CONFIG``.
    """
    assert config_path(["serve", "--config", "a.toml"], {}) == "a.toml"
    assert config_path(["serve", "--config=b.toml"], {"ACME_GATEWAY_CONFIG": "c.toml"}) == "b.toml"
    assert config_path(["serve"], {"ACME_GATEWAY_CONFIG": "c.toml"}) == "c.toml"
    assert config_path(["serve"], {}) is None


def fail_message(capsys, argv, monkeypatch=None, environ=None) -> str:
    """
    Run ``acme-gateway argv`` expecting a start-up failure; its message.
    """
    if monkeypatch is not None:
        for name in [n for n in os.environ if n.startswith("ACME_GATEWAY_")]:
            monkeypatch.delenv(name)
        for name, value in (environ or {}).items():
            monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("flag, value, fragment", [
    ("--admin-listen", "tcp:nope", "not a server endpoint"),
    ("--listen", "carrier-pigeon:4000", "not a server endpoint"),
    ("--log-format", "xml", "expected one of text, json"),
    ("--log-level", "loud", "expected one of debug"),
    ("--migrated-after", "soon", "expected a duration"),
    ("--ready-max-age", "-1", "expected a number of seconds"),
    ("--tls-sni-check-port", "https", "is not a port number"),
    ("--tls-sni-check-port", "70000", "is not a port number (1-65535)"),
    ("--tls-sni-check-resolver", "dns.example:53", "is not an IP address"),
    ("--tls-sni-check-resolver", "127.0.0.1", "is not HOST:PORT"),
])
def test_bad_values_name_the_flag(tmp_path, capsys, monkeypatch, flag, value, fragment):
    """
    A bad value of each operations flag fails at start-up naming the flag,
    whether it came from the command line, the environment or the file.
    """
    (tmp_path / "keys").mkdir()
    base = ["serve", "--upstream", "https://ca.test/dir", "--keys", str(tmp_path / "keys"),
            "--state", str(tmp_path / "state.sqlite3")]
    message = fail_message(capsys, base + [flag, value], monkeypatch)
    assert f"error: {flag}: " in message and fragment in message
    message = fail_message(capsys, base, monkeypatch, {env_name(flag): value})
    assert f"error: {flag} (from environment variable {env_name(flag)}): " in message
    config = tmp_path / "gateway.toml"
    config.write_text(f'{flag[2:]} = "{value}"\n')
    message = fail_message(capsys, base + ["--config", str(config)], monkeypatch)
    assert f"error: {flag} (from {flag[2:]} in {config}): " in message and fragment in message


def test_unknown_config_keys_fail(tmp_path, capsys, monkeypatch):
    """
    A config file key that no flag has is an error naming it (a typo must
    not be silently ignored).
    """
    config = tmp_path / "gateway.toml"
    config.write_text('admin_listn = "tcp:9180"\n')
    message = fail_message(capsys, ["serve", "--config", str(config)], monkeypatch)
    assert "no flag is called admin-listn" in message


@pytest_twisted.ensureDeferred
async def test_report_command(tmp_path, capsys, monkeypatch):
    """
    ``acme-gateway report`` prints the clients recorded in the state file,
    as text or JSON, with ``--migrated-after`` deciding who migrated.
    """
    for name in [n for n in os.environ if n.startswith("ACME_GATEWAY_")]:
        monkeypatch.delenv(name)
    state = str(tmp_path / "state.sqlite3")
    store = await SQLiteStore.open(state, reactor)
    await store.record_client(ClientVisit("CertbotACMEClient/1.32.0", "127.0.0.1",
                                          "2026-01-01T00:00:00Z", "tp-1", ("a.example.test",)))
    await store.close()
    assert cli.main(["report", "--state", state]) == 0
    text = capsys.readouterr().out
    assert "MIGRATED AWAY  127.0.0.1  CertbotACMEClient/1.32.0" in text
    assert cli.main(["report", "--state", state, "--json", "--migrated-after", "100000d"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["active"] == 1
    assert data["clients"][0]["thumbprints"] == ["tp-1"]


def test_healthcheck_endpoint_urls():
    """
    The URL is derived from the admin endpoint; every-interface endpoints
    are asked on loopback.
    """
    assert url_for_endpoint("tcp:9180") == "http://127.0.0.1:9180/healthz"
    assert url_for_endpoint("tcp:port=9180:interface=192.0.2.1", "/readyz") == \
        "http://192.0.2.1:9180/readyz"
    assert url_for_endpoint(r"tcp6:9180:interface=\:\:1") == "http://[::1]:9180/healthz"
    with pytest.raises(ValueError):
        url_for_endpoint("unix:/run/admin.sock")


def test_healthcheck_fails_when_nothing_answers(capsys, monkeypatch):
    """
    With nothing listening, ``healthcheck`` exits 1 and says what it tried.
    """
    monkeypatch.setenv("ACME_GATEWAY_ADMIN_LISTEN", f"tcp:{free_port()}:interface=127.0.0.1")
    assert cli.main(["healthcheck", "--timeout", "2"]) == 1
    assert "cannot reach http://127.0.0.1:" in capsys.readouterr().err


def test_tls_sni_check_flags_reach_the_gateway(tmp_path):
    """
    ``--tls-sni-check-port`` and ``--tls-sni-check-resolver`` from the
    command line, the environment or the file reach the tls-sni-01
    checker, which the gateway makes only when it has a means to prove
    names upstream (without one, tls-sni-01 is not offered).
    """
    from gateway.keys.keystore import KeyStore
    from gateway.process.wiring import build_gateway
    from gateway.store.sqlite import SQLiteStore as Store

    (tmp_path / "keys").mkdir()
    base = ["serve", "--upstream", "https://ca.test/dir", "--keys", str(tmp_path / "keys"),
            "--state", str(tmp_path / "state.sqlite3")]
    defaults = cli.serve_config(cli.build_parser(), parse(base))
    assert (defaults.tls_sni_check_port, defaults.tls_sni_check_resolver) == (443, None)
    for args in (
        parse(base + ["--tls-sni-check-port", "8443", "--tls-sni-check-resolver", "127.0.0.1:5353"]),
        parse(base, environ={"ACME_GATEWAY_TLS_SNI_CHECK_PORT": "8443",
                             "ACME_GATEWAY_TLS_SNI_CHECK_RESOLVER": "127.0.0.1:5353"}),
        parse(base, file_values={"tls-sni-check-port": "8443",
                                 "tls-sni-check-resolver": "127.0.0.1:5353"}),
    ):
        config = cli.serve_config(cli.build_parser(), args)
        assert (config.tls_sni_check_port, config.tls_sni_check_resolver) == (8443, ("127.0.0.1", 5353))

    def validators_of(config):
        store = Store.inline(upstream=config.upstream)
        gateway = build_gateway(config, clock=reactor, keys=KeyStore.from_keys([]), store=store,
                                http_for=lambda url: None)
        return gateway.context.validators

    without_means = validators_of(config)
    assert not without_means.offers_tls_sni01
    with_means = validators_of(cli.serve_config(cli.build_parser(), parse(
        base + ["--http01-listen", "tcp:0:interface=127.0.0.1", "--tls-sni-check-port", "8443",
                "--tls-sni-check-resolver", "[::1]:53"])))
    assert with_means.offers_tls_sni01
    assert (with_means.tls_sni01.port, with_means.tls_sni01.resolver_address) == (8443, ("::1", 53))
