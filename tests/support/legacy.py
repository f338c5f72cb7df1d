"""
Real legacy ACME v1 clients for the end-to-end tests: certbot 1.32 and the
acme 1.32 library (from the separate venv ``tests/legacy-clients.txt``
describes) and Debian's dehydrated 0.7.0, each run as a child process
against the gateway's v1 API.

Everything that runs a client is synchronous and blocks until the client
exits.  That is fine while the gateway, Pebble and the DNS server are
separate processes -- but **not** when the test serves something from its
own reactor (``listen_well_known`` for http-01 files, an in-process
responder): the client would wait on a reactor the test is blocking.  From
``async def`` tests, call the runners through ``off_reactor``::

    result = await off_reactor(certbot.certonly_webroot, ["a.example.test"], webroot)

Child environments are clean: no machine-wide ``REQUESTS_CA_BUNDLE``,
``CURL_CA_BUNDLE``, ``SSL_CERT_FILE``, proxies or ``PYTHONPATH``; a CA bundle
is trusted only when the caller passes one.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from typing import Iterable, Optional, Sequence

import pytest
from twisted.web import resource, server

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUPPORT_DIR = os.path.dirname(os.path.abspath(__file__))
HOOKS_DIR = os.path.join(SUPPORT_DIR, "hooks")
ACME1_CLIENT_SCRIPT = os.path.join(SUPPORT_DIR, "acme1_client.py")
DEFAULT_LEGACY_VENV = os.path.join(REPO_ROOT, ".venvs", "certbot1")

#: Variables a child must not inherit: trust and routing come from the test.
_SCRUBBED_ENV = (
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
    "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV",
)


# --------------------------------------------------------------------------
# Shared plumbing
# --------------------------------------------------------------------------

def legacy_venv() -> str:
    """
    The virtualenv holding certbot 1.32 and acme 1.32:
    ``$ACME_GATEWAY_LEGACY_VENV``, else ``<repo>/.venvs/certbot1``.
    Fails the test with instructions when it is not there.
    """
    venv = os.environ.get("ACME_GATEWAY_LEGACY_VENV") or DEFAULT_LEGACY_VENV
    venv = os.path.abspath(venv)
    missing = [p for p in ("bin/certbot", "bin/python") if not os.path.exists(os.path.join(venv, p))]
    if missing:
        pytest.fail(
            f"the legacy v1 client venv is missing ({', '.join(os.path.join(venv, p) for p in missing)} "
            "not found): run ./scripts/test, which builds .venvs/certbot1 from "
            "tests/legacy-clients.txt and sets ACME_GATEWAY_LEGACY_VENV",
            pytrace=False,
        )
    return venv


def legacy_python() -> str:
    return os.path.join(legacy_venv(), "bin", "python")


def clean_env(extra: Optional[dict] = None, ca_bundle: Optional[str] = None) -> dict:
    """
    ``os.environ`` without inherited trust, proxy or Python settings, plus
    ``REQUESTS_CA_BUNDLE=ca_bundle`` when given, plus ``extra``.
    """
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    if ca_bundle:
        env["REQUESTS_CA_BUNDLE"] = os.path.abspath(ca_bundle)
    env.update(extra or {})
    return env


def _tail(path: str, lines: int = 80) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as error:
        return f"({path} unreadable: {error})"


def _run(command: Sequence[str], *, env: dict, timeout: float, check: bool, what: str,
         log_path: Optional[str] = None, cwd: Optional[str] = None) -> subprocess.CompletedProcess:
    """
    Run a client, capture its output (text), and fail with everything useful
    when ``check`` and it exits non-zero or times out.
    """
    try:
        result = subprocess.run(
            list(command), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as expired:
        message = [f"{what} timed out after {timeout}s: {shlex.join(command)}",
                   f"--- stdout ---\n{_text(expired.stdout)}", f"--- stderr ---\n{_text(expired.stderr)}"]
        if log_path:
            message.append(f"--- tail of {log_path} ---\n{_tail(log_path)}")
        raise AssertionError("\n".join(message)) from None
    if check and result.returncode != 0:
        message = [f"{what} exited {result.returncode}: {shlex.join(command)}",
                   f"--- stdout ---\n{result.stdout}", f"--- stderr ---\n{result.stderr}"]
        if log_path:
            message.append(f"--- tail of {log_path} ---\n{_tail(log_path)}")
        raise AssertionError("\n".join(message))
    return result


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _hook(name: str) -> str:
    path = os.path.join(HOOKS_DIR, name)
    if not os.access(path, os.X_OK):  # a checkout that lost the mode bit
        os.chmod(path, os.stat(path).st_mode | 0o755)
    return path


def off_reactor(function, *args, **kwargs):
    """
    Run a blocking runner in the reactor's thread pool; ``await`` the result
    from an ``async def`` test so that the reactor keeps serving (e.g. the
    ``listen_well_known`` files a client's challenge needs).
    """
    from twisted.internet import threads

    return threads.deferToThread(function, *args, **kwargs)


def _names_args(names: Iterable[str]) -> list:
    names = [names] if isinstance(names, str) else list(names)
    assert names, "no names"
    args = []
    for name in names:
        args += ["-d", name]
    return args


def lineage_name(names: Iterable[str]) -> str:
    """
    The directory certbot 1.32 files a new certificate under by default: the
    first name, without a leading ``*.``.
    """
    first = names if isinstance(names, str) else list(names)[0]
    return first[2:] if first.startswith("*.") else first


# --------------------------------------------------------------------------
# certbot 1.32
# --------------------------------------------------------------------------

class Certbot:
    """
    certbot 1.32.0 from the legacy venv, with its own ``config/``, ``work/``
    and ``logs/`` under ``workdir``; every run adds ``--non-interactive`` and
    ``--server server_url``.  certbot speaks ACME v1 when the directory lacks
    ``newNonce``.
    """

    def __init__(self, workdir: str, server_url: str, ca_bundle: Optional[str] = None,
                 email: Optional[str] = "legacy-certbot@example.test",
                 dns_api_url: Optional[str] = None):
        self.workdir = os.path.abspath(workdir)
        self.server_url = server_url
        self.ca_bundle = ca_bundle
        self.email = email
        self.config_dir = os.path.join(self.workdir, "config")
        self.work_dir = os.path.join(self.workdir, "work")
        self.logs_dir = os.path.join(self.workdir, "logs")
        for directory in (self.config_dir, self.work_dir, self.logs_dir):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        #: Extra environment for every run (the dns-01 hooks' API URL).
        self.env = {}
        if dns_api_url:
            self.env["ACME_GATEWAY_TEST_DNS_API"] = dns_api_url

    @property
    def binary(self) -> str:
        return os.path.join(legacy_venv(), "bin", "certbot")

    @property
    def log_path(self) -> str:
        return os.path.join(self.logs_dir, "letsencrypt.log")

    def _env(self, env: Optional[dict]) -> dict:
        return clean_env({**self.env, **(env or {})}, ca_bundle=self.ca_bundle)

    def run(self, *args: str, check: bool = True, env: Optional[dict] = None,
            timeout: float = 120, with_server: bool = True) -> subprocess.CompletedProcess:
        """
        ``certbot <args> --non-interactive --config-dir … --work-dir …
        --logs-dir … --server <server_url>``.  With ``check``, a non-zero
        exit fails with certbot's output and the tail of its log.
        ``with_server=False`` leaves ``--server`` out, so that certbot uses
        the server its stored configuration names (as ``certbot renew``
        from cron does).
        """
        command = [
            self.binary, *args, "--non-interactive",
            "--config-dir", self.config_dir, "--work-dir", self.work_dir,
            "--logs-dir", self.logs_dir,
        ]
        if with_server:
            command += ["--server", self.server_url]
        return _run(command, env=self._env(env), timeout=timeout, check=check,
                    what="certbot", log_path=self.log_path)

    def version(self) -> str:
        """``certbot --version`` (e.g. ``"certbot 1.32.0"``)."""
        result = _run([self.binary, "--version"], env=self._env(None), timeout=60,
                      check=True, what="certbot --version")
        for line in (result.stdout + "\n" + result.stderr).splitlines():
            if line.startswith("certbot "):
                return line.strip()
        raise AssertionError(f"no version in certbot --version output:\n{result.stdout}{result.stderr}")

    def _account_args(self) -> list:
        args = ["--agree-tos", "--no-eff-email"]
        if self.email:
            args += ["-m", self.email]
        else:
            args += ["--register-unsafely-without-email"]
        return args

    def register(self, email: Optional[str] = None, **kwargs) -> subprocess.CompletedProcess:
        """``certbot register`` (ACME v1: new-reg, then agreement on reg/<id>)."""
        email = email if email is not None else self.email
        contact = ["-m", email] if email else ["--register-unsafely-without-email"]
        return self.run("register", "--agree-tos", "--no-eff-email", *contact, **kwargs)

    def certonly(self, names, *authenticator_args: str, cert_name: Optional[str] = None,
                 extra: Sequence[str] = (), **kwargs) -> subprocess.CompletedProcess:
        args = ["certonly", *authenticator_args, *self._account_args(), *_names_args(names)]
        if cert_name:
            args += ["--cert-name", cert_name]
        return self.run(*args, *extra, **kwargs)

    def certonly_standalone(self, names, http_port: int, extra: Sequence[str] = (),
                            **kwargs) -> subprocess.CompletedProcess:
        """
        http-01 with certbot's own server on 127.0.0.1:``http_port`` (use
        Pebble's ``http_port``, and leave it free).
        """
        return self.certonly(
            names, "--standalone", "--preferred-challenges", "http",
            "--http-01-port", str(http_port), "--http-01-address", "127.0.0.1",
            extra=extra, **kwargs,
        )

    def certonly_webroot(self, names, webroot: str, extra: Sequence[str] = (),
                         **kwargs) -> subprocess.CompletedProcess:
        """
        http-01 through files in ``webroot/.well-known/acme-challenge/``
        (serve them with ``listen_well_known``, and run this ``off_reactor``).
        """
        os.makedirs(webroot, exist_ok=True)
        return self.certonly(names, "--webroot", "-w", os.path.abspath(webroot),
                             extra=extra, **kwargs)

    def certonly_dns_manual(self, names, dns_api_url: str, extra: Sequence[str] = (),
                            **kwargs) -> subprocess.CompletedProcess:
        """
        dns-01 with ``--manual`` and the hooks in ``tests/support/hooks/``,
        which publish through the test DNS server's API at ``dns_api_url``
        (remembered for later ``renew`` runs).
        """
        self.env["ACME_GATEWAY_TEST_DNS_API"] = dns_api_url
        return self.certonly(
            names, "--manual", "--preferred-challenges", "dns",
            "--manual-auth-hook", shlex.quote(_hook("certbot-dns-auth.sh")),
            "--manual-cleanup-hook", shlex.quote(_hook("certbot-dns-cleanup.sh")),
            extra=extra, **kwargs,
        )

    def renew(self, force: bool = True, cert_name: Optional[str] = None,
              extra: Sequence[str] = (), **kwargs) -> subprocess.CompletedProcess:
        args = ["renew", "--no-random-sleep-on-renew"]
        if force:
            args.append("--force-renewal")
        if cert_name:
            args += ["--cert-name", cert_name]
        return self.run(*args, *extra, **kwargs)

    def revoke(self, cert_path: str, key_path: Optional[str] = None, reason: Optional[str] = None,
               delete_after: bool = False, extra: Sequence[str] = (),
               **kwargs) -> subprocess.CompletedProcess:
        """
        ``certbot revoke --cert-path`` signed by the account key, or by the
        certificate's key with ``key_path``.  ``reason``: ``unspecified``,
        ``keycompromise``, ``affiliationchanged``, ``superseded``,
        ``cessationofoperation``.
        """
        args = ["revoke", "--cert-path", cert_path,
                "--delete-after-revoke" if delete_after else "--no-delete-after-revoke"]
        if key_path:
            args += ["--key-path", key_path]
        if reason:
            args += ["--reason", reason]
        return self.run(*args, *extra, **kwargs)

    # --- what certbot left on disk -------------------------------------

    def live_path(self, name: str, filename: str = "cert.pem") -> str:
        """``config/live/<lineage>/<filename>``; see ``lineage_name``."""
        return os.path.join(self.config_dir, "live", name, filename)

    def live_cert(self, name: str) -> bytes:
        with open(self.live_path(name, "cert.pem"), "rb") as f:
            return f.read()

    def chain_pem(self, name: str) -> bytes:
        with open(self.live_path(name, "chain.pem"), "rb") as f:
            return f.read()

    def fullchain_pem(self, name: str) -> bytes:
        with open(self.live_path(name, "fullchain.pem"), "rb") as f:
            return f.read()

    def accounts_dir(self, server_url: Optional[str] = None) -> str:
        """
        ``config/accounts/<host:port><path>`` -- certbot 1.32's
        ``NamespaceConfig.server_path`` for ``server_url``.
        """
        from urllib.parse import urlparse

        parsed = urlparse(server_url or self.server_url)
        return os.path.join(self.config_dir, "accounts", parsed.netloc + parsed.path)

    def account_ids(self, server_url: Optional[str] = None) -> list:
        directory = self.accounts_dir(server_url)
        if not os.path.isdir(directory):
            return []
        return sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))

    def account_key_path(self, server_url: Optional[str] = None) -> str:
        """The ``private_key.json`` of the (single) account for ``server_url``."""
        ids = self.account_ids(server_url)
        assert len(ids) == 1, f"expected one certbot account under {self.accounts_dir(server_url)}, found {ids}"
        return os.path.join(self.accounts_dir(server_url), ids[0], "private_key.json")

    def account_regr(self, server_url: Optional[str] = None) -> dict:
        with open(os.path.join(os.path.dirname(self.account_key_path(server_url)), "regr.json")) as f:
            return json.load(f)

    def seed_existing_account(self, key, server_url: Optional[str] = None,
                              regr_uri: Optional[str] = None, *,
                              new_authz_uri: Optional[str] = None,
                              creation_host: str = "legacy-host.example.test") -> str:
        """
        Write the account directory certbot 1.32 would have left behind after
        registering ``key`` at ``server_url`` (an operator migrating from the
        old v1 CA), so certbot uses ``key`` without registering again — with
        the gateway's own writer of that layout
        (`gateway.clients.certbot.write_account`), which ``adopt`` uses too.

        :param key: a ``cryptography`` RSA or EC private key.
        :return: the account id.
        """
        from gateway.clients.certbot import write_account

        assert regr_uri, "regr_uri (the account's URI at the CA) is required"
        return write_account(self.config_dir, server_url or self.server_url, key, regr_uri,
                             new_authz_uri=new_authz_uri, creation_host=creation_host)

    def load_accounts_with_certbot(self, server_url: Optional[str] = None) -> list:
        """
        What certbot 1.32's own ``AccountFileStorage`` finds for
        ``server_url`` (run in the legacy venv): a list of ``{"id",
        "regr_uri", "new_authzr_uri", "public_key_pem", "thumbprint",
        "creation_dt", "creation_host"}``.
        """
        snippet = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
from cryptography.hazmat.primitives import serialization
from certbot import configuration
from certbot._internal import account, cli
from certbot._internal.plugins import disco
import josepy
config = configuration.NamespaceConfig(
    cli.prepare_and_parse_args(disco.PluginsRegistry.find_all(), sys.argv[1:]))
found = []
for acc in account.AccountFileStorage(config).find_all():
    found.append({
        "id": acc.id,
        "regr_uri": acc.regr.uri,
        "new_authzr_uri": acc.regr.new_authzr_uri,
        "public_key_pem": acc.key.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
        "thumbprint": josepy.encode_b64jose(acc.key.thumbprint()),
        "creation_dt": acc.meta.creation_dt.isoformat(),
        "creation_host": acc.meta.creation_host,
    })
print(json.dumps(found))
"""
        command = [
            legacy_python(), "-c", snippet, "certonly",
            "--config-dir", self.config_dir, "--work-dir", self.work_dir,
            "--logs-dir", self.logs_dir, "--server", server_url or self.server_url,
        ]
        result = _run(command, env=self._env(None), timeout=60, check=True,
                      what="certbot AccountFileStorage")
        return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# acme 1.32's v1 Client, through tests/support/acme1_client.py
# --------------------------------------------------------------------------

def run_acme1_client(directory: str, key_path: str, names, *, out_dir: Optional[str] = None,
                     challenge: str = "http-01", webroot: Optional[str] = None,
                     dns_api: Optional[str] = None, ca_bundle: Optional[str] = None,
                     register: bool = False, find_existing: bool = False,
                     email: Optional[str] = None, revoke: bool = False,
                     revoke_reason: Optional[int] = None, extra: Sequence[str] = (),
                     check: bool = True, timeout: float = 120) -> dict:
    """
    Run ``acme1_client.py`` under the legacy venv's python and return its
    ``result.json`` (plus ``"out_dir"``): ``{"names", "authz_uris",
    "challenge_uris", "cert_uri", "chain_uri", "account_uri", "revoked"}``;
    the certificate is ``out_dir/cert.der``, its issuers ``out_dir/chain/N.der``.

    ``webroot`` (http-01) gets ``.well-known/acme-challenge/<token>`` files;
    serve it with ``listen_well_known`` and call this ``off_reactor``.

    With ``check=False`` a failure returns ``{"returncode", "stdout",
    "stderr", "out_dir", "error", "detail", "problem"}`` (the last three from
    the script's ``error.json``) instead of failing the test.
    """
    out_dir = out_dir or tempfile.mkdtemp(prefix="acme1-")
    names = [names] if isinstance(names, str) else list(names)
    command = [
        legacy_python(), ACME1_CLIENT_SCRIPT, "--directory", directory, "--key", key_path,
        "--names", ",".join(names), "--challenge", challenge, "--out", out_dir,
    ]
    if ca_bundle:
        command += ["--ca-bundle", os.path.abspath(ca_bundle)]
    if webroot:
        command += ["--webroot", webroot]
    if dns_api:
        command += ["--dns-api", dns_api]
    if register:
        command.append("--register")
    if find_existing:
        command.append("--find-existing")
    if email:
        command += ["--email", email]
    if revoke:
        command.append("--revoke")
    if revoke_reason is not None:
        command += ["--revoke-reason", str(revoke_reason)]
    command += list(extra)
    result = _run(command, env=clean_env(ca_bundle=ca_bundle), timeout=timeout, check=check,
                  what="acme1_client.py")
    if result.returncode == 0:
        with open(os.path.join(out_dir, "result.json")) as f:
            return {**json.load(f), "out_dir": out_dir}
    report = {"returncode": result.returncode, "stdout": result.stdout,
              "stderr": result.stderr, "out_dir": out_dir}
    try:
        with open(os.path.join(out_dir, "error.json")) as f:
            report.update(json.load(f))
    except (OSError, ValueError):
        pass
    return report


# --------------------------------------------------------------------------
# Debian's dehydrated 0.7.0
# --------------------------------------------------------------------------

def dehydrated_binary() -> str:
    binary = shutil.which("dehydrated") or "/usr/bin/dehydrated"
    if not os.path.exists(binary):
        pytest.fail("Debian's dehydrated is not installed: run ./scripts/test (it installs it)",
                    pytrace=False)
    return binary


def _urlbase64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Dehydrated:
    """
    Debian's stock dehydrated 0.7.0 with ``API=1`` and a config of its own
    under ``workdir``: ``BASEDIR=workdir``, http-01 files in
    ``WELLKNOWN=workdir/well-known`` (the token files sit directly in it),
    dns-01 through ``tests/support/hooks/dehydrated-hook.sh``.

    Stock 0.7.0 in v1 mode only works if pending challenges carry
    ``"validationRecord": {"uri": <challenge uri>}`` (see
    /work/shared/clients/README.md); ``binary=`` runs another build.
    """

    def __init__(self, workdir: str, ca_url: str, ca_bundle: Optional[str] = None,
                 email: Optional[str] = "legacy-dehydrated@example.test",
                 dns_api_url: Optional[str] = None, binary: Optional[str] = None,
                 api: str = "1", extra_config: Optional[dict] = None):
        self.workdir = os.path.abspath(workdir)
        self.ca_url = ca_url
        self.ca_bundle = ca_bundle
        self.binary = binary or dehydrated_binary()
        self.wellknown = os.path.join(self.workdir, "well-known")
        self.config_path = os.path.join(self.workdir, "config")
        self.env = {}
        if dns_api_url:
            self.env["ACME_GATEWAY_TEST_DNS_API"] = dns_api_url
        os.makedirs(self.wellknown, exist_ok=True)
        settings = {
            "CA": ca_url,
            "API": str(api),
            "BASEDIR": self.workdir,
            "WELLKNOWN": self.wellknown,
            "HOOK": _hook("dehydrated-hook.sh"),
        }
        if email:
            settings["CONTACT_EMAIL"] = email
        if ca_url.startswith("https:") and ca_bundle:
            settings["CURL_OPTS"] = f"--cacert {shlex.quote(os.path.abspath(ca_bundle))}"
        settings.update(extra_config or {})
        with open(self.config_path, "w") as f:
            f.write("# written by tests/support/legacy.py\n")
            for name, value in settings.items():
                f.write(f"{name}={shlex.quote(str(value))}\n")

    def run(self, *args: str, check: bool = True, env: Optional[dict] = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        """``dehydrated --config <workdir>/config <args>`` in a clean environment."""
        command = [self.binary, "--config", self.config_path, *args]
        return _run(command, env=clean_env({**self.env, **(env or {})}), timeout=timeout,
                    check=check, what="dehydrated", cwd=self.workdir)

    def version(self) -> str:
        result = self.run("--version", timeout=30)
        for line in result.stdout.splitlines():
            if line.startswith("Dehydrated version:"):
                return line.split(":", 1)[1].strip()
        raise AssertionError(f"no version in dehydrated --version output:\n{result.stdout}")

    def help(self) -> str:
        return self.run("--help", timeout=30).stdout

    def register(self, **kwargs) -> subprocess.CompletedProcess:
        return self.run("--register", "--accept-terms", **kwargs)

    def issue(self, domain: str, challenge: str = "http-01", extra_domains: Sequence[str] = (),
              force: bool = False, dns_api_url: Optional[str] = None,
              extra: Sequence[str] = (), **kwargs) -> subprocess.CompletedProcess:
        """
        ``--cron --domain D [--domain E …] --challenge C``: one certificate
        for ``domain`` and ``extra_domains`` in ``certs/<domain>/``.
        ``force`` re-issues a still-valid one.
        """
        if dns_api_url:
            self.env["ACME_GATEWAY_TEST_DNS_API"] = dns_api_url
        if challenge == "dns-01":
            assert "ACME_GATEWAY_TEST_DNS_API" in self.env, "dns-01 needs dns_api_url"
        args = ["--cron", "--challenge", challenge, "--domain", domain]
        for name in extra_domains:
            args += ["--domain", name]
        if force:
            args.append("--force")
        return self.run(*args, *extra, **kwargs)

    def revoke(self, domain: str, **kwargs) -> subprocess.CompletedProcess:
        """``--revoke certs/<domain>/cert.pem`` (which it renames ``…-revoked``)."""
        return self.run("--revoke", self.cert_path(domain), **kwargs)

    def cert_path(self, domain: str, filename: str = "cert.pem") -> str:
        return os.path.join(self.workdir, "certs", domain, filename)

    def cert_pem(self, domain: str) -> bytes:
        with open(self.cert_path(domain, "cert.pem"), "rb") as f:
            return f.read()

    def chain_pem(self, domain: str) -> bytes:
        with open(self.cert_path(domain, "chain.pem"), "rb") as f:
            return f.read()

    def fullchain_pem(self, domain: str) -> bytes:
        with open(self.cert_path(domain, "fullchain.pem"), "rb") as f:
            return f.read()

    def account_dir(self) -> str:
        """
        ``BASEDIR/accounts/<urlbase64 of CA URL + newline>`` (dehydrated
        hashes ``echo "$CA"``, newline included).
        """
        return os.path.join(self.workdir, "accounts", _urlbase64((self.ca_url + "\n").encode()))

    def account_key_path(self) -> str:
        return os.path.join(self.account_dir(), "account_key.pem")

    def registration_info(self) -> dict:
        with open(os.path.join(self.account_dir(), "registration_info.json")) as f:
            return json.load(f)


# --------------------------------------------------------------------------
# Serving http-01 files from a directory
# --------------------------------------------------------------------------

class WellKnownDirectory(resource.Resource):
    """
    ``GET /.well-known/acme-challenge/<token>`` → the file ``<token>`` in
    ``directory`` (dehydrated's WELLKNOWN layout) or in
    ``directory/.well-known/acme-challenge/`` (a webroot, as certbot
    ``--webroot`` and ``acme1_client.py`` write it); 404 otherwise.
    ``requests`` records every path asked for.
    """

    isLeaf = True

    def __init__(self, directory: str):
        super().__init__()
        self.directory = os.path.abspath(directory)
        self.requests = []

    def _find(self, token: str) -> Optional[str]:
        if not (token.isascii() and token and all(c.isalnum() or c in "-_" for c in token)):
            return None
        for candidate in (os.path.join(self.directory, token),
                          os.path.join(self.directory, ".well-known", "acme-challenge", token)):
            if os.path.isfile(candidate):
                return candidate
        return None

    def render_GET(self, request):
        prefix = b"/.well-known/acme-challenge/"
        self.requests.append(request.path)
        if request.path.startswith(prefix):
            path = self._find(request.path[len(prefix):].decode("ascii", "replace"))
            if path:
                with open(path, "rb") as f:
                    body = f.read()
                request.setHeader(b"content-type", b"text/plain")
                return body
        request.setResponseCode(404)
        return b"not found"


def listen_well_known(reactor, port: int, directory: str):
    """
    Serve ``directory`` as ``WellKnownDirectory`` on 127.0.0.1:``port``
    (Pebble's ``http_port``).  Returns the listening port; call
    ``stopListening()`` when done.  The resource is ``port.resource``.
    """
    files = WellKnownDirectory(directory)
    site = server.Site(files)
    site.noisy = False
    listening = reactor.listenTCP(port, site, interface="127.0.0.1")
    listening.resource = files
    return listening
