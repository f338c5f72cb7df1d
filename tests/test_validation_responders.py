"""
The gateway's own challenge responders: the HTTP-01 resource and the
dns-01 hook runner (a real child process).
"""

import json
import os
import stat

import pytest
import pytest_twisted
from treq.testing import StubTreq

from gateway.keys.jose import dns01_txt_value
from gateway.validation.dns01 import (
    HookDNS01Responder,
    ResponderError,
    parse_host_port,
    record_name,
)
from gateway.validation.http01 import HTTP01Responder
from twisted.web import server


@pytest_twisted.ensureDeferred
async def test_http01_serves_only_tokens_being_validated():
    """
    A published token answers with its key authorization; after withdrawal,
    and for any other path, the responder answers 404.
    """
    responder = HTTP01Responder()
    client = StubTreq(responder)
    await responder.publish("a.example.test", "tok", "tok.thumb")
    response = await client.get("http://a.example.test/.well-known/acme-challenge/tok")
    assert response.code == 200
    assert await response.content() == b"tok.thumb"
    for path in ("/.well-known/acme-challenge/other", "/", "/.well-known/acme-challenge/"):
        response = await client.get("http://a.example.test" + path)
        assert response.code == 404
    await responder.withdraw("a.example.test", "tok", "tok.thumb")
    response = await client.get("http://a.example.test/.well-known/acme-challenge/tok")
    assert response.code == 404
    assert responder.tokens == ()


def write_hook(tmp_path, exit_code=0):
    """
    A hook script that appends its arguments and certbot-style variables to
    a log file, and exits with ``exit_code``.
    """
    log = tmp_path / "hook.log"
    script = tmp_path / "hook.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'printf \'{{"args": "%s", "domain": "%s", "validation": "%s"}}\\n\' '
        f'"$*" "$CERTBOT_DOMAIN" "$CERTBOT_VALIDATION" >> {log}\n'
        f"echo 'hook says no' >&2\n"
        f"exit {exit_code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), log


@pytest_twisted.ensureDeferred
async def test_hook_gets_action_domain_value_and_certbot_variables(tmp_path):
    """
    deploy and cleanup each run the hook with the action, the domain and the
    TXT value as arguments, and CERTBOT_DOMAIN / CERTBOT_VALIDATION set.
    """
    from twisted.internet import reactor

    script, log = write_hook(tmp_path)
    responder = HookDNS01Responder(reactor, f"{script} --zone test")
    value = dns01_txt_value("tok.thumb")
    await responder.publish("www.example.test", "tok", "tok.thumb")
    await responder.withdraw("www.example.test", "tok", "tok.thumb")
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [
        {"args": f"--zone test deploy www.example.test {value}", "domain": "www.example.test",
         "validation": value},
        {"args": f"--zone test cleanup www.example.test {value}", "domain": "www.example.test",
         "validation": value},
    ]


@pytest_twisted.ensureDeferred
async def test_failing_hook_is_a_responder_error_with_its_output(tmp_path):
    """
    A hook that exits non-zero raises `ResponderError` carrying its stderr.
    """
    from twisted.internet import reactor

    script, _ = write_hook(tmp_path, exit_code=3)
    responder = HookDNS01Responder(reactor, script)
    with pytest.raises(ResponderError) as raised:
        await responder.publish("www.example.test", "tok", "tok.thumb")
    assert "exited 3" in str(raised.value) and "hook says no" in str(raised.value)


@pytest_twisted.ensureDeferred
async def test_missing_hook_is_a_responder_error(tmp_path):
    """
    A hook command that does not exist fails cleanly, not with a hang.
    """
    from twisted.internet import reactor

    responder = HookDNS01Responder(reactor, os.path.join(str(tmp_path), "absent"), timeout_seconds=5)
    with pytest.raises(ResponderError):
        await responder.publish("www.example.test", "tok", "tok.thumb")


def test_record_names_and_host_ports():
    """
    TXT record names are absolute; HOST:PORT parses plain, IPv6 and
    default-port forms and refuses garbage.
    """
    assert record_name("example.test") == "_acme-challenge.example.test."
    assert parse_host_port("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_host_port("[::1]:53") == ("::1", 53)
    assert parse_host_port("ns.example.test") == ("ns.example.test", 53)
    for bad in ("", ":53", "host:port", "127.0.0.1:70000"):
        with pytest.raises(ValueError):
            parse_host_port(bad)


@pytest_twisted.ensureDeferred
async def test_http01_answer_published_by_another_process(tmp_path):
    """
    Two processes' responders on one state (two stores on one file): a
    token one of them published, the other answers from the state; once
    withdrawn, neither does.
    """
    from twisted.internet import reactor
    from twisted.web.test.requesthelper import DummyRequest

    from gateway.store.sqlite import SQLiteStore

    path = str(tmp_path / "state.sqlite3")
    first, second = [await SQLiteStore.open(path, reactor) for _ in range(2)]
    try:
        publisher = HTTP01Responder(first, reactor)
        other = HTTP01Responder(second, reactor)
        await publisher.publish("example.test", "tok-1", "tok-1.thumb")

        async def fetch(responder, token):
            request = DummyRequest([b""])
            request.path = b"/.well-known/acme-challenge/" + token.encode()
            finished = request.notifyFinish()
            body = responder.render_GET(request)
            if body is server.NOT_DONE_YET:
                await finished
                body = b"".join(request.written)
            return request.responseCode or 200, body

        assert await fetch(other, "tok-1") == (200, b"tok-1.thumb")
        assert (await fetch(other, "tok-2"))[0] == 404
        await publisher.withdraw("example.test", "tok-1", "tok-1.thumb")
        assert (await fetch(other, "tok-1"))[0] == 404
    finally:
        await first.close()
        await second.close()
