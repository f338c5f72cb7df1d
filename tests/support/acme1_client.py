#!/usr/bin/env python3
"""
A legacy ACME v1 client for the end-to-end tests: the acme 1.32 library's v1
``acme.client.Client`` driven step by step, the way integrations built on that
library talked to Boulder's v1 API.

Run it with the legacy venv's interpreter (``tests/legacy-clients.txt``), never
the gateway's: it needs acme 1.32, josepy < 1.14 and pyOpenSSL.  The tests use
``tests.support.legacy.run_acme1_client``; by hand::

    .venvs/certbot1/bin/python tests/support/acme1_client.py \\
        --directory http://127.0.0.1:PORT/directory --key account.pem \\
        --names a.example.test,b.example.test --challenge http-01 \\
        --webroot WEBROOT --out OUT --register

Flow: optionally register and agree to the terms (a 409 "already registered"
counts as finding the existing account), or only look the account up through
new-reg's 409; new-authz for every name; provision the challenge (http-01: the
key authorization in ``WEBROOT/.well-known/acme-challenge/<token>``; dns-01: a
TXT record through the test DNS server's HTTP API); answer it; poll the
authorizations; request issuance with a fresh EC P-256 CSR; fetch the chain
through ``Link: rel="up"``; optionally revoke.

Output in ``--out``: ``cert.der``, ``cert.pem``, ``chain/0.der``, ``chain/1.der``
..., ``chain.pem``, ``privkey.pem`` (the certificate's key) and
``result.json`` ``{"names", "authz_uris", "cert_uri", "chain_uri",
"challenge_uris", "account_uri", "revoked"}``.  On failure: exit status 1, the
error on stderr, and ``error.json`` ``{"error", "detail", "problem"}`` (the
ACME problem document when the server sent one).
"""

import argparse
import json
import os
import sys
import traceback
import urllib.request
import warnings

warnings.simplefilter("ignore", DeprecationWarning)
warnings.simplefilter("ignore", PendingDeprecationWarning)

import josepy as jose  # noqa: E402
import OpenSSL  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402

from acme import challenges, client, crypto_util, errors, messages  # noqa: E402

try:  # the acme release of the venv running this (1.32 usually; 0.31, 1.12 in the matrix)
    from importlib.metadata import version as _version

    USER_AGENT = f"acme-gateway-e2e acme1_client (acme/{_version('acme')})"
except Exception:  # noqa: BLE001 - a user agent is no reason to fail
    USER_AGENT = "acme-gateway-e2e acme1_client"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Obtain (and optionally revoke) a certificate with acme 1.32's ACME v1 Client."
    )
    parser.add_argument("--directory", required=True, help="the v1 directory URL")
    parser.add_argument("--key", required=True, help="PEM file of the account key (RSA or EC)")
    parser.add_argument("--ca-bundle", help="PEM bundle that verifies an https directory")
    parser.add_argument("--names", required=True, help="comma-separated DNS names")
    parser.add_argument("--challenge", choices=("http-01", "dns-01"), default="http-01")
    parser.add_argument("--webroot", help="http-01: write WEBROOT/.well-known/acme-challenge/<token>")
    parser.add_argument("--dns-api", help="dns-01: the test DNS server's HTTP API (POST /set-txt)")
    parser.add_argument("--out", required=True, help="directory for the certificate and result.json")
    parser.add_argument("--register", action="store_true",
                        help="new-reg and agree to the terms first (409 = existing account, fine)")
    parser.add_argument("--find-existing", action="store_true",
                        help="look the account up with new-reg and require 409 + Location")
    parser.add_argument("--email", default="legacy-acme1@example.test", help="contact for --register")
    parser.add_argument("--revoke", action="store_true", help="revoke the certificate once issued")
    parser.add_argument("--revoke-reason", type=int, default=None, help="reason code for --revoke")
    parser.add_argument("--mintime", type=int, default=2,
                        help="seconds between authorization polls (1 busy-polls in acme 1.32)")
    parser.add_argument("--max-attempts", type=int, default=15, help="polls per authorization")
    args = parser.parse_args(argv)
    args.names = [n.strip() for n in args.names.split(",") if n.strip()]
    if not args.names:
        parser.error("--names is empty")
    if args.challenge == "http-01" and not args.webroot:
        parser.error("http-01 needs --webroot")
    if args.challenge == "dns-01" and not args.dns_api:
        parser.error("dns-01 needs --dns-api")
    if args.mintime < 2:
        parser.error("--mintime below 2 makes acme 1.32 busy-poll")
    return args


def load_account_key(path):
    """
    The account key as a josepy JWK and the JWS algorithm acme 1.32 signs with.
    """
    with open(path, "rb") as f:
        private_key = serialization.load_pem_private_key(f.read(), password=None)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return jose.JWKRSA(key=private_key), jose.RS256
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": jose.ES256, "secp384r1": jose.ES384, "secp521r1": jose.ES512}
        try:
            return jose.JWKEC(key=private_key), algs[private_key.curve.name]
        except KeyError:
            raise SystemExit(f"unsupported EC curve {private_key.curve.name}")
    raise SystemExit(f"unsupported account key type {type(private_key).__name__}")


def dns_api_post(api_url, path, body):
    request = urllib.request.Request(
        api_url.rstrip("/") + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        response.read()


class Provisioner:
    """
    Publishes challenge responses and takes them down again afterwards.
    """

    def __init__(self, args):
        self.args = args
        self.files = []
        self.records = []

    def publish(self, name, challb, account_key):
        response, validation = challb.response_and_validation(account_key)
        if isinstance(challb.chall, challenges.HTTP01):
            directory = os.path.join(self.args.webroot, ".well-known", "acme-challenge")
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, challb.chall.encode("token"))
            with open(path, "w") as f:
                f.write(validation)
            self.files.append(path)
            print(f"http-01 {name}: wrote {path}", flush=True)
        else:
            # A wildcard's TXT record lives at its base domain (RFC 8555 §8.4).
            base = name[2:] if name.startswith("*.") else name
            record = challb.chall.validation_domain_name(base) + "."
            dns_api_post(self.args.dns_api, "/set-txt", {"host": record, "value": validation})
            self.records.append(record)
            print(f"dns-01 {name}: TXT {record} {validation}", flush=True)
        return response

    def cleanup(self):
        for path in self.files:
            try:
                os.unlink(path)
            except OSError:
                pass
        for record in self.records:
            try:
                dns_api_post(self.args.dns_api, "/clear-txt", {"host": record})
            except OSError:
                pass


def find_account(acme, email, register, require_existing):
    """
    new-reg: register (and agree), or learn the existing account's URI from 409.
    """
    new_reg = messages.NewRegistration.from_data(email=email) if register else messages.NewRegistration()
    try:
        regr = acme.register(new_reg)
    except errors.ConflictError as conflict:
        uri = conflict.location
        print(f"existing account: {uri}", flush=True)
        return uri
    if require_existing:
        raise RuntimeError(f"new-reg created a new account at {regr.uri}; expected 409 for an existing one")
    print(f"registered: {regr.uri} terms: {regr.terms_of_service}", flush=True)
    if regr.terms_of_service:
        regr = acme.agree_to_tos(regr)
        print(f"agreed: {regr.body.agreement}", flush=True)
    return regr.uri


def make_csr(names):
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    csr_pem = crypto_util.make_csr(key_pem, names)
    csr = OpenSSL.crypto.load_certificate_request(OpenSSL.crypto.FILETYPE_PEM, csr_pem)
    return jose.ComparableX509(csr), key_pem


def der_of(comparable):
    return OpenSSL.crypto.dump_certificate(OpenSSL.crypto.FILETYPE_ASN1, comparable.wrapped)


def pem_of(comparable):
    return OpenSSL.crypto.dump_certificate(OpenSSL.crypto.FILETYPE_PEM, comparable.wrapped)


def write(path, data, mode=0o644):
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
        f.write(data)


def run(args):
    os.makedirs(args.out, exist_ok=True)
    if args.ca_bundle:
        # requests falls back to these when verify=True.
        os.environ["REQUESTS_CA_BUNDLE"] = args.ca_bundle
        os.environ.pop("CURL_CA_BUNDLE", None)
    account_key, alg = load_account_key(args.key)
    net = client.ClientNetwork(
        account_key, alg=alg, user_agent=USER_AGENT, verify_ssl=args.ca_bundle or True
    )
    directory = messages.Directory.from_json(net.get(args.directory).json())
    acme = client.Client(directory, key=account_key, net=net)

    result = {
        "names": args.names, "authz_uris": [], "challenge_uris": [], "cert_uri": None,
        "chain_uri": None, "account_uri": None, "revoked": False,
    }
    if args.register or args.find_existing:
        result["account_uri"] = find_account(acme, args.email, args.register, args.find_existing)

    wanted = challenges.HTTP01 if args.challenge == "http-01" else challenges.DNS01
    provisioner = Provisioner(args)
    try:
        authzrs = []
        for name in args.names:
            authzr = acme.request_domain_challenges(name)
            offered = [c.chall.typ for c in authzr.body.challenges]
            print(f"authz {name}: {authzr.uri} {authzr.body.status} offers {offered}", flush=True)
            result["authz_uris"].append(authzr.uri)
            authzrs.append(authzr)
            if authzr.body.status == messages.STATUS_VALID:
                continue
            challb = next((c for c in authzr.body.challenges if isinstance(c.chall, wanted)), None)
            if challb is None:
                raise RuntimeError(f"{authzr.uri} offers no {args.challenge}: {offered}")
            response = provisioner.publish(name, challb, account_key)
            challr = acme.answer_challenge(challb, response)
            result["challenge_uris"].append(challr.uri)
            print(f"answered {challr.uri} (up: {challr.authzr_uri})", flush=True)

        csr, cert_key_pem = make_csr(args.names)
        write(os.path.join(args.out, "privkey.pem"), cert_key_pem, 0o600)
        certr, _ = acme.poll_and_request_issuance(
            csr, authzrs, mintime=args.mintime, max_attempts=args.max_attempts
        )
    finally:
        provisioner.cleanup()
    result["cert_uri"] = certr.uri
    result["chain_uri"] = certr.cert_chain_uri
    print(f"certificate: {certr.uri} (up: {certr.cert_chain_uri})", flush=True)

    chain = acme.fetch_chain(certr)
    write(os.path.join(args.out, "cert.der"), der_of(certr.body))
    write(os.path.join(args.out, "cert.pem"), pem_of(certr.body))
    chain_dir = os.path.join(args.out, "chain")
    os.makedirs(chain_dir, exist_ok=True)
    for index, issuer in enumerate(chain):
        write(os.path.join(chain_dir, f"{index}.der"), der_of(issuer))
    write(os.path.join(args.out, "chain.pem"), b"".join(pem_of(c) for c in chain))
    print(f"chain: {len(chain)} certificate(s)", flush=True)

    if args.revoke:
        acme.revoke(certr.body, args.revoke_reason if args.revoke_reason is not None else 0)
        result["revoked"] = True
        print("revoked", flush=True)

    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except Exception as error:  # report every failure the same way, for the tests
        problem = error.to_partial_json() if isinstance(error, messages.Error) else None
        report = {"error": type(error).__name__, "detail": str(error), "problem": problem}
        try:
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, "error.json"), "w") as f:
                json.dump(report, f, indent=2, default=str)
        except OSError:
            pass
        traceback.print_exc()
        print(f"acme1_client failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        if problem is not None:
            print(f"ACME problem: {json.dumps(problem, default=str)}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
