#!/usr/bin/env python3
"""
A legacy ACME v1 client for the matrix: txacme 0.9.3's v1 ``Client`` (the
Twisted ACME library behind marathon-acme and txacme's own certificate
service), driven the way those services drove it, for an account that
already exists (no new-reg): new-authz, the http-01 file, the challenge,
``poll_until_valid``, new-cert with ``csr_for_names`` in txacme's own
``CertificateRequest`` (as its issuing service sends it), and the chain
through ``Link rel="up"``.

Run it with the interpreter of the txacme venv (``.venvs/txacme-0.9.3``)::

    python txacme_client.py DIRECTORY ACCOUNT_KEY_PEM NAME CHALLENGE_DIR OUT_DIR

Writes ``OUT_DIR/cert.der`` and ``OUT_DIR/chain/<n>.der``; exits 1 with the
error on stderr when anything fails.
"""

import os
import sys

from cryptography.hazmat.primitives import serialization
from josepy import RS256, JWKRSA
from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.python.url import URL

from acme import challenges
from txacme.client import Client, fqdn_identifier, poll_until_valid
from txacme.messages import CertificateRequest
from txacme.util import csr_for_names, generate_private_key


async def obtain(reactor, directory, key_path, name, challenge_dir, out_dir):
    with open(key_path, "rb") as f:
        key = JWKRSA(key=serialization.load_pem_private_key(f.read(), password=None))
    client = await Client.from_url(reactor, URL.fromText(directory), key, alg=RS256)
    authzr = await client.request_challenges(fqdn_identifier(name))
    challb = next(c for c in authzr.body.challenges if isinstance(c.chall, challenges.HTTP01))
    response, validation = challb.response_and_validation(key)
    token_path = os.path.join(challenge_dir, challb.chall.encode("token"))
    with open(token_path, "w") as f:
        f.write(validation)
    try:
        await client.answer_challenge(challb, response)
        await poll_until_valid(authzr, reactor, client, timeout=60)
    finally:
        os.unlink(token_path)
    csr = csr_for_names([name], generate_private_key("rsa"))
    certr = await client.request_issuance(CertificateRequest(csr=csr))
    chain = await client.fetch_chain(certr)
    os.makedirs(os.path.join(out_dir, "chain"), exist_ok=True)
    with open(os.path.join(out_dir, "cert.der"), "wb") as f:
        f.write(certr.body)
    for index, issuer in enumerate(chain):
        with open(os.path.join(out_dir, "chain", f"{index}.der"), "wb") as f:
            f.write(issuer.body)
    print(f"certificate for {name} in {out_dir} ({len(chain)} issuer(s))", flush=True)


def main(reactor, *args):
    return Deferred.fromCoroutine(obtain(reactor, *args))


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    react(main, sys.argv[1:])
