"""
The operator's first minutes with ``acme-gateway serve``: a wrong
``--upstream`` stops start-up with the fix, an upstream that is not there
yet does not (the gateway serves and keeps asking), state and listener
errors name the flag and the path, and a key store with nothing usable
refuses to start unless managed mode serves unknown keys.

The upstreams are real servers on loopback (a plain web page, an ACME v1
directory, a TLS server whose certificate the gateway does not trust or
that names another host); only the host name that does not resolve is
built by hand, since a test may not ask a resolver outside loopback.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, reactor, ssl
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.task import deferLater
from twisted.web import resource, server

from gateway.process import cli
from gateway.process import serve
from gateway.process.wiring import ServeConfig
from gateway.process.config import Layers, use_layers
from gateway.process.devstack import make_tls_certificates
from gateway.keys.jose import AccountKey
from gateway.keys.keystore import KeyStore
from gateway.upstream.errors import UpstreamProblem, UpstreamProtocolError, UpstreamUnavailable
from gateway.upstream.startup import diagnose
from tests.support.gateway_process import _child_env, gateway_command
from tests.support.stack import free_port

V2_DIRECTORY = {"newNonce": "http://127.0.0.1/n", "newAccount": "http://127.0.0.1/a",
                "newOrder": "http://127.0.0.1/o"}
V1_DIRECTORY = {"new-reg": "http://127.0.0.1/acme/new-reg", "new-authz": "http://127.0.0.1/acme/new-authz"}


class Page(resource.Resource):
    """
    One answer for every path: a status, a content type and a body.
    """

    isLeaf = True

    def __init__(self, status=200, content_type=b"text/html", body=b"<html><body>It works!</body></html>"):
        super().__init__()
        self.status, self.content_type, self.body = status, content_type, body

    def render_GET(self, request):
        request.setResponseCode(self.status)
        request.setHeader(b"Content-Type", self.content_type)
        return self.body


def json_page(document) -> Page:
    return Page(200, b"application/json", json.dumps(document).encode())


def self_signed(name: str, directory) -> tuple:
    """
    A self-signed CA certificate naming only ``name``, and its key: a TLS
    server whose certificate is valid (given as the bundle) but for another
    host than the one the gateway dials.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    bundle = os.path.join(str(directory), f"{name}.pem")
    with open(bundle, "wb") as f:
        f.write(cert_pem)
    return cert_pem + key_pem, bundle


def listen_tls(site, pem: bytes):
    options = ssl.PrivateCertificate.loadPEM(pem).options()
    return reactor.listenSSL(0, site, options, interface="127.0.0.1")


def one_key() -> KeyStore:
    return KeyStore.from_keys([AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))])


def config_for(tmp_path, upstream: str, **changes) -> ServeConfig:
    settings = dict(
        upstream=upstream, keys=str(tmp_path), state=str(tmp_path / "state.sqlite3"),
        listen="tcp:0:interface=127.0.0.1", admin_listen="tcp:0:interface=127.0.0.1",
        request_timeout=5,
    )
    settings.update(changes)
    return ServeConfig(**settings)


async def start_fails(config, keys=None) -> serve.StartError:
    """
    Start a gateway that must refuse to start; its reason, once every
    listener it opened is closed again (the ports are free).
    """
    try:
        running = await serve.start(reactor, config, keys or one_key())
    except serve.StartError as error:
        return error
    await running.stop()
    raise AssertionError(f"the gateway started with {config.upstream}")


# --------------------------------------------------------------------------
# reachable but wrong: refuse to start, with the fix
# --------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_a_web_page_is_not_an_acme_directory(tmp_path):
    """
    A URL that answers 200 with a web page (a CA's home page, a typo'd
    path behind a catch-all) stops start-up: "is this an ACME v2 directory
    URL?".
    """
    port = reactor.listenTCP(0, server.Site(Page()), interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}/"
    try:
        error = await start_fails(config_for(tmp_path, url))
    finally:
        await port.stopListening()
    assert error.flag == "--upstream" and error.value == url
    assert "answered 200 with a body that is not JSON" in error.reason
    assert "is this an ACME v2 directory URL?" in error.reason


@pytest.mark.parametrize("page, expected", [
    (json_page(V1_DIRECTORY), "is an ACME v1 directory (new-reg, no newNonce): give the CA's ACME v2 directory URL"),
    (json_page({"hello": "world"}), "has no valid 'newNonce': is this an ACME v2 directory URL?"),
    (Page(404, b"text/plain", b"not found"), "answered 404: is this an ACME v2 directory URL?"),
])
@pytest_twisted.ensureDeferred
async def test_other_wrong_answers(tmp_path, page, expected):
    """
    An ACME v1 directory (the old CA's, or another gateway's), JSON that is
    no directory, and a 404 each stop start-up, saying which it was.
    """
    port = reactor.listenTCP(0, server.Site(page), interface="127.0.0.1")
    try:
        error = await start_fails(config_for(tmp_path, f"http://127.0.0.1:{port.getHost().port}/dir"))
    finally:
        await port.stopListening()
    assert expected in error.reason, error.reason


@pytest_twisted.ensureDeferred
async def test_an_untrusted_certificate_asks_for_the_ca_bundle(tmp_path):
    """
    A TLS server whose certificate the system does not trust (a private CA,
    Pebble) stops start-up with the fix: give ``--upstream-ca-bundle``; with
    a bundle of another CA, it says that bundle does not trust it.
    """
    tls = make_tls_certificates(str(tmp_path / "tls"))
    other = make_tls_certificates(str(tmp_path / "other"))
    with open(tls["cert"], "rb") as cert, open(tls["key"], "rb") as key:
        port = listen_tls(server.Site(json_page(V2_DIRECTORY)), cert.read() + key.read())
    url = f"https://127.0.0.1:{port.getHost().port}/dir"
    try:
        error = await start_fails(config_for(tmp_path, url))
        assert error.reason.startswith("the CA's certificate is not trusted: give --upstream-ca-bundle")
        error = await start_fails(config_for(tmp_path, url, upstream_ca_bundle=other["ca"]))
        assert f"not trusted by --upstream-ca-bundle {other['ca']}" in error.reason
        # the right bundle: it starts
        running = await serve.start(reactor, config_for(tmp_path, url, upstream_ca_bundle=tls["ca"]),
                                      one_key())
        await running.stop()
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_certificate_for_another_host(tmp_path):
    """
    A certificate that chains to the bundle but names another host stops
    start-up, naming the host the URL gave.
    """
    pem, bundle = self_signed("ca.example.test", tmp_path)
    port = listen_tls(server.Site(json_page(V2_DIRECTORY)), pem)
    try:
        error = await start_fails(config_for(
            tmp_path, f"https://127.0.0.1:{port.getHost().port}/dir", upstream_ca_bundle=bundle))
    finally:
        await port.stopListening()
    assert error.reason.startswith("the CA's certificate is not valid for 127.0.0.1")


# --------------------------------------------------------------------------
# not reachable (yet): start, serve, keep asking
# --------------------------------------------------------------------------

async def _until(predicate, what: str, seconds: float = 30.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"never: {what}")


@pytest_twisted.ensureDeferred
async def test_an_upstream_not_there_yet_is_asked_until_it_answers(tmp_path):
    """
    Nothing listens at the upstream's port: the gateway starts anyway, its
    sidecar readiness holds, and once a CA listens there it finds it (the
    upstream check of readiness then passes without asking again).
    """
    upstream_port = free_port()
    url = f"http://127.0.0.1:{upstream_port}/dir"
    running = await serve.start(reactor, config_for(tmp_path, url), one_key())
    ca = None
    try:
        assert running.upstream_watch is not None
        assert all(r.ok for r in await running.readiness.check())
        upstream_check = await running.readiness.check_upstream()
        assert not upstream_check.ok and "Connection was refused" in upstream_check.detail
        ca = reactor.listenTCP(upstream_port, server.Site(json_page(V2_DIRECTORY)), interface="127.0.0.1")
        await _until(lambda: running.upstream_watch.called, "the gateway asked again")
        running.readiness.max_age = 3600
        upstream_check = await running.readiness.check_upstream()
        assert upstream_check.ok and upstream_check.detail.startswith("directory answered")
    finally:
        await running.stop()
        if ca is not None:
            await ca.stopListening()


@pytest_twisted.ensureDeferred
async def test_an_upstream_that_turns_out_wrong_later_is_fatal(tmp_path):
    """
    When the upstream that was not there at start-up answers with a web
    page, that is as fatal as at start-up: ``on_fatal`` gets the reason.
    """
    upstream_port = free_port()
    fatal = defer.Deferred()
    running = await serve.start(reactor, config_for(tmp_path, f"http://127.0.0.1:{upstream_port}/"),
                                  one_key(), on_fatal=fatal.callback)
    page = reactor.listenTCP(upstream_port, server.Site(Page()), interface="127.0.0.1")
    try:
        error = await fatal
    finally:
        await running.stop()
        await page.stopListening()
    assert error.flag == "--upstream" and "is this an ACME v2 directory URL?" in error.reason


def test_diagnose_tells_unreachable_from_wrong():
    """
    Refused connections, timeouts, 5xx and a host that does not resolve are
    "not reachable (yet)"; the unresolved host is named, with the hint to
    check its spelling.  Anything that answered and is not a v2 directory
    is wrong.
    """
    url = "https://ca.example.test/dir"

    def caused_by(cause):
        try:
            try:
                raise cause
            except Exception:
                raise UpstreamUnavailable(f"cannot reach {url}: {cause}", url=url)
        except UpstreamUnavailable as error:
            return error

    refused = diagnose(caused_by(ConnectionRefusedError()), url)
    assert not refused.wrong and "cannot reach" in refused.reason
    unresolved = diagnose(caused_by(DNSLookupError("no results for hostname lookup: ca.example.test")), url)
    assert not unresolved.wrong
    assert "the host name ca.example.test does not resolve (yet): check its spelling" in unresolved.reason
    timeout = diagnose(UpstreamUnavailable(f"no answer from {url} within 30s", url=url), url)
    assert not timeout.wrong
    assert not diagnose(UpstreamUnavailable("upstream answered 503 without a problem document"), url).wrong
    assert not diagnose(UpstreamProblem("urn:ietf:params:acme:error:serverInternal", "boom", 500), url).wrong
    assert diagnose(UpstreamProblem("about:blank", "", 403), url).wrong
    assert diagnose(UpstreamProtocolError("upstream answered 200 with a body that is not JSON"), url).wrong


# --------------------------------------------------------------------------
# state, listeners and keys: name the flag and the path
# --------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_state_errors_name_the_flag_and_the_path(tmp_path):
    """
    A state path that is a directory, or a file that is not a database,
    fails naming ``--state`` and the path (SQLite alone says "unable to
    open database file"); nothing is left listening.
    """
    page = reactor.listenTCP(0, server.Site(json_page(V2_DIRECTORY)), interface="127.0.0.1")
    url = f"http://127.0.0.1:{page.getHost().port}/dir"
    try:
        directory = tmp_path / "a-directory"
        directory.mkdir()
        error = await start_fails(config_for(tmp_path, url, state=str(directory)))
        assert str(error) == f"--state {directory}: cannot open the state database: it is a directory; give a file path"
        garbage = tmp_path / "garbage.sqlite3"
        garbage.write_bytes(b"not a database " * 100)
        error = await start_fails(config_for(tmp_path, url, state=str(garbage)))
        assert str(error) == f"--state {garbage}: cannot open the state database: file is not a database"
    finally:
        await page.stopListening()


def test_an_unwritable_state_directory_names_the_user(tmp_path, monkeypatch):
    """
    SQLite's "unable to open database file" for a directory this user may
    not write in (the suite runs as root, which may write anywhere: the
    permission answer is the one stand-in here) becomes which directory and
    which user.
    """
    directory = str(tmp_path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if path == directory
                        else real_access(path, mode))
    reason = serve._state_problem(os.path.join(directory, "state.sqlite3"),
                                    Exception("unable to open database file"))
    assert reason == (f"cannot open the state database: this user (uid {os.getuid()}) cannot "
                      f"create files in {directory} (unable to open database file)")


def test_a_missing_state_directory_names_the_flag_and_path(tmp_path, capsys):
    """
    ``--state`` in a directory that does not exist fails before anything
    starts, naming the flag, the path and the directory.
    """
    keys = tmp_path / "keys"
    keys.mkdir()
    state = tmp_path / "nope" / "state.sqlite3"
    use_layers(Layers(environ={}))
    with pytest.raises(SystemExit):
        cli.main(["serve", "--upstream", "https://ca.test/dir", "--keys", str(keys),
                  "--state", str(state)])
    err = capsys.readouterr().err
    assert err.startswith("usage: acme-gateway serve ")
    assert err.splitlines()[-1] == (f"acme-gateway serve: error: --state: {state}: its directory "
                                    f"{tmp_path / 'nope'} does not exist")


@pytest_twisted.ensureDeferred
async def test_a_busy_port_names_its_flag(tmp_path):
    """
    A listener that cannot bind names its flag and endpoint; the v1
    listener it had opened before the admin one is closed again.
    """
    page = reactor.listenTCP(0, server.Site(json_page(V2_DIRECTORY)), interface="127.0.0.1")
    busy = page.getHost().port
    v1_port = free_port()
    try:
        error = await start_fails(config_for(
            tmp_path, f"http://127.0.0.1:{busy}/dir", listen=f"tcp:{v1_port}:interface=127.0.0.1",
            admin_listen=f"tcp:{busy}:interface=127.0.0.1"))
        assert error.flag == "--admin-listen" and error.value == f"tcp:{busy}:interface=127.0.0.1"
        assert "cannot listen" in error.reason and "Address already in use" in error.reason
        again = reactor.listenTCP(v1_port, server.Site(Page()), interface="127.0.0.1")
        await again.stopListening()
    finally:
        await page.stopListening()


def _serve(tmp_path, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*gateway_command(), "serve", "--state", str(tmp_path / "state.sqlite3"),
         "--listen", f"tcp:{free_port()}:interface=127.0.0.1", *args],
        env={**_child_env(), **(env or {})}, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL)


def test_serve_exits_with_the_fix_for_a_web_page(tmp_path):
    """
    As an operator sees it: ``acme-gateway serve --upstream`` of a plain
    web page (a real HTTP server) exits 1 at once, the reason on stderr.
    """
    keys = tmp_path / "keys"
    keys.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    (keys / "account.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(keys / "account.pem", 0o600)
    web = tmp_path / "www"
    web.mkdir()
    (web / "index.html").write_text("<html><body>It works!</body></html>")
    port = free_port()
    page = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                            cwd=str(web), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for _ in range(200):
            try:
                opener.open(f"http://127.0.0.1:{port}/", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        result = _serve(tmp_path, "--keys", str(keys), env={
            "ACME_GATEWAY_UPSTREAM": f"http://127.0.0.1:{port}/"})
    finally:
        page.terminate()
        page.wait(10)
    assert result.returncode == 1, result.stderr
    assert (f"acme-gateway: cannot start: --upstream http://127.0.0.1:{port}/ (from environment "
            f"variable ACME_GATEWAY_UPSTREAM): upstream answered 200 with a body that is not JSON: "
            f"is this an ACME v2 directory URL?") in result.stderr


def test_no_usable_key_refuses_to_start(tmp_path):
    """
    A key store with no usable key (here one file the gateway refuses: mode
    0644) stops ``serve`` before it listens, naming ``--keys``, the
    directory and both ways out; ``keys list`` exits 1 on it.
    """
    keys = tmp_path / "keys"
    keys.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    (keys / "account.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(keys / "account.pem", 0o644)
    result = _serve(tmp_path, "--keys", str(keys), "--upstream", f"http://127.0.0.1:{free_port()}/dir")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"acme-gateway serve: error: --keys: no usable account key in {keys} (1 unusable file(s) "
        f"listed above): the gateway would refuse every client. Put the legacy clients' account "
        f"keys there (acme-gateway adopt …, or acme-gateway keys import PATH… --keys DIR), or serve "
        f"clients whose keys it does not hold with --unknown-keys managed")
    assert "mode 0644" in result.stderr
    assert not (tmp_path / "state.sqlite3").exists()
    listing = subprocess.run([*gateway_command(), "keys", "list", "--keys", str(keys)],
                             env=_child_env(), capture_output=True, text=True, timeout=60)
    assert listing.returncode == 1 and "No usable account key found" in listing.stdout


def test_no_key_is_fine_in_managed_mode(tmp_path):
    """
    With ``--unknown-keys managed`` an empty key store is what a fresh
    install looks like: ``serve`` starts (here also without its upstream,
    which is not there yet) and announces its directory.
    """
    keys = tmp_path / "keys"
    keys.mkdir()
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*gateway_command(), "serve", "--upstream", f"http://127.0.0.1:{free_port()}/dir",
             "--keys", str(keys), "--state", str(tmp_path / "state.sqlite3"),
             "--listen", f"tcp:{free_port()}:interface=127.0.0.1", "--unknown-keys", "managed",
             "--allow-names", "*.example.test",
             "--http01-listen", f"tcp:{free_port()}:interface=127.0.0.1"],
            env=_child_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            if "acme-gateway: v1 directory at" in log.read_text() or process.poll() is not None:
                break
            time.sleep(0.05)
        assert process.poll() is None, log.read_text()
        text = log.read_text()
        assert "acme-gateway: v1 directory at" in text, text
        assert "0 account key(s) loaded" in text and "is not reachable (yet)" in text
    finally:
        process.terminate()
        process.wait(10)
    assert process.returncode == 0


@pytest.mark.parametrize("argv, usage", [
    (["serve", "--upstream", "ftp://x", "--keys", "/"], "usage: acme-gateway serve "),
    (["keys", "list", "--keys", "/", "--allow-shared-key-files", "maybe"], "usage: acme-gateway keys list "),
    (["report", "--migrated-after", "soon"], "usage: acme-gateway report "),
    (["healthcheck", "--timeout", "x", "--url", "http://127.0.0.1:9/"], "usage: acme-gateway healthcheck "),
    (["demo", "--port", "0"], "usage: acme-gateway demo "),
])
def test_errors_print_the_subcommands_usage(argv, usage, capsys):
    """
    A bad value fails with the usage of the command it was given to, not
    the top level's ``acme-gateway [-h] [--version] COMMAND``.
    """
    use_layers(Layers(environ={}))
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    assert f"acme-gateway {argv[0]}" in err.splitlines()[-1]


def test_unknown_config_key_prints_the_subcommands_usage(tmp_path, capsys, monkeypatch):
    """
    A config file key no flag has fails with the subcommand's usage too.
    """
    config = tmp_path / "gateway.toml"
    config.write_text('upstrem = "https://ca.test/dir"\n')
    monkeypatch.setenv("ACME_GATEWAY_CONFIG", str(config))
    with pytest.raises(SystemExit):
        cli.main(["serve"])
    err = capsys.readouterr().err
    assert err.startswith("usage: acme-gateway serve ")
    assert f"--config: {config}: no flag is called upstrem" in err
