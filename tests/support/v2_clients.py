"""
Real ACME v2 clients for issue 20's ``/v2/directory`` face: two draft-era
clients that read with plain ``GET`` (acme-tiny 4.0.4; certbot 0.27.1, whose
``acme`` 0.27.1 predates POST-as-GET, run in v2 mode) and today's certbot
5.8.0.  Each runs from its own venv, built by ``scripts/setup`` from
``tests/legacy-clients/<venv>.txt``, and each is driven the way a migrating
machine runs it: it already has its account (certbot's ``regr.json`` holds
the account URL the CA gave it, acme-tiny has only its key), gets one
certificate and renews it.  http-01 files go to a `WebrootServer`.

The drivers are synchronous (each run is a child process).

What each client sends, measured with `tests.support.recording_acme` by
``tests/e2e/test_v2_client_wire.py`` (which asserts every point below) --
for whoever builds the v2 face:

**acme-tiny 4.0.4** (4.0.0-4.0.4 share this protocol code, except that
4.0.0 sends urllib's User-Agent and has no ``--contact``; 4.1.0 moved to
POST-as-GET).  "(source)" marks what was read in its code, not recorded:

- ``Content-Type: application/jose+json`` and ``User-Agent: acme-tiny`` on
  *every* request, plain GETs included (a strict server that rejects a
  JOSE content type on a GET breaks it).
- A fresh nonce for every signed request, by a plain ``GET`` of
  ``newNonce`` (not ``HEAD``); it accepts 200, 201 or 204.  ``badNonce``
  (400 with the RFC type) is retried up to 100 times (source).
- ``newAccount`` with ``jwk`` and ``{"termsOfServiceAgreed": true}`` on
  every run (200 + ``Location`` for an existing account); then ``kid`` =
  that ``Location``.  It stores no account URL.
- ``newOrder``; then a plain ``GET`` of each authorization, and it
  **POSTs ``{}`` to the http-01 challenge whatever the authorization's
  status** -- also when it is already valid (reused).  Boulder answered
  with the challenge unchanged; Pebble answers 400.
- It polls authorizations and, after ``finalize``, the order (its
  ``Location``) with plain ``GET``s every 2 s, until the status is not
  ``pending`` (authorization) / not ``pending``/``processing`` (order), and
  needs ``valid`` (source).  It never looks at ``ready``: it finalizes
  right after its challenges.
- The certificate by plain ``GET`` of the order's ``certificate`` URL; the
  body is taken as text (PEM chain), any Content-Type (source).
- Before answering, it fetches its own challenge file from
  ``http://<name>/.well-known/acme-challenge/<token>`` (``--disable-check``
  turns that off; the drivers route it through ``http_proxy``).

**certbot 0.27.1 in v2 mode** (``acme`` 0.27.1; acme 0.28 differs in
taking its first nonce from ``newNonce``; acme 0.29 brought POST-as-GET,
falling back to GET when the server refuses it):

- ``kid`` = the ``uri`` of its ``regr.json`` -- the URL the CA gave it,
  sent as it is to whatever ``--server`` now names; it sends no
  ``newAccount`` at all for an existing account.
- Nonces: a ``HEAD`` of the very URL it is about to POST to (here
  ``newOrder``) when its pool is empty, then the ``Replay-Nonce`` of each
  POST's answer.  No ``newNonce``.  ``badNonce`` is retried once (source).
- POSTs carry ``Content-Type: application/jose+json``; reads are plain
  ``GET``s without Content-Type (``Accept: */*``): authorizations (after
  ``newOrder``, then polled every second), the order after ``finalize``
  (until it has a ``certificate``; its status is not looked at, so neither
  ``ready`` nor ``processing`` matters), and the certificate.
- Payloads keep v1's ``resource`` member: ``{"identifiers": …, "status":
  "pending", "resource": "new-order"}``, ``{"resource": "challenge",
  "type": "http-01", "keyAuthorization": …}``, ``{"resource": "new-cert",
  "csr": …}`` (a version-2 CSR, as acme 0.x writes them).
- It **answers the challenges of authorizations that are already valid**
  (a reused authorization at renewal), like acme-tiny; and it needs a
  ``Link: <authz>;rel="up"`` on the challenge's answer (source).

**certbot 5.8.0** (``acme`` 5.8.0): RFC 8555 throughout -- one ``HEAD
newNonce``, POST-as-GET (empty payload) for every read, the only plain
``GET`` is the directory, ``{}`` to a pending challenge and nothing to a
valid one, ``kid`` from ``regr.json`` (no ``newAccount``).
"""

from __future__ import annotations

import os
import shutil
from typing import List, Optional

from tests.support.legacy import _run, clean_env
from tests.support.matrix import (
    Issued,
    MatrixCertbot,
    WebrootServer,
    matrix_venv,
    make_san_csr,
    pem_ders,
    venv_bin,
    write_pem_key,
)


class V2ClientRow:
    """
    One v2 client release.

    :ivar id: the pytest id; :ivar label: the README's name for it;
    :ivar venv: its ``.venvs/`` entry.
    """

    id: str
    label: str
    venv: str
    #: Whether it reads with plain GETs (draft-era) rather than POST-as-GET.
    plain_gets: bool

    def missing(self) -> Optional[str]:
        if not os.path.exists(os.path.join(matrix_venv(self.venv), "bin", "python")):
            return (f"{matrix_venv(self.venv)} is missing: run ./scripts/setup, which builds it "
                    f"from tests/legacy-clients/{self.venv}.txt")
        return None

    def prepare(self, workdir: str, directory_url: str, webroot: WebrootServer, key,
                keys_dir: str, account_url: str) -> "V2Driver":
        raise NotImplementedError


class V2Driver:
    def issue(self, name: str) -> Issued:
        raise NotImplementedError

    def renew(self, name: str) -> Issued:
        raise NotImplementedError


class AcmeTiny4Row(V2ClientRow):
    def __init__(self, version: str = "4.0.4"):
        self.version = version
        self.id = self.venv = f"acme-tiny-{version}"
        self.label = f"acme-tiny {version}"
        self.plain_gets = True

    def prepare(self, workdir, directory_url, webroot, key, keys_dir, account_url):
        os.makedirs(workdir, exist_ok=True)
        return AcmeTiny4Driver(self, os.path.abspath(workdir), directory_url, webroot, key, keys_dir)


class AcmeTiny4Driver(V2Driver):
    """
    acme-tiny 4.0.x: the account is the ``openssl genrsa`` key (it sends
    newAccount every run and learns its URL from the answer), the CSR comes
    from ``openssl req``, ``--directory-url`` names the directory.  It
    checks its own challenge file over HTTP first -- through
    ``http_proxy``, the webroot server.  A renewal is the same command.
    ``account_url`` is not used: acme-tiny keeps none.
    """

    def __init__(self, row, workdir, directory_url, webroot, key, keys_dir):
        self.row, self.workdir, self.webroot, self.directory_url = row, workdir, webroot, directory_url
        self.key_path = write_pem_key(os.path.join(workdir, "account.key"), key, traditional=True)
        shutil.copy(self.key_path, os.path.join(keys_dir, f"{row.id}-account.key"))
        self.runs = 0

    def _run_client(self, name):
        if self.runs == 0:
            make_san_csr(self.workdir, name)
        self.runs += 1
        result = _run(
            [venv_bin(self.row.venv, "acme-tiny"), "--account-key", self.key_path,
             "--csr", os.path.join(self.workdir, "domain.csr"), "--acme-dir", self.webroot.challenge_dir,
             "--directory-url", self.directory_url],
            env=clean_env({"http_proxy": self.webroot.proxy_url}), timeout=180, check=True,
            what=self.row.label)
        ders = pem_ders(result.stdout.encode())
        return Issued(ders[0], ders[1:])

    issue = renew = _run_client


class CertbotV2Row(V2ClientRow):
    """certbot from a matrix venv, run against a v2 directory URL."""

    def __init__(self, version: str, plain_gets: bool, random_sleep_flag: bool = True):
        self.version = version
        self.id = self.venv = f"certbot-{version}"
        self.label = f"certbot {version} (v2)"
        self.plain_gets = plain_gets
        self.random_sleep_flag = random_sleep_flag

    def prepare(self, workdir, directory_url, webroot, key, keys_dir, account_url):
        return CertbotV2Driver(self, workdir, directory_url, webroot, key, keys_dir, account_url)


class CertbotV2Driver(V2Driver):
    """
    certbot with the v2 account it already had: ``regr.json`` holds
    ``account_url`` (the URL the CA gave it -- Let's Encrypt's, for a
    migrating machine), written under the accounts directory of
    ``directory_url``; http-01 through ``--webroot``; a renewal is
    ``certbot renew --force-renewal`` from the renewal configuration the
    issuance left.
    """

    def __init__(self, row: CertbotV2Row, workdir, directory_url, webroot, key, keys_dir, account_url):
        self.webroot = webroot
        self.certbot = MatrixCertbot(row.venv, workdir, directory_url,
                                     random_sleep_flag=row.random_sleep_flag)
        self.account_id = self.certbot.seed_existing_account(key, regr_uri=account_url)
        shutil.copy(self.certbot.account_key_path(), os.path.join(keys_dir, f"{row.id}-{self.account_id}.json"))

    def _issued(self, name: str) -> Issued:
        return Issued(pem_ders(self.certbot.live_cert(name))[0], pem_ders(self.certbot.chain_pem(name)))

    def issue(self, name):
        self.certbot.certonly_webroot([name], self.webroot.directory)
        return self._issued(name)

    def renew(self, name):
        self.certbot.renew(force=True)
        return self._issued(name)

    def registered_again(self) -> bool:
        return self.certbot.account_ids() != [self.account_id]


#: The v2 clients, in the README's order.
ROWS: List[V2ClientRow] = [
    AcmeTiny4Row("4.0.4"),
    CertbotV2Row("0.27.1", plain_gets=True, random_sleep_flag=False),
    CertbotV2Row("5.8.0", plain_gets=False),
]
