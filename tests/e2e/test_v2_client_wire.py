"""
What real ACME v2 clients send -- the draft-era ones the gateway's
``/v2/directory`` face is for, and a current one -- measured against the
recording server (`tests.support.recording_acme`), which answers as Boulder
did in 2018-2019 (plain GETs and POST-as-GET alike, ``{}`` to a valid
challenge answered unchanged).  Each client gets a certificate and renews
it with the account it already had; the CA reuses the valid authorization,
as Let's Encrypt did, so the renewal shows what the client does with it.

These tests pin down the findings written in `tests.support.v2_clients`'s
docstring, so that a face built on them fails here first if a finding was
wrong.
"""

from __future__ import annotations

import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.matrix import WebrootServer
from tests.support.recording_acme import RecordingServer
from tests.support.stack import free_port
from tests.support.v2_clients import ROWS

pytestmark = pytest.mark.e2e

NAME = "wire.example.test"
#: The account URL a migrating machine's regr.json holds: Let's Encrypt's.
LE_ACCOUNT_URL = "https://acme-v02.api.letsencrypt.org/acme/acct/31415926"
JOSE = "application/jose+json"

_ROWS = {row.id: row for row in ROWS}


def _record_of(row_id, tmp_path):
    """Issue and renew with ``row_id``: the record of each run, and the
    URL the recording server gives the first account it creates."""
    row = _ROWS[row_id]
    missing = row.missing()
    if missing:
        pytest.fail(missing, pytrace=False)
    server = RecordingServer(str(tmp_path / "ca")).start()
    webroot = WebrootServer(str(tmp_path / "webroot"), free_port()).start()
    try:
        keys_dir = str(tmp_path / "keys")
        os.makedirs(keys_dir)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        driver = row.prepare(str(tmp_path / "client"), server.directory_url, webroot, key, keys_dir,
                             LE_ACCOUNT_URL)
        issued = driver.issue(NAME)
        first = server.record()
        renewed = driver.renew(NAME)
        second = server.record()[len(first):]
    finally:
        webroot.stop()
        server.stop()
    for certificate in (issued, renewed):
        leaf = x509.load_der_x509_certificate(certificate.leaf_der)
        assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.DNSName) == [NAME]
    assert issued.leaf_der != renewed.leaf_der
    return first, second, server.directory_url.replace("/directory", "/acme/acct/1")


def _kind(entry) -> str:
    """``authz``, ``order``, ``cert``, ``chall``, ``new-nonce`` … from the path."""
    parts = entry["path"].strip("/").split("/")
    return parts[1] if len(parts) > 1 else parts[0]


def _reads(run, kind):
    return [e for e in run if _kind(e) == kind and e["method"] in ("GET", "POST")
            and not (e["method"] == "POST" and e["payload"] not in ("", None))]


def test_acme_tiny_4_0_4(tmp_path):
    first, second, account_url = _record_of("acme-tiny-4.0.4", tmp_path)
    for run in (first, second):
        # Content-Type application/jose+json and User-Agent acme-tiny on every request
        assert {e["content_type"] for e in run} == {JOSE}
        assert {e["user_agent"] for e in run} == {"acme-tiny"}
        posts = [e for e in run if e["method"] == "POST"]
        # a fresh nonce for every signed request, by a plain GET of newNonce
        assert [e["method"] for e in run if _kind(e) == "new-nonce"] == ["GET"] * len(posts)
        assert all(e["jws"]["nonce_known"] and e["jws"]["url_matches"] for e in posts)
        # newAccount with the jwk on every run, then kid = the Location it got
        assert posts[0]["path"] == "/acme/new-acct" and posts[0]["jws"]["jwk"]
        assert posts[0]["payload"] == {"termsOfServiceAgreed": True}
        assert {e["jws"]["kid"] for e in posts[1:]} == {account_url}
        # plain GETs of the authorization, the order and the certificate
        for kind in ("authz", "order", "cert"):
            assert _reads(run, kind) and {e["method"] for e in _reads(run, kind)} == {"GET"}
        challenge_posts = [e for e in posts if _kind(e) == "chall"]
        assert [e["payload"] for e in challenge_posts] == [{}]
    assert [e["status"] for e in first if e["path"] == "/acme/new-acct"] == [201]
    assert [e["status"] for e in second if e["path"] == "/acme/new-acct"] == [200]
    # the renewal POSTs {} to the challenge of the reused, already valid authorization
    assert [e["challenge_status_before"] for e in first if _kind(e) == "chall"] == ["pending"]
    assert [e["challenge_status_before"] for e in second if _kind(e) == "chall"] == ["valid"]


def test_certbot_0_27_1_in_v2_mode(tmp_path):
    first, second, _ = _record_of("certbot-0.27.1", tmp_path)
    for run in (first, second):
        posts = [e for e in run if e["method"] == "POST"]
        # no newAccount: kid is regr.json's account URL, sent as it is
        assert "/acme/new-acct" not in [e["path"] for e in run]
        assert {e["jws"]["kid"] for e in posts} == {LE_ACCOUNT_URL}
        assert all(e["content_type"] == JOSE for e in posts)
        # nonces: a HEAD of the URL it is about to POST to, not newNonce
        heads = [e for e in run if e["method"] == "HEAD"]
        assert heads and all(_kind(e) != "new-nonce" for e in heads)
        assert heads[0]["path"] == posts[0]["path"] == "/acme/new-order"
        assert "new-nonce" not in {_kind(e) for e in run}
        assert all(e["jws"]["nonce_known"] and e["jws"]["url_matches"] for e in posts)
        # plain GETs (no Content-Type) of authorizations, the order and the certificate
        for kind in ("authz", "order", "cert"):
            reads = _reads(run, kind)
            assert reads and {(e["method"], e["content_type"]) for e in reads} == {("GET", None)}
        # v1-style payloads
        assert posts[0]["payload"]["resource"] == "new-order"
        [challenge] = [e for e in posts if _kind(e) == "chall"]
        assert challenge["payload"]["resource"] == "challenge"
        assert challenge["payload"]["type"] == "http-01"
        assert "keyAuthorization" in challenge["payload"]
        assert [e["payload"]["resource"] for e in posts if _kind(e) == "finalize"] == ["new-cert"]
    # it answers the challenge of the reused, already valid authorization too
    assert [e["challenge_status_before"] for e in second if _kind(e) == "chall"] == ["valid"]


def test_certbot_5_8_0(tmp_path):
    first, second, _ = _record_of("certbot-5.8.0", tmp_path)
    for run in (first, second):
        posts = [e for e in run if e["method"] == "POST"]
        assert "/acme/new-acct" not in [e["path"] for e in run]
        assert {e["jws"]["kid"] for e in posts} == {LE_ACCOUNT_URL}
        assert all(e["content_type"] == JOSE for e in posts)
        # every read is POST-as-GET; the only GET is the directory
        assert [e["path"] for e in run if e["method"] == "GET"] == ["/directory"]
        for kind in ("authz", "order", "cert"):
            reads = _reads(run, kind)
            assert reads and {e["payload"] for e in reads} == {""}
        assert [(e["method"], _kind(e)) for e in run if e["method"] == "HEAD"] == [("HEAD", "new-nonce")]
    assert [e["payload"] for e in first if _kind(e) == "chall"] == [{}]
    # the renewal leaves the reused, valid authorization alone
    assert [e for e in second if _kind(e) == "chall"] == []
