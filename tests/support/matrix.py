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
    dehydrated_binary,
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
    A static file server (Python's ``http.server``, a child process) for
    ``directory`` on 127.0.0.1:``port`` -- the Pebble's http-01 port -- so
    every client's ``directory/.well-known/acme-challenge/<token>`` file is
    what the CA fetches, while the tests stay synchronous.
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
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
             "--directory", self.directory],
            stdin=subprocess.DEVNULL, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT,
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

    def version(self) -> str:
        return self.dehydrated.version()


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
]
