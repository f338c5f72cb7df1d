"""
A small ACME v2 server that records what a client sends, for learning what
real v2 clients -- draft-era ones above all -- put on the wire.

It answers the way Let's Encrypt's Boulder did for the draft-era v2 clients
(2018-2019) and as RFC 8555 servers do for current ones, on both sides of
the POST-as-GET change: resources are readable by plain ``GET`` *and* by
POST-as-GET, every response (``HEAD`` of any path included) carries a
``Replay-Nonce``, a ``POST`` to a challenge that is already valid answers
the challenge unchanged (Boulder's behaviour; Pebble refuses it), and
challenges become valid the moment they are answered -- it validates
nothing, checks no signature and trusts any ``kid``: it is a recorder, not
a CA.  Valid authorizations are reused for the same account (the ``kid`` or
the ``jwk`` thumbprint) unless ``--no-authz-reuse``, so a renewal shows
what a client does with an authorization that is already valid.

Every request becomes one JSON line in ``--record FILE``::

    {"method", "path", "content_type", "accept", "user_agent", "status",
     "jws": {"alg", "kid", "jwk": bool, "url", "url_matches": bool,
             "nonce_known": bool} | null,
     "payload": <decoded JSON> | "" (POST-as-GET) | null (no JWS),
     "challenge_status_before": the challenge's status when it was asked
         for (challenge URLs only)}

Usage (loopback only)::

    python -m tests.support.recording_acme --port 0 --record F.jsonl --ready-file F.json

The ready file gets ``{"port": N, "directory": URL}``.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import os
import secrets
import sys
from typing import Dict, List, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.web import resource, server

PEM_CHAIN = "application/pem-certificate-chain"


def _b64decode(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _thumbprint(jwk: dict) -> str:
    members = {k: jwk[k] for k in ("crv", "e", "kty", "n", "x", "y") if k in jwk}
    digest = hashlib.sha256(json.dumps(members, sort_keys=True, separators=(",", ":")).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Issuer:
    """A throwaway CA whose certificates the clients store (nothing trusts it)."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recording ACME server CA")])
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(hours=1))
            .not_valid_after(_now() + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, csr_der: bytes) -> str:
        # The gateway's reader takes the version-2 CSRs of acme 0.x (pyOpenSSL's set_version(2)).
        from gateway.translate.csr import names_of, parse_csr

        parsed = parse_csr(csr_der)
        san = x509.SubjectAlternativeName([x509.DNSName(n) for n in names_of(parsed)])
        leaf = (
            x509.CertificateBuilder().subject_name(x509.Name([]))
            .issuer_name(self.cert.subject)
            .public_key(serialization.load_der_public_key(parsed.public_key_der))
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=7))
            .add_extension(san, critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in (leaf, self.cert))


class RecordingACME(resource.Resource):
    """The whole server as one leaf resource: it dispatches on the path."""

    isLeaf = True

    def __init__(self, base: str, record_path: str, reuse_authz: bool = True):
        super().__init__()
        self.base = base
        self.record_path = record_path
        self.reuse_authz = reuse_authz
        self.issuer = _Issuer()
        self.nonces: set = set()
        self.accounts: Dict[str, dict] = {}     # thumbprint -> account
        self.orders: Dict[str, dict] = {}
        self.authzs: Dict[str, dict] = {}
        self.certs: Dict[str, str] = {}

    # --- plumbing ---------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base}{path}"

    def _nonce(self) -> str:
        nonce = secrets.token_urlsafe(16)
        self.nonces.add(nonce)
        return nonce

    def directory(self) -> dict:
        return {
            "newNonce": self._url("/acme/new-nonce"),
            "newAccount": self._url("/acme/new-acct"),
            "newOrder": self._url("/acme/new-order"),
            "revokeCert": self._url("/acme/revoke-cert"),
            "keyChange": self._url("/acme/key-change"),
            "meta": {"termsOfService": self._url("/terms")},
        }

    def render(self, request):
        request.setHeader(b"Replay-Nonce", self._nonce().encode())
        request.setHeader(b"Cache-Control", b"no-store")
        entry = {
            "method": request.method.decode(),
            "path": request.path.decode(),
            "content_type": _header(request, b"content-type"),
            "accept": _header(request, b"accept"),
            "user_agent": _header(request, b"user-agent"),
            "jws": None, "payload": None,
        }
        body = b""
        try:
            body = self._dispatch(request, entry)
        except _Problem as problem:
            request.setResponseCode(problem.status)
            request.setHeader(b"Content-Type", b"application/problem+json")
            body = json.dumps({"type": "urn:ietf:params:acme:error:" + problem.code,
                               "detail": problem.detail, "status": problem.status}).encode()
        entry["status"] = request.code
        with open(self.record_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
        return b"" if request.method == b"HEAD" else body

    def _read_jws(self, request, entry) -> dict:
        try:
            jws = json.loads(request.content.read())
            protected = json.loads(_b64decode(jws["protected"]))
            payload_b64 = jws["payload"]
        except (ValueError, KeyError, TypeError):
            raise _Problem("malformed", "not a flattened JWS")
        nonce = protected.get("nonce")
        entry["jws"] = {
            "alg": protected.get("alg"), "kid": protected.get("kid"),
            "jwk": "jwk" in protected, "url": protected.get("url"),
            "url_matches": protected.get("url") == self._url(request.path.decode()),
            "nonce_known": nonce in self.nonces,
        }
        self.nonces.discard(nonce)
        payload = json.loads(_b64decode(payload_b64)) if payload_b64 else ""
        entry["payload"] = payload
        account_id = _thumbprint(protected["jwk"]) if "jwk" in protected else protected.get("kid")
        return {"protected": protected, "payload": payload, "account": account_id}

    def _json(self, request, document, status: int = 200, location: Optional[str] = None) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        if location:
            request.setHeader(b"Location", location.encode())
        return json.dumps(document).encode()

    # --- the resources ------------------------------------------------------

    def _dispatch(self, request, entry) -> bytes:
        method = request.method
        path = request.path.decode()
        if method == b"HEAD":
            return b""
        if path == "/directory" and method == b"GET":
            return self._json(request, self.directory())
        if path == "/acme/new-nonce":
            request.setResponseCode(204 if method == b"GET" else 200)
            return b""
        jws = self._read_jws(request, entry) if method == b"POST" else None
        parts = path.strip("/").split("/")
        if path == "/acme/new-acct" and jws:
            return self._new_account(request, jws)
        if parts[:2] == ["acme", "acct"] and len(parts) == 3:
            account = self._account_by_path(path)
            return self._json(request, account["body"])
        if path == "/acme/new-order" and jws:
            return self._new_order(request, jws)
        if parts[:2] == ["acme", "order"] and len(parts) == 3:
            return self._json(request, self._order(parts[2])["body"])
        if parts[:2] == ["acme", "finalize"] and len(parts) == 3 and jws:
            return self._finalize(request, parts[2], jws)
        if parts[:2] == ["acme", "authz"] and len(parts) == 3:
            return self._json(request, self._authz(parts[2])["body"])
        if parts[:2] == ["acme", "chall"] and len(parts) == 4:
            return self._challenge(request, parts[2], int(parts[3]), jws, entry)
        if parts[:2] == ["acme", "cert"] and len(parts) == 3 and parts[2] in self.certs:
            request.setHeader(b"Content-Type", PEM_CHAIN.encode())
            request.setHeader(b"Link", f'<{self._url("/acme/issuer")}>;rel="up"'.encode())
            return self.certs[parts[2]].encode()
        raise _Problem("malformed", f"nothing at {method.decode()} {path}", 404)

    def _new_account(self, request, jws) -> bytes:
        if "jwk" not in jws["protected"]:
            raise _Problem("malformed", "newAccount needs a jwk")
        thumbprint = _thumbprint(jws["protected"]["jwk"])
        account = self.accounts.get(thumbprint)
        if account is None:
            if jws["payload"].get("onlyReturnExisting"):
                raise _Problem("accountDoesNotExist", "no account for this key", 400)
            url = self._url(f"/acme/acct/{len(self.accounts) + 1}")
            account = {"url": url, "body": {"status": "valid", "contact": jws["payload"].get("contact", []),
                                            "key": jws["protected"]["jwk"]}}
            self.accounts[thumbprint] = account
            return self._json(request, account["body"], 201, account["url"])
        return self._json(request, account["body"], 200, account["url"])

    def _account_by_path(self, path: str) -> dict:
        for account in self.accounts.values():
            if account["url"] == self._url(path):
                return account
        # A kid the client brought from another CA (regr.json): answer for it anyway.
        return {"url": self._url(path), "body": {"status": "valid", "contact": []}}

    def _new_order(self, request, jws) -> bytes:
        identifiers = jws["payload"].get("identifiers") or []
        expires = _rfc3339(_now() + datetime.timedelta(days=7))
        authz_urls = [self._authz_for(jws["account"], ident["value"], expires) for ident in identifiers]
        order_id = secrets.token_hex(8)
        order = {"account": jws["account"], "body": {
            "status": "pending", "expires": expires, "identifiers": identifiers,
            "authorizations": authz_urls, "finalize": self._url(f"/acme/finalize/{order_id}")}}
        self.orders[order_id] = order
        self._refresh_order(order)
        return self._json(request, order["body"], 201, self._url(f"/acme/order/{order_id}"))

    def _authz_for(self, account: str, name: str, expires: str) -> str:
        if self.reuse_authz:
            for authz_id, authz in self.authzs.items():
                if authz["account"] == account and authz["body"]["identifier"]["value"] == name \
                        and authz["body"]["status"] == "valid":
                    return self._url(f"/acme/authz/{authz_id}")
        authz_id = secrets.token_hex(8)
        challenges = [{"type": typ, "status": "pending", "token": secrets.token_urlsafe(32),
                       "url": self._url(f"/acme/chall/{authz_id}/{i}")}
                      for i, typ in enumerate(("http-01", "dns-01", "tls-alpn-01"))]
        self.authzs[authz_id] = {"account": account, "body": {
            "identifier": {"type": "dns", "value": name}, "status": "pending",
            "expires": expires, "challenges": challenges}}
        return self._url(f"/acme/authz/{authz_id}")

    def _authz(self, authz_id: str) -> dict:
        if authz_id not in self.authzs:
            raise _Problem("malformed", "no such authorization", 404)
        return self.authzs[authz_id]

    def _order(self, order_id: str) -> dict:
        if order_id not in self.orders:
            raise _Problem("malformed", "no such order", 404)
        return self.orders[order_id]

    def _refresh_order(self, order: dict) -> None:
        body = order["body"]
        if body["status"] == "pending":
            ids = [url.rsplit("/", 1)[1] for url in body["authorizations"]]
            if all(self.authzs[i]["body"]["status"] == "valid" for i in ids):
                body["status"] = "ready"

    def _challenge(self, request, authz_id: str, index: int, jws, entry) -> bytes:
        authz = self._authz(authz_id)
        challenge = authz["body"]["challenges"][index]
        entry["challenge_status_before"] = challenge["status"]
        if jws is not None and jws["payload"] != "" and challenge["status"] == "pending":
            challenge["status"] = "valid"
            challenge["validated"] = _rfc3339(_now())
            authz["body"]["status"] = "valid"
            for order in self.orders.values():
                self._refresh_order(order)
        request.setHeader(b"Link", f'<{self._url(f"/acme/authz/{authz_id}")}>;rel="up"'.encode())
        return self._json(request, challenge)

    def _finalize(self, request, order_id: str, jws) -> bytes:
        order = self._order(order_id)
        self._refresh_order(order)
        if order["body"]["status"] != "ready":
            raise _Problem("orderNotReady", f"order is {order['body']['status']}", 403)
        csr_der = _b64decode(jws["payload"]["csr"])
        self.certs[order_id] = self.issuer.issue(csr_der)
        order["body"]["status"] = "valid"
        order["body"]["certificate"] = self._url(f"/acme/cert/{order_id}")
        return self._json(request, order["body"], 200, self._url(f"/acme/order/{order_id}"))


class _Problem(Exception):
    def __init__(self, code: str, detail: str, status: int = 400):
        super().__init__(detail)
        self.code, self.detail, self.status = code, detail, status


def _header(request, name: bytes) -> Optional[str]:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


def read_record(path: str) -> List[dict]:
    """The JSON lines a server wrote to ``path``."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class RecordingServer:
    """This module as a child process on a free loopback port (for
    synchronous tests that run clients as child processes too)."""

    def __init__(self, workdir: str, reuse_authz: bool = True):
        self.workdir = os.path.abspath(workdir)
        self.record_path = os.path.join(self.workdir, "record.jsonl")
        self.reuse_authz = reuse_authz
        self.process = None
        self.directory_url: Optional[str] = None

    def start(self) -> "RecordingServer":
        import subprocess
        import time

        os.makedirs(self.workdir, exist_ok=True)
        ready = os.path.join(self.workdir, "ready.json")
        log_path = os.path.join(self.workdir, "server.log")
        repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        command = [sys.executable, "-m", "tests.support.recording_acme", "--record", self.record_path,
                   "--ready-file", ready]
        if not self.reuse_authz:
            command.append("--no-authz-reuse")
        self.process = subprocess.Popen(command, cwd=repo_root, stdin=subprocess.DEVNULL,
                                        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not os.path.exists(ready):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                with open(log_path, errors="replace") as f:
                    raise RuntimeError(f"the recording ACME server did not start:\n{f.read()}")
            time.sleep(0.05)
        with open(ready) as f:
            self.directory_url = json.load(f)["directory"]
        return self

    def record(self) -> List[dict]:
        return read_record(self.record_path)

    def stop(self) -> None:
        import subprocess

        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", required=True)
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--no-authz-reuse", action="store_true")
    args = parser.parse_args(argv)

    from twisted.internet import reactor

    site_resource = RecordingACME("", args.record, reuse_authz=not args.no_authz_reuse)
    site = server.Site(site_resource)
    site.noisy = False
    port = reactor.listenTCP(args.port, site, interface="127.0.0.1")
    site_resource.base = f"http://127.0.0.1:{port.getHost().port}"
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"port": port.getHost().port, "directory": site_resource.base + "/directory"}, f)
    os.replace(tmp, args.ready_file)
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
