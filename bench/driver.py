#!/usr/bin/env python3
"""
One benchmark client: the acme 1.32 library, either as a native ACME v2
client (``ClientV2`` straight to the CA) or as a legacy ACME v1 client
(``Client`` through the gateway), or as a native client following the v1
shape (``native-v1``: straight to the CA, the v2 requests the legacy flow
makes the gateway send: one order per name, then one for all of them).  Run it with the legacy venv's interpreter
(``.venvs/certbot1/bin/python``), so both modes use the same library.

    driver.py JOB.json

The job names the mode, the directory, the account key, the webroot the
http-01 responder serves, the poll interval and the certificates (lists of
names).  The driver sets up (directory, account) untimed, prints ``READY``
and waits for a line on stdin (the start barrier shared by concurrent
drivers), then obtains the certificates one after another and writes
per-certificate timings to the job's ``out`` file.

Both modes use the same flow and the same polling: request authorizations
(v2: ``newOrder``; v1: ``new-authz`` per name), publish every http-01 key
authorization and answer the challenges, poll each authorization
immediately and then every ``poll_interval`` seconds until it is valid,
request the certificate (v2: finalize, then poll the order the same way and
download the chain; v1: ``new-cert``, then follow ``Link: rel="up"`` for the
chain).  A fresh EC P-256 key and CSR per certificate; EC P-256 account keys.

Each certificate's result also lists its client steps (``steps``: name,
wall-clock start and end), which the benchmark lines up with the upstream
requests the pass-through saw, to show where the time goes.
"""

import json
import os
import sys
import time
import traceback
import warnings

warnings.simplefilter("ignore")

import josepy as jose  # noqa: E402
import OpenSSL  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from acme import challenges, client, crypto_util, errors, messages  # noqa: E402

USER_AGENT = "acme-gateway-bench (acme/1.32.0)"


class PollTimeout(Exception):
    pass


class Steps:
    """
    The client steps of one certificate, timed (wall clock, so that the
    benchmark can line them up with the pass-through's request log).
    """

    def __init__(self):
        self.done = []

    def __call__(self, name, function, *args):
        started = time.time()
        try:
            return function(*args)
        finally:
            self.done.append([name, started, time.time()])


def load_key(path):
    with open(path, "rb") as f:
        private_key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or private_key.curve.name != "secp256r1":
        raise SystemExit("bench account keys are EC P-256")
    return jose.JWKEC(key=private_key), jose.ES256


def make_csr(names):
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return crypto_util.make_csr(key_pem, names)


class Webroot:
    def __init__(self, root):
        self.directory = os.path.join(root, ".well-known", "acme-challenge")
        os.makedirs(self.directory, exist_ok=True)
        self.files = []

    def publish(self, challb, account_key):
        response, validation = challb.response_and_validation(account_key)
        path = os.path.join(self.directory, challb.chall.encode("token"))
        with open(path, "w") as f:
            f.write(validation)
        self.files.append(path)
        return response

    def cleanup(self):
        for path in self.files:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.files = []


def http01(authzr):
    for challb in authzr.body.challenges:
        if isinstance(challb.chall, challenges.HTTP01):
            return challb
    raise RuntimeError(f"{authzr.uri} offers no http-01")


def poll_until_valid(poll, authzr, interval, deadline, counter, steps):
    """
    Poll at once, then every ``interval`` seconds, until the authorization
    is valid (or invalid: raise).
    """
    while True:
        authzr, _ = steps("authorization poll", poll, authzr)
        counter[0] += 1
        status = authzr.body.status
        if status == messages.STATUS_VALID:
            return authzr
        if status == messages.STATUS_INVALID:
            errors = [str(c.error) for c in authzr.body.challenges if c.error is not None]
            raise RuntimeError(f"authorization {authzr.uri} invalid: {errors}")
        if time.monotonic() + interval > deadline:
            raise PollTimeout(f"authorization {authzr.uri} still {status}")
        time.sleep(interval)


class Native:
    """``ClientV2`` straight to the CA."""

    def __init__(self, job):
        self.job = job
        self.key, alg = load_key(job["key"])
        self.net = client.ClientNetwork(self.key, alg=alg, user_agent=USER_AGENT,
                                        verify_ssl=job.get("ca_bundle") or True)
        directory = messages.Directory.from_json(self.net.get(job["directory"]).json())
        self.acme = client.ClientV2(directory, net=self.net)
        try:
            self.acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
        except errors.ConflictError as existing:  # registered by an earlier job
            self.net.account = messages.RegistrationResource(
                uri=existing.location, body=messages.Registration())

    def issue(self, names, webroot, interval, deadline, counter, steps):
        acme = self.acme
        csr_pem = make_csr(names)
        orderr = steps("newOrder (+ authorizations)", acme.new_order, csr_pem)
        pending = []
        for authzr in orderr.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue
            challb = http01(authzr)
            steps("answer challenge", acme.answer_challenge, challb, webroot.publish(challb, self.key))
            pending.append(authzr)
        for authzr in pending:
            poll_until_valid(acme.poll, authzr, interval, deadline, counter, steps)
        return self.finish(orderr, csr_pem, interval, deadline, counter, steps)

    def finish(self, orderr, csr_pem, interval, deadline, counter, steps):
        """Finalize ``orderr`` (ready), poll it until valid, download the chain."""
        acme = self.acme
        csr = OpenSSL.crypto.load_certificate_request(OpenSSL.crypto.FILETYPE_PEM, csr_pem)
        response = steps("finalize", acme._post, orderr.body.finalize,
                         messages.CertificateRequest(csr=jose.ComparableX509(csr)))
        order = messages.Order.from_json(response.json())
        order_polls = 0
        # Like the authorizations: poll at once, then every ``interval``.
        while order.status != messages.STATUS_VALID or order.certificate is None:
            if order.status == messages.STATUS_INVALID:
                raise RuntimeError(f"order {orderr.uri} invalid: {order.error}")
            if order_polls:
                if time.monotonic() + interval > deadline:
                    raise PollTimeout(f"order {orderr.uri} still {order.status}")
                time.sleep(interval)
            order = messages.Order.from_json(steps("order poll", acme._post_as_get, orderr.uri).json())
            order_polls += 1
            counter[0] += 1
        fullchain = steps("certificate download", acme._post_as_get, order.certificate).text
        return fullchain


class NativeV1Shaped(Native):
    """
    ``ClientV2`` straight to the CA, following the v1 shape: the ACME v2
    requests a legacy client's flow makes the gateway send for a
    multi-name certificate.  For each name in turn one single-name order
    (the gateway's ``new-authz``), its authorization read and its
    challenge answered; then every authorization polled; then the order
    for all the names (the gateway's ``new-cert``: the CA answers it
    ``ready`` from the authorizations just validated, so they are not
    read again, as the gateway does not), finalize, order poll, download.
    Measured beside the native client and the gateway, it says how much
    of the gateway's time over native is the v1 protocol's shape (four
    orders for three names) and how much is the gateway's own.
    """

    def new_order(self, names, read_authorizations):
        """``newOrder`` for ``names``; the authorizations read when asked."""
        acme = self.acme
        identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name) for name in names]
        response = acme._post(acme.directory["newOrder"], messages.NewOrder(identifiers=identifiers))
        body = messages.Order.from_json(response.json())
        authorizations = []
        if read_authorizations:
            authorizations = [acme._authzr_from_response(acme._post_as_get(url), uri=url)
                              for url in body.authorizations]
        return messages.OrderResource(body=body, uri=response.headers.get("Location"),
                                      authorizations=authorizations)

    def issue(self, names, webroot, interval, deadline, counter, steps):
        pending = []
        for name in names:
            orderr = steps("newOrder, 1 name (+ authorization)", self.new_order, [name], True)
            for authzr in orderr.authorizations:
                if authzr.body.status == messages.STATUS_VALID:
                    continue
                challb = http01(authzr)
                steps("answer challenge", self.acme.answer_challenge, challb, webroot.publish(challb, self.key))
                pending.append(authzr)
        for authzr in pending:
            poll_until_valid(self.acme.poll, authzr, interval, deadline, counter, steps)
        csr_pem = make_csr(names)
        orderr = steps("newOrder, all names", self.new_order, names, False)
        if orderr.body.status not in (messages.STATUS_READY, messages.STATUS_VALID):
            raise RuntimeError(f"order {orderr.uri} for {names} is {orderr.body.status}, not ready: "
                               "the CA did not reuse the authorizations just validated")
        return self.finish(orderr, csr_pem, interval, deadline, counter, steps)


class Legacy:
    """The v1 ``Client`` through the gateway."""

    def __init__(self, job):
        self.job = job
        self.key, alg = load_key(job["key"])
        self.net = client.ClientNetwork(self.key, alg=alg, user_agent=USER_AGENT,
                                        verify_ssl=job.get("ca_bundle") or True)
        directory = messages.Directory.from_json(self.net.get(job["directory"]).json())
        self.acme = client.Client(directory, key=self.key, net=self.net)
        try:
            regr = self.acme.register(messages.NewRegistration.from_data(email="bench@example.test"))
        except errors.ConflictError:  # 409: registered by an earlier job
            pass
        else:
            if regr.terms_of_service:
                self.acme.agree_to_tos(regr)

    def issue(self, names, webroot, interval, deadline, counter, steps):
        acme = self.acme
        csr_pem = make_csr(names)
        authzrs = []
        pending = []
        for name in names:
            authzr = steps("new-authz", acme.request_domain_challenges, name)
            authzrs.append(authzr)
            if authzr.body.status == messages.STATUS_VALID:
                continue
            challb = http01(authzr)
            steps("answer challenge", acme.answer_challenge, challb, webroot.publish(challb, self.key))
            pending.append(authzr)
        updated = {}
        for authzr in pending:
            updated[authzr.uri] = poll_until_valid(acme.poll, authzr, interval, deadline, counter, steps)
        authzrs = [updated.get(a.uri, a) for a in authzrs]
        csr = OpenSSL.crypto.load_certificate_request(OpenSSL.crypto.FILETYPE_PEM, csr_pem)
        certr = steps("new-cert", acme.request_issuance, jose.ComparableX509(csr), authzrs)
        chain = steps("issuer chain", acme.fetch_chain, certr)
        pems = [OpenSSL.crypto.dump_certificate(OpenSSL.crypto.FILETYPE_PEM, c.wrapped)
                for c in [certr.body] + chain]
        return b"".join(pems).decode("ascii")


#: The driver of each mode (``job["mode"]``).
MODES = {"native": Native, "native-v1": NativeV1Shaped, "legacy": Legacy}


def main(argv):
    with open(argv[1]) as f:
        job = json.load(f)
    os.environ.pop("REQUESTS_CA_BUNDLE", None)
    session = MODES[job["mode"]](job)
    webroot = Webroot(job["webroot"])
    interval = float(job["poll_interval"])
    print("READY", flush=True)
    if job.get("barrier", True):
        sys.stdin.readline()
    results = []
    first_chain = None
    for names in job["certs"]:
        counter = [0]
        steps = Steps()
        start = time.monotonic()
        wall_start = time.time()
        try:
            fullchain = session.issue(names, webroot, interval, start + float(job.get("timeout", 60)),
                                      counter, steps)
        except Exception as error:
            end = time.monotonic()
            detail = f"{type(error).__name__}: {error}"
            results.append({"names": names, "start": start, "end": end, "ok": False,
                            "error": detail[:500], "polls": counter[0]})
            if job.get("verbose"):
                traceback.print_exc()
        else:
            end = time.monotonic()
            results.append({"names": names, "start": start, "end": end, "ok": True, "polls": counter[0],
                            "wall_start": wall_start, "steps": steps.done})
            if first_chain is None:
                first_chain = fullchain
        finally:
            webroot.cleanup()
    with open(job["out"], "w") as f:
        json.dump({"mode": job["mode"], "results": results, "first_chain": first_chain}, f)
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
