"""
The legacy-client matrix: every real ACME v1 client release the suite can
install and run here, each in its own venv (or npm prefix) that
``scripts/setup`` builds from ``tests/legacy-clients/``.

Each row drives one client the way a migrating machine runs it: the client
already has an account from the old v1 CA (its account files are written
here in the client's own layout, and its key is put into the gateway's key
store), then gets one certificate and renews it.  Every client proves http-01
through files in one shared webroot, served by `WebrootServer` on the
Pebble's http-01 port.

`MatrixClient` is what a row is; `ROWS` lists them.  The rows' drivers are
synchronous (each run of a client is a child process): call them from plain
tests, never from inside the reactor.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from typing import List, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.legacy import (
    ACME1_CLIENT_SCRIPT,
    REPO_ROOT,
    Certbot,
    Dehydrated,
    _run,
    clean_env,
)

VENVS_DIR = os.path.join(REPO_ROOT, ".venvs")


# --------------------------------------------------------------------------
# Shared plumbing
# --------------------------------------------------------------------------

def matrix_venv(name: str) -> str:
    """``<repo>/.venvs/<name>``, which ``scripts/setup`` builds from
    ``tests/legacy-clients/<name>.txt``."""
    return os.path.join(VENVS_DIR, name)


def write_pem_key(path: str, key, traditional: bool = False) -> str:
    """
    ``key`` as unencrypted PEM, mode 0600: PKCS#8, or with ``traditional``
    the ``BEGIN RSA PRIVATE KEY`` form ``openssl genrsa`` wrote for years
    (what acme-tiny's and dehydrated's users have).
    """
    form = serialization.PrivateFormat.TraditionalOpenSSL if traditional \
        else serialization.PrivateFormat.PKCS8
    data = key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)
    return path


def pem_ders(pem: bytes) -> list:
    """The DER of every certificate in ``pem``."""
    if not pem.strip():
        return []
    return [c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(pem)]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class WebrootServer:
    """
    ``tests/support/webroot_server.py`` as a child process on
    127.0.0.1:``port`` -- the Pebble's http-01 port -- serving
    ``directory/.well-known/acme-challenge/<token>``: every client's http-01
    file is what the CA fetches, while the tests stay synchronous.
    `proxy_url` is the same server as an ``http_proxy`` for clients that
    fetch their own file before answering.
    """

    def __init__(self, directory: str, port: int):
        self.directory = os.path.abspath(directory)
        self.challenge_dir = os.path.join(self.directory, ".well-known", "acme-challenge")
        self.port = port
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "WebrootServer":
        os.makedirs(self.challenge_dir, exist_ok=True)
        probe = os.path.join(self.challenge_dir, "probe")
        with open(probe, "w") as f:
            f.write("up")
        self.log_path = os.path.join(os.path.dirname(self.directory), f"webroot-{self.port}.log")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.webroot_server", "--port", str(self.port),
             "--directory", self.challenge_dir],
            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT,
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 20
        while True:
            try:
                with opener.open(f"http://127.0.0.1:{self.port}/.well-known/acme-challenge/probe",
                                 timeout=2) as response:
                    if response.read() == b"up":
                        return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the webroot server did not start:\n{_read(self.log_path).decode()}")
            time.sleep(0.05)

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Issued:
    """What a client left on disk for one certificate: the leaf and the
    issuers it fetched (``[]`` when it fetched none)."""

    def __init__(self, leaf_der: bytes, issuer_ders: Sequence[bytes]):
        self.leaf_der = leaf_der
        self.issuer_ders = list(issuer_ders)


# --------------------------------------------------------------------------
# The rows
# --------------------------------------------------------------------------

class MatrixClient:
    """
    One client release in the matrix.

    :ivar id: the pytest id (``certbot-0.31.0``).
    :ivar label: what the README's table calls it (``certbot 0.31.0``).
    :ivar venv: the ``.venvs/`` entry it runs from (``None``: a Debian package).
    """

    id: str
    label: str
    venv: Optional[str] = None

    def missing(self) -> Optional[str]:
        """Why the client cannot run here (its venv is not built), or ``None``."""
        if self.venv and not os.path.exists(os.path.join(matrix_venv(self.venv), "bin", "python")):
            return (f"{matrix_venv(self.venv)} is missing: run ./scripts/setup, which builds it "
                    f"from tests/legacy-clients/{self.venv}.txt")
        return None

    def prepare(self, workdir: str, directory_url: str, webroot: WebrootServer, key,
                keys_dir: str) -> "MatrixDriver":
        raise NotImplementedError


class MatrixDriver:
    """A row bound to a work directory, a gateway and an account."""

    def issue(self, name: str) -> Issued:
        raise NotImplementedError

    def renew(self, name: str) -> Issued:
        raise NotImplementedError

    def registered_again(self) -> bool:
        """Whether the client made itself a new account (it must not)."""
        return False


# --- certbot ------------------------------------------------------------------

class MatrixCertbot(Certbot):
    """`Certbot` run from a matrix venv, with the flags that release knows."""

    def __init__(self, venv: str, *args, random_sleep_flag: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.venv = venv
        self.random_sleep_flag = random_sleep_flag

    @property
    def binary(self) -> str:
        return os.path.join(matrix_venv(self.venv), "bin", "certbot")

    def renew(self, force: bool = True, cert_name: Optional[str] = None,
              extra: Sequence[str] = (), **kwargs) -> subprocess.CompletedProcess:
        # --no-random-sleep-on-renew came with certbot 0.29's random sleep;
        # 0.27 neither sleeps nor knows the flag.
        args = ["renew", "--force-renewal"] if force else ["renew"]
        if self.random_sleep_flag:
            args.append("--no-random-sleep-on-renew")
        if cert_name:
            args += ["--cert-name", cert_name]
        return self.run(*args, *extra, **kwargs)


class CertbotRow(MatrixClient):
    def __init__(self, version: str, random_sleep_flag: bool = True):
        self.version = version
        self.id = self.venv = f"certbot-{version}"
        self.label = f"certbot {version}"
        self.random_sleep_flag = random_sleep_flag

    def prepare(self, workdir, directory_url, webroot, key, keys_dir):
        return CertbotDriver(self, workdir, directory_url, webroot, key, keys_dir)


class CertbotDriver(MatrixDriver):
    """
    certbot with the account it made at the old CA (written by the gateway's
    own writer of certbot's layout, which 0.x and 1.x read alike), http-01
    through ``--webroot``; renewal is ``certbot renew --force-renewal`` from
    the renewal configuration the issuance left.
    """

    def __init__(self, row: CertbotRow, workdir, directory_url, webroot, key, keys_dir):
        self.webroot = webroot
        self.certbot = MatrixCertbot(row.venv, workdir, directory_url,
                                     random_sleep_flag=row.random_sleep_flag)
        base = directory_url.rsplit("/directory", 1)[0]
        self.account_id = self.certbot.seed_existing_account(key, regr_uri=f"{base}/acme/reg/4711")
        shutil.copy(self.certbot.account_key_path(),
                    os.path.join(keys_dir, f"certbot-{self.account_id}.json"))

    def _issued(self, name: str) -> Issued:
        return Issued(pem_ders(self.certbot.live_cert(name))[0], pem_ders(self.certbot.chain_pem(name)))

    def issue(self, name):
        self.certbot.certonly_webroot([name], self.webroot.directory)
        return self._issued(name)

    def renew(self, name):
        self.certbot.renew(force=True)
        return self._issued(name)

    def registered_again(self):
        return self.certbot.account_ids() != [self.account_id]


# --- the acme library's v1 Client ---------------------------------------------

class Acme1Row(MatrixClient):
    """
    ``acme.client.Client`` (the v1 client class every acme-based integration
    used) of the ``acme`` release installed in ``venv``, driven by
    ``tests/support/acme1_client.py``.
    """

    def __init__(self, version: str, venv: str):
        self.version = version
        self.id = f"acme-{version}"
        self.label = f"acme {version} (v1 Client)"
        self.venv = venv

    def prepare(self, workdir, directory_url, webroot, key, keys_dir):
        return Acme1Driver(self, workdir, directory_url, webroot, key, keys_dir)


class Acme1Driver(MatrixDriver):
    """
    An integration built on the acme library keeps its account key in a PEM
    file and never registers again; each run validates the name (new-authz,
    http-01) and asks for the certificate, so a renewal is a second run.
    """

    def __init__(self, row: Acme1Row, workdir, directory_url, webroot, key, keys_dir):
        self.row = row
        self.workdir = os.path.abspath(workdir)
        self.directory_url = directory_url
        self.webroot = webroot
        self.key_path = write_pem_key(os.path.join(self.workdir, "account.pem"), key)
        shutil.copy(self.key_path, os.path.join(keys_dir, f"{row.id}-account.pem"))
        self.runs = 0

    def _run_client(self, name: str) -> Issued:
        self.runs += 1
        out = os.path.join(self.workdir, f"run-{self.runs}")
        command = [
            os.path.join(matrix_venv(self.row.venv), "bin", "python"), ACME1_CLIENT_SCRIPT,
            "--directory", self.directory_url, "--key", self.key_path, "--names", name,
            "--challenge", "http-01", "--webroot", self.webroot.directory, "--out", out,
        ]
        _run(command, env=clean_env(), timeout=120, check=True, what=f"acme1_client.py ({self.row.label})")
        chain_dir = os.path.join(out, "chain")
        issuers = [_read(os.path.join(chain_dir, f"{i}.der")) for i in range(len(os.listdir(chain_dir)))]
        return Issued(_read(os.path.join(out, "cert.der")), issuers)

    issue = renew = _run_client


# --- dehydrated ---------------------------------------------------------------

class DehydratedRow(MatrixClient):
    """Debian's dehydrated (0.7.0 in bookworm) with ``API=1``."""

    id = "dehydrated-debian"
    venv = None

    @property
    def label(self) -> str:
        return "dehydrated (Debian's package) API=1"

    def missing(self):
        if not (shutil.which("dehydrated") or os.path.exists("/usr/bin/dehydrated")):
            return "Debian's dehydrated is not installed: run ./scripts/setup"
        return None

    def prepare(self, workdir, directory_url, webroot, key, keys_dir):
        return DehydratedDriver(workdir, directory_url, webroot, key, keys_dir)


class DehydratedDriver(MatrixDriver):
    """
    A dehydrated that registered at the old CA keeps ``account_key.pem`` and
    ``registration_info.json`` in ``accounts/<CA hash>/`` and never sends
    new-reg again; its http-01 files go straight into the webroot's
    challenge directory (``WELLKNOWN``); a renewal is ``--cron --force``.
    """

    def __init__(self, workdir, directory_url, webroot, key, keys_dir):
        self.dehydrated = Dehydrated(workdir, directory_url,
                                     extra_config={"WELLKNOWN": webroot.challenge_dir})
        write_pem_key(self.dehydrated.account_key_path(), key, traditional=True)
        with open(os.path.join(self.dehydrated.account_dir(), "registration_info.json"), "w") as f:
            f.write('{"id": 4242, "key": {}, "contact": [], "agreement": "", "status": "valid"}\n')
        shutil.copy(self.dehydrated.account_key_path(), os.path.join(keys_dir, "dehydrated.pem"))

    def _issued(self, name: str) -> Issued:
        return Issued(pem_ders(self.dehydrated.cert_pem(name))[0],
                      pem_ders(self.dehydrated.chain_pem(name)))

    def issue(self, name):
        self.dehydrated.issue(name)
        return self._issued(name)

    def renew(self, name):
        self.dehydrated.issue(name, force=True)
        return self._issued(name)



# --- command-line clients from PyPI ---------------------------------------------

def venv_bin(venv: str, program: str) -> str:
    return os.path.join(matrix_venv(venv), "bin", program)


def base_url(directory_url: str) -> str:
    """The gateway's base URL: clients that hard-code Boulder's paths take this."""
    return directory_url.rsplit("/directory", 1)[0]


def make_san_csr(workdir: str, name: str) -> Tuple[str, str]:
    """
    A certificate key and a CSR naming ``name`` as CN and SAN, made with the
    ``openssl`` command line as acme-tiny's README tells its users
    (``openssl req -new -sha256 -key domain.key -subj … -addext
    subjectAltName=…``).  Returns ``(key_path, csr_path)``.
    """
    key_path = os.path.join(workdir, "domain.key")
    csr_path = os.path.join(workdir, "domain.csr")
    _run(["openssl", "genrsa", "-out", key_path, "2048"], env=clean_env(), timeout=60,
         check=True, what="openssl genrsa")
    _run(["openssl", "req", "-new", "-sha256", "-key", key_path, "-subj", f"/CN={name}",
          "-addext", f"subjectAltName=DNS:{name}", "-out", csr_path],
         env=clean_env(), timeout=60, check=True, what="openssl req")
    return key_path, csr_path


class CommandRow(MatrixClient):
    """A client from PyPI run as a command, from its own venv."""

    def __init__(self, package: str, version: str, driver, venv: Optional[str] = None):
        self.package = package
        self.version = version
        self.id = f"{package}-{version}"
        self.venv = venv or self.id
        self.label = f"{package} {version}"
        self.driver = driver

    def prepare(self, workdir, directory_url, webroot, key, keys_dir):
        os.makedirs(workdir, exist_ok=True)
        return self.driver(self, os.path.abspath(workdir), directory_url, webroot, key, keys_dir)


class AcmeTinyDriver(MatrixDriver):
    """
    acme-tiny 3.0.0 (the last v1 release on PyPI): the account is just the
    ``openssl genrsa`` key it was always run with (it sends new-reg every
    time; an existing account is a 409); the CSR comes from ``openssl req``;
    it writes the key authorization into ``--acme-dir`` and fetches
    ``http://<name>/.well-known/…`` itself before answering -- through
    ``http_proxy``, the webroot server -- and prints the certificate.  A
    renewal is the same command again.  Boulder's paths are hard-coded
    under ``--ca``.
    """

    def __init__(self, row, workdir, directory_url, webroot, key, keys_dir):
        self.row, self.workdir, self.webroot = row, workdir, webroot
        self.ca = base_url(directory_url)
        self.key_path = write_pem_key(os.path.join(workdir, "account.key"), key, traditional=True)
        shutil.copy(self.key_path, os.path.join(keys_dir, "acme-tiny-account.key"))
        self.runs = 0

    def _run_client(self, name):
        if self.runs == 0:
            make_san_csr(self.workdir, name)
        self.runs += 1
        result = _run(
            [venv_bin(self.row.venv, "acme-tiny"), "--account-key", self.key_path,
             "--csr", os.path.join(self.workdir, "domain.csr"), "--acme-dir", self.webroot.challenge_dir,
             "--ca", self.ca],
            env=clean_env({"http_proxy": self.webroot.proxy_url}), timeout=120, check=True,
            what=self.row.label)
        return Issued(pem_ders(result.stdout.encode())[0], [])

    issue = renew = _run_client


class SimpLeDriver(MatrixDriver):
    """
    simp_le 0.14.0 (the last v1 release): everything lives in its working
    directory; the account is ``account_key.json`` (a JWK); it sends new-reg
    on every run (409 for an existing account).  A renewal is the same
    command with ``--valid_min`` longer than the certificate's life, which
    is how its docs say to force one.
    """

    def __init__(self, row, workdir, directory_url, webroot, key, keys_dir):
        from gateway.clients.certbot import _jwk

        self.row, self.workdir, self.webroot, self.directory_url = row, workdir, webroot, directory_url
        path = os.path.join(workdir, "account_key.json")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(json.dumps(_jwk(key).to_json()))
        shutil.copy(path, os.path.join(keys_dir, "simp_le-account_key.json"))

    def _run_client(self, name, *extra):
        _run([venv_bin(self.row.venv, "simp_le"), "--server", self.directory_url,
              "--email", "legacy-simp-le@example.test",
              "-f", "account_key.json", "-f", "key.pem", "-f", "cert.pem", "-f", "chain.pem",
              "-d", f"{name}:{self.webroot.directory}", *extra],
             env=clean_env(), timeout=120, check=True, what=self.row.label, cwd=self.workdir)
        return Issued(pem_ders(_read(os.path.join(self.workdir, "cert.pem")))[0],
                      pem_ders(_read(os.path.join(self.workdir, "chain.pem"))))

    def issue(self, name):
        return self._run_client(name)

    def renew(self, name):
        return self._run_client(name, "--valid_min", str(100 * 365 * 86400))


class WileDriver(MatrixDriver):
    """
    wile 1.0.6: ``--account-key`` PEM (it registers only a key it generated
    itself), ``cert request --webroot``-style ``DOMAIN:WEBROOT``; a renewal
    is ``cert request --force``.
    """

    def __init__(self, row, workdir, directory_url, webroot, key, keys_dir):
        self.row, self.workdir, self.webroot, self.directory_url = row, workdir, webroot, directory_url
        self.key_path = write_pem_key(os.path.join(workdir, "account.key"), key, traditional=True)
        shutil.copy(self.key_path, os.path.join(keys_dir, "wile-account.key"))

    def _run_client(self, name, *extra):
        out = os.path.join(self.workdir, "out")
        os.makedirs(out, exist_ok=True)
        _run([venv_bin(self.row.venv, "wile"), "--directory-url", self.directory_url,
              "--account-key", self.key_path, "cert", "request", "--separate-chain",
              "--output-dir", out, *extra, f"{name}:{self.webroot.directory}"],
             env=clean_env({"HOME": self.workdir}), timeout=120, check=True, what=self.row.label,
             cwd=self.workdir)
        return Issued(pem_ders(_read(os.path.join(out, f"{name}.crt")))[0],
                      pem_ders(_read(os.path.join(out, f"{name}.chain.crt"))))

    def issue(self, name):
        return self._run_client(name)

    def renew(self, name):
        return self._run_client(name, "--force")


class ManualeDriver(MatrixDriver):
    """
    manuale 1.1.0: ``account.json`` holds the key (PEM) and the account URI;
    ``authorize --method http`` writes the key authorization into the
    current directory (run from the challenge directory) and waits for
    Enter; ``issue`` makes the key and CSR and writes ``<name>.crt`` and
    ``<name>.chain.crt``.  A renewal is authorize (nothing to do while the
    authorization is valid) and issue again.  Boulder's paths are
    hard-coded under ``--server``.
    """

    def __init__(self, row, workdir, directory_url, webroot, key, keys_dir):
        self.row, self.workdir, self.webroot = row, workdir, webroot
        self.server = base_url(directory_url) + "/"
        self.account = os.path.join(workdir, "account.json")
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
        with open(os.open(self.account, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump({"key": pem, "uri": f"{base_url(directory_url)}/acme/reg/4711"}, f)
        write_pem_key(os.path.join(keys_dir, "manuale-account.pem"), key)

    def _manuale(self, *args, cwd, stdin=""):
        command = [venv_bin(self.row.venv, "manuale"), "--server", self.server,
                   "--account", self.account, *args]
        result = subprocess.run(command, env=clean_env(), cwd=cwd, input=stdin, text=True,
                                capture_output=True, timeout=120)
        if result.returncode != 0 or "failed" in result.stdout + result.stderr:
            raise AssertionError(f"{self.row.label} {args[0]} exited {result.returncode}:\n"
                                 f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}")
        return result

    def _run_client(self, name):
        self._manuale("authorize", "--method", "http", name, cwd=self.webroot.challenge_dir, stdin="\n")
        out = os.path.join(self.workdir, "out")
        os.makedirs(out, exist_ok=True)
        self._manuale("issue", "--output", out, name, cwd=self.workdir)
        return Issued(pem_ders(_read(os.path.join(out, f"{name}.crt")))[0],
                      pem_ders(_read(os.path.join(out, f"{name}.chain.crt"))))

    issue = renew = _run_client


class FreeTlsDriver(MatrixDriver):
    """
    free_tls_certificates 0.1.6 (Mail-in-a-Box's client): its account cache
    directory holds ``account.pem`` and ``registration.json`` (the
    registration resource, which it re-reads from the CA on every run); it
    installs the challenge file under the static path, checks it over HTTP
    itself (through ``http_proxy``), then answers.  It renews only a
    certificate that expires within 30 days, so the renewal removes the
    certificate file first, as an operator forcing one does.
    """

    def __init__(self, row, workdir, directory_url, webroot, key, keys_dir):
        self.row, self.workdir, self.webroot, self.directory_url = row, workdir, webroot, directory_url
        cache = os.path.join(workdir, "account")
        os.makedirs(cache, exist_ok=True)
        write_pem_key(os.path.join(cache, "account.pem"), key, traditional=True)
        thumbprint = _thumbprint(key)
        with open(os.path.join(cache, "registration.json"), "w") as f:
            json.dump({"body": {}, "uri": f"{base_url(directory_url)}/acme/reg/{thumbprint}",
                       "new_authzr_uri": f"{base_url(directory_url)}/acme/new-authz",
                       "terms_of_service": f"{base_url(directory_url)}/terms"}, f)
        shutil.copy(os.path.join(cache, "account.pem"), os.path.join(keys_dir, "free-tls-account.pem"))
        self.cache = cache

    def _run_client(self, name):
        cert = os.path.join(self.workdir, "certificate.crt")
        if os.path.exists(cert):
            os.unlink(cert)
        _run([venv_bin(self.row.venv, "free_tls_certificate"), "--server", self.directory_url,
              name, os.path.join(self.workdir, "private.key"), cert, self.webroot.directory, self.cache],
             env=clean_env({"http_proxy": self.webroot.proxy_url}), timeout=120, check=True,
             what=self.row.label, cwd=self.workdir)
        ders = pem_ders(_read(cert))
        return Issued(ders[0], ders[1:])

    issue = renew = _run_client


TXACME_CLIENT_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "txacme_client.py")


class TxacmeDriver(MatrixDriver):
    """
    txacme 0.9.3 through ``tests/support/txacme_client.py``: the account is
    the key a service loads on start (no new-reg); every issuance and
    renewal validates the name and asks for the certificate.
    """

    def __init__(self, row, workdir, directory_url, webroot, key, keys_dir):
        self.row, self.workdir, self.webroot, self.directory_url = row, workdir, webroot, directory_url
        self.key_path = write_pem_key(os.path.join(workdir, "account.pem"), key)
        shutil.copy(self.key_path, os.path.join(keys_dir, "txacme-account.pem"))
        self.runs = 0

    def _run_client(self, name):
        self.runs += 1
        out = os.path.join(self.workdir, f"run-{self.runs}")
        _run([venv_bin(self.row.venv, "python"), TXACME_CLIENT_SCRIPT, self.directory_url,
              self.key_path, name, self.webroot.challenge_dir, out],
             env=clean_env(), timeout=120, check=True, what=self.row.label, cwd=self.workdir)
        chain_dir = os.path.join(out, "chain")
        issuers = [_read(os.path.join(chain_dir, f"{i}.der")) for i in range(len(os.listdir(chain_dir)))]
        return Issued(_read(os.path.join(out, "cert.der")), issuers)

    issue = renew = _run_client


# --- Node.js clients from npm --------------------------------------------------

LE_CORE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "le_core_client.js")


class NpmRow(MatrixClient):
    """
    A client from npm, installed by ``scripts/setup`` into
    ``.venvs/<package>-<version>/node_modules`` from
    ``tests/legacy-clients/npm/<package>-<version>/``.
    """

    def __init__(self, package: str, version: str, driver):
        self.package = package
        self.version = version
        self.id = self.venv = f"{package}-{version}"
        self.label = f"{package} {version} (npm)"
        self.driver = driver

    @property
    def node_modules(self) -> str:
        return os.path.join(matrix_venv(self.venv), "node_modules")

    def missing(self):
        if not os.path.isdir(os.path.join(self.node_modules, self.package)):
            return (f"{self.node_modules}/{self.package} is missing: run ./scripts/setup, which "
                    f"installs it from tests/legacy-clients/npm/{self.venv}/")
        if not shutil.which("node"):
            return "node is not installed: run ./scripts/setup"
        return None

    def prepare(self, workdir, directory_url, webroot, key, keys_dir):
        os.makedirs(workdir, exist_ok=True)
        return self.driver(self, os.path.abspath(workdir), directory_url, webroot, key, keys_dir)


class LeCoreDriver(MatrixDriver):
    """
    le-acme-core 2.1.4 or letiny-core 2.0.3 through
    ``tests/support/le_core_client.js``: node-letsencrypt, greenlock 2.x
    and letiny-based tools kept the account key PEM and called
    ``getCertificate`` with it on every issuance and renewal, never
    registering again.
    """

    def __init__(self, row, workdir, directory_url, webroot, key, keys_dir):
        self.row, self.workdir, self.webroot, self.directory_url = row, workdir, webroot, directory_url
        self.key_path = write_pem_key(os.path.join(workdir, "account.pem"), key, traditional=True)
        shutil.copy(self.key_path, os.path.join(keys_dir, f"{row.package}-account.pem"))
        self.runs = 0

    def _run_client(self, name):
        self.runs += 1
        out = os.path.join(self.workdir, f"run-{self.runs}")
        _run([shutil.which("node") or "node", LE_CORE_SCRIPT, self.row.package, self.directory_url,
              self.key_path,
              name, self.webroot.challenge_dir, out],
             env=clean_env({"NODE_PATH": self.row.node_modules}), timeout=120, check=True,
             what=self.row.label)
        return Issued(pem_ders(_read(os.path.join(out, "cert.pem")))[0],
                      pem_ders(_read(os.path.join(out, "chain.pem"))))

    issue = renew = _run_client


def _thumbprint(key) -> str:
    from gateway.keys.jose import AccountKey

    return AccountKey.from_private_key(key).thumbprint


#: Every row of the matrix, in the README table's order.
ROWS: List[MatrixClient] = [
    CertbotRow("0.27.1", random_sleep_flag=False),
    CertbotRow("0.31.0"),
    CertbotRow("0.40.0"),
    CertbotRow("1.12.0"),
    CertbotRow("1.21.0"),
    Acme1Row("0.31.0", venv="certbot-0.31.0"),
    Acme1Row("1.12.0", venv="certbot-1.12.0"),
    DehydratedRow(),
    CommandRow("acme-tiny", "3.0.0", AcmeTinyDriver),
    CommandRow("simp_le", "0.14.0", SimpLeDriver, venv="simp_le-client-0.14.0"),
    CommandRow("manuale", "1.1.0", ManualeDriver),
    CommandRow("free_tls_certificates", "0.1.6", FreeTlsDriver),
    CommandRow("wile", "1.0.6", WileDriver),
    CommandRow("txacme", "0.9.3", TxacmeDriver),
    NpmRow("le-acme-core", "2.1.4", LeCoreDriver),
    NpmRow("letiny-core", "2.0.3", LeCoreDriver),
]
