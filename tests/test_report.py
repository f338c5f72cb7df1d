"""
The migration report (`gateway.operations.report`) and its page
(`gateway.operations.statuspage`): durations, classification, ordering, the text and
JSON forms, what a v1 request tells about its client, and an HTML page
that shows each client and escapes what clients control.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.operations import statuspage
from gateway.keys.jose import b64url
from gateway.operations.report import (
    ACTIVE,
    FAILING,
    MIGRATED,
    ago,
    build_report,
    classify,
    failure_reason,
    format_duration,
    parse_duration,
    product_of,
    requested_names,
    visit_for,
)
from gateway.operations.scope import RequestScope
from gateway.store.records import LegacyClient, timestamp_instant

NOW = timestamp_instant("2026-11-28T17:00:00Z").timestamp()
DAY = 86400.0


def client(ua="CertbotACMEClient/1.32.0", address="192.0.2.7", last_seen="2026-11-28T16:55:00Z",
           last_success="2026-11-28T16:55:00Z", last_failure=None, reason=None) -> LegacyClient:
    return LegacyClient(
        user_agent=ua, address=address, thumbprints=("tp-abcdefghijklmnop",),
        names=("a.example.test",), first_seen="2026-09-01T00:00:00Z", last_seen=last_seen,
        successes=10, failures=1 if last_failure else 0, certificates=2,
        last_success=last_success, last_failure=last_failure, last_failure_reason=reason,
    )


@pytest.mark.parametrize("text, seconds", [
    ("90d", 90 * DAY), ("36h", 36 * 3600), ("15m", 900), ("30s", 30), ("600", 600),
    ("2w", 14 * DAY), ("1.5h", 5400), (" 7d ", 7 * DAY),
])
def test_parse_duration(text, seconds):
    """
    Durations are spelled with a unit suffix or as plain seconds.
    """
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5d", "ten days", "5y", "5 d x"])
def test_parse_duration_rejects(text):
    """
    Anything else, and durations that are not positive, are refused.
    """
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration_and_ago():
    """
    Durations and ages read the way a person says them.
    """
    assert format_duration(90 * DAY) == "90d"
    assert format_duration(7200) == "2h"
    assert format_duration(90) == "90s"
    assert ago(5) == "just now"
    assert ago(61) == "1 minute ago"
    assert ago(3 * 3600 + 5) == "3 hours ago"
    assert ago(40 * DAY) == "40 days ago"


def test_classify():
    """
    Silent for longer than the period: migrated; else latest outcome a
    failure: failing; else active.
    """
    assert classify(client(), NOW, 90 * DAY) == ACTIVE
    failing = client(last_failure="2026-11-28T16:56:00Z", reason="new-cert 403")
    assert classify(failing, NOW, 90 * DAY) == FAILING
    recovered = client(last_success="2026-11-28T16:57:00Z", last_failure="2026-11-28T16:56:00Z")
    assert classify(recovered, NOW, 90 * DAY) == ACTIVE
    old = client(last_seen="2026-08-01T00:00:00Z", last_success="2026-08-01T00:00:00Z")
    assert classify(old, NOW, 90 * DAY) == MIGRATED
    assert classify(client(), NOW, 60) == MIGRATED


def test_report_orders_and_summarises():
    """
    Failing clients come first, then active, then migrated; the summary
    counts them; the migration is done only when every client is migrated.
    """
    report = build_report([
        client(ua="old", last_seen="2026-06-01T00:00:00Z", last_success="2026-06-01T00:00:00Z"),
        client(ua="ok"),
        client(ua="bad", last_failure="2026-11-28T16:58:00Z", reason="new-authz 400"),
    ], NOW, 90 * DAY)
    assert [c.client.user_agent for c in report.clients] == ["bad", "ok", "old"]
    assert report.counts() == {FAILING: 1, ACTIVE: 1, MIGRATED: 1}
    assert report.summary() == "3 legacy clients: 1 active, 1 failing, 1 migrated away."
    assert not report.done
    done = build_report([client()], NOW + 100 * DAY, 90 * DAY)
    assert done.done and "migration looks done" in done.summary()
    assert not build_report([], NOW).done


def test_report_text_and_json():
    """
    The text form names each client with its state, address, User-Agent,
    accounts, names and last failure; the JSON form carries the same.
    """
    report = build_report([client(last_failure="2026-11-28T16:58:00Z",
                                  reason="new-cert 403 urn:acme:error:unauthorized: key")], NOW)
    text = report.as_text()
    assert "FAILING  192.0.2.7  CertbotACMEClient/1.32.0" in text
    assert "account key thumbprints: tp-abcdefghijklmnop" in text
    assert "names: a.example.test" in text
    assert "last failure 2026-11-28T16:58:00Z: new-cert 403 urn:acme:error:unauthorized: key" in text
    data = json.loads(json.dumps(report.as_json()))
    assert data["counts"] == {"failing": 1, "active": 0, "migrated": 0}
    (entry,) = data["clients"]
    assert entry["state"] == "failing"
    assert entry["user_agent"] == "CertbotACMEClient/1.32.0"
    assert entry["silent_seconds"] == 300
    assert entry["last_failure_reason"].startswith("new-cert 403")


CERTONLY_UA = ("CertbotACMEClient/1.32.0 (certbot; Debian GNU/Linux 12 (bookworm)) "
               "Authenticator/standalone Installer/None (certonly; flags: n) Py/3.11.2")
RENEW_UA = ("CertbotACMEClient/1.32.0 (certbot; Debian GNU/Linux 12 (bookworm)) "
            "Authenticator/standalone Installer/None (renew; flags: frn n) Py/3.11.2")


def row(ua, thumbprints=("tp-one",), address="192.0.2.7", last_seen="2026-11-28T16:55:00Z",
        successes=3, failures=0, certificates=1, last_failure=None, reason=None,
        names=("a.example.test",), first_seen="2026-11-01T00:00:00Z") -> LegacyClient:
    return LegacyClient(
        user_agent=ua, address=address, thumbprints=thumbprints, names=names,
        first_seen=first_seen, last_seen=last_seen, successes=successes, failures=failures,
        certificates=certificates, last_success=last_seen if successes else None,
        last_failure=last_failure, last_failure_reason=reason,
    )


def test_one_machine_is_one_client_whatever_certbot_subcommand_ran():
    """
    certbot's certonly and its later renew (User-Agents that differ only in
    the subcommand and flags) on one machine with one account are one
    client: its product and version, counts summed, the latest outcome
    deciding its state, and both User-Agents shown as variants.
    """
    rows = [
        row(CERTONLY_UA, last_seen="2026-11-01T10:00:00Z", failures=1,
            last_failure="2026-11-01T09:59:00Z", reason="new-authz 429 urn:acme:error:rateLimited: x",
            first_seen="2026-11-01T09:00:00Z"),
        row(RENEW_UA, last_seen="2026-11-28T16:55:00Z", names=("b.example.test",),
            first_seen="2026-11-28T16:50:00Z"),
    ]
    report = build_report(rows, NOW)
    (status,) = report.clients
    assert status.state == ACTIVE  # the renew succeeded after the certonly failure
    merged = status.client
    assert merged.user_agent == "CertbotACMEClient/1.32.0"
    assert (merged.successes, merged.failures, merged.certificates) == (6, 1, 2)
    assert merged.first_seen == "2026-11-01T09:00:00Z" and merged.last_seen == "2026-11-28T16:55:00Z"
    assert merged.names == ("a.example.test", "b.example.test")
    assert merged.last_failure_reason.startswith("new-authz 429")
    assert [v.user_agent for v in status.variants] == [RENEW_UA, CERTONLY_UA]
    assert report.summary() == "1 legacy client: 1 active, 0 failing, 0 migrated away."

    text = report.as_text()
    assert "ACTIVE  192.0.2.7  CertbotACMEClient/1.32.0\n" in text
    assert "User-Agent variants: 2" in text
    assert f"    {RENEW_UA}\n      last seen 2026-11-28T16:55:00Z; 3 succeeded, 0 failed" in text
    (entry,) = json.loads(json.dumps(report.as_json()))["clients"]
    assert [v["user_agent"] for v in entry["variants"]] == [RENEW_UA, CERTONLY_UA]
    assert entry["variants"][1]["last_failure_reason"].startswith("new-authz 429")


def test_clients_stay_apart_by_account_address_and_version():
    """
    Another account key, another address or another certbot version is
    another client; a key change (a row with both keys) joins the old key's
    rows and the new one's; a row that never signed joins the only account
    of its product on its address.
    """
    rows = [
        row(CERTONLY_UA, thumbprints=("tp-one",)),
        row(RENEW_UA, thumbprints=("tp-two",)),
        row(RENEW_UA, thumbprints=("tp-one",), address="198.51.100.9"),
        row(CERTONLY_UA.replace("1.32.0", "1.31.0"), thumbprints=("tp-one",)),
    ]
    assert len(build_report(rows, NOW).clients) == 4
    linked = build_report(rows[:2] + [row(RENEW_UA + " x", thumbprints=("tp-one", "tp-two"))], NOW)
    (status,) = linked.clients
    assert set(status.client.thumbprints) == {"tp-one", "tp-two"} and len(status.variants) == 3
    unsigned = build_report([row(CERTONLY_UA), row("CertbotACMEClient/1.32.0 (register)", thumbprints=())],
                            NOW)
    assert len(unsigned.clients) == 1 and len(unsigned.clients[0].variants) == 2


def test_product_of():
    """
    The product and version is a User-Agent's first token; anything else
    stays whole.
    """
    assert product_of(RENEW_UA) == "CertbotACMEClient/1.32.0"
    assert product_of("dehydrated/0.7.0 curl/7.88.1") == "dehydrated/0.7.0"
    assert product_of("(no User-Agent)") == "(no User-Agent)"
    assert product_of("acme-tiny") == "acme-tiny"


def _csr(names) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return b64url(csr.public_bytes(serialization.Encoding.DER))


def test_requested_names():
    """
    new-authz asks for its identifier, new-cert for its CSR's names;
    anything else, or a malformed payload, for nothing.
    """
    assert requested_names("new-authz", {"identifier": {"type": "dns", "value": "A.example.test"}}) \
        == ("a.example.test",)
    # A new-cert's names come from the issuance flow, which parses the CSR
    # once (see ReportRecordingTests in tests/test_operations_face.py).
    assert requested_names("new-cert", {"csr": _csr(["x.example.test", "*.y.example.test"])}) == ()
    assert requested_names("new-cert", {"csr": "not-base64!"}) == ()
    assert requested_names("new-authz", {"identifier": "x"}) == ()
    assert requested_names("reg", {"contact": []}) == ()
    assert requested_names("new-authz", None) == ()


def test_failure_reason_and_visit():
    """
    A failure is summarised from the problem document; a success has none.
    """
    body = json.dumps({"type": "urn:acme:error:malformed", "detail": "JWS has no nonce"}).encode()
    assert failure_reason("new-reg", 400, "application/problem+json", body) == \
        "new-reg 400 urn:acme:error:malformed: JWS has no nonce"
    assert failure_reason("cert", 404, "text/plain", b"x") == "cert 404"
    scope = RequestScope(id="r1", endpoint="new-cert", thumbprint="tp", names=("a.example.test",))
    visit = visit_for(scope, "", "", NOW, 201)
    assert visit.user_agent == "(no User-Agent)" and visit.address == "(unknown)"
    assert visit.certificate and visit.failure is None and visit.at == "2026-11-28T17:00:00Z"
    failed = visit_for(scope, "ua", "127.0.0.1", NOW, 400, "application/problem+json", body)
    assert not failed.certificate and failed.failure.startswith("new-cert 400")


class _Text(HTMLParser):
    """
    The text of an HTML document, and whether it ever opened a <script>.
    """

    def __init__(self):
        super().__init__()
        self.parts, self.scripts = [], 0

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"

    def handle_data(self, data):
        self.parts.append(data)


def test_status_page_shows_clients_and_escapes_them():
    """
    The page lists each client with its state, how recently it called and
    why it fails; a User-Agent carrying markup is shown as text, never run.
    """
    hostile = '<script>alert("x")</script> EvilClient/1.0'
    report = build_report([
        client(ua=hostile, last_failure="2026-11-28T16:58:00Z", reason="new-cert 403 <b>boom</b>"),
        client(ua="CertbotACMEClient/1.32.0", last_seen="2026-06-01T00:00:00Z",
               last_success="2026-06-01T00:00:00Z"),
    ], NOW, 90 * DAY)
    page = statuspage.render(report).decode("utf-8")
    parser = _Text()
    parser.feed(page)
    text = " ".join(parser.parts)
    assert parser.scripts == 0
    assert hostile in text
    assert "new-cert 403 <b>boom</b>" in text
    assert "CertbotACMEClient/1.32.0" in text
    assert "migrated away" in text and "failing" in text
    assert "2 minutes ago" in text
    assert "1 legacy client still on ACME v1" in page


def test_status_page_shows_each_clients_variants():
    """
    A client's row names its product and version, and lists the full
    User-Agents inside (escaped).
    """
    page = statuspage.render(build_report([row(CERTONLY_UA), row(RENEW_UA + " <i>x</i>")], NOW))
    parser = _Text()
    parser.feed(page.decode("utf-8"))
    text = " ".join(parser.parts)
    assert "2 User-Agent variants" in text
    assert CERTONLY_UA in text and RENEW_UA + " <i>x</i>" in text
    assert page.count(b'<tr class="active">') == 1


def test_status_page_without_clients():
    """
    Before any client called, the page says so.
    """
    page = statuspage.render(build_report([], NOW)).decode()
    assert "No legacy client has called the gateway yet." in page


def test_nonce_fetches_are_not_failures():
    """
    certbot 1.x HEADs POST-only resources for a nonce and gets a 405 with
    one, as from Boulder: that is how it works, not a failure to report.
    """
    scope = RequestScope(id="r2", endpoint="new-authz")
    assert visit_for(scope, "certbot", "127.0.0.1", NOW, 405, method="HEAD").failure is None
    assert visit_for(scope, "certbot", "127.0.0.1", NOW, 405, method="GET").failure == "new-authz 405"
