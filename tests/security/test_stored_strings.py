"""
What clients send and the gateway keeps, shown safely (issue 18 item 1).

The migration report records strings clients chose — User-Agents, the
names a refused request asked for, the problem it got — and shows them at
``/status``, ``/status.json`` and ``acme-gateway report``.  A lone
surrogate (JSON's ``"\\ud800"``) is no Unicode text: no UTF-8 encoder
takes it.  One such identifier used to be recorded, and from then on
``/status`` answered 500 and ``acme-gateway report`` died with a traceback,
also after a restart; a registration update with such an ``agreement`` was
a 500.

Now a payload holding a lone surrogate is refused at the JWS (a 400
``malformed``, before anything is recorded), every recorded string is
made printable and bounded (`gateway.store.records.printable`), and the
renderers show whatever an older gateway stored (hypothesis over all
three, surrogates, control and format characters included).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq

from gateway.operations import statuspage
from gateway.operations.report import build_report
from gateway.store.records import LegacyClient, format_timestamp
from gateway.store.sqlite import SQLiteStore
from tests.security.harness import KEY, Harness, assert_v1_problem, fired, logged_failures
from tests.support.v1_client import _reply

NOW = 1_790_000_000.0
SEEN = format_timestamp(NOW - 60)

#: Characters of every kind, lone surrogates, control and format
#: characters (ESC, bidi overrides) much more often than by chance.
ANY_CHARACTER = st.one_of(
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.characters(categories=["Cc", "Cf", "Zl", "Zp"]),
    st.sampled_from("<>&\"'/\\"),
    st.characters(),
)
ANY_TEXT = st.lists(ANY_CHARACTER, max_size=60).map("".join)
#: Now and then a huge one.
ANY_STRING = st.one_of(ANY_TEXT, ANY_TEXT.map(lambda text: text * 2000))


def admin_page(harness: Harness, path: str):
    """
    ``path`` of the gateway's admin pages (the store runs inline, so the
    answer is there at once).
    """
    client = StubTreq(harness.gateway.gateway.admin.resource())

    async def get():
        return await _reply(await client.get("http://admin.test" + path))

    from twisted.internet import defer

    return fired(defer.Deferred.fromCoroutine(get()))


def test_lone_surrogate_identifier_refused_and_status_still_served():
    """
    The identifier ``"\\ud800.example.test"`` is a 400 ``malformed``, and
    ``/status`` keeps answering 200 (it answered 500 for good once the name
    was recorded).
    """
    harness = Harness.fresh()
    harness.register()
    with logged_failures() as failures:
        reply = harness.new_authz("\ud800.example.test")
        page = admin_page(harness, "/status")
        data = admin_page(harness, "/status.json")
    assert page.status == 200, page.body
    assert data.status == 200, data.body
    assert failures == []
    assert_v1_problem(reply, 400, "malformed", "not Unicode text")
    names = [n for c in json.loads(data.body)["clients"] for n in c["names"]]
    assert not any("\ud800" in n for n in names)


def test_agreement_with_a_lone_surrogate_is_a_4xx():
    """
    A registration update by the account's own key with ``"agreement":
    "\\ud800"`` is a 400 ``malformed`` (it was a 500), and the account is
    untouched.
    """
    harness = Harness.fresh()
    registration = harness.register()
    before = harness.snapshot()["store"]["accounts"]
    with logged_failures() as failures:
        reply = harness.post(registration, {"resource": "reg", "agreement": "\ud800"})
    assert_v1_problem(reply, 400, "malformed", "lone surrogate")
    assert failures == []
    assert harness.snapshot()["store"]["accounts"] == before


def test_huge_and_control_strings_are_recorded_printable_and_bounded():
    """
    What a failing client sent is still shown — escaped and cut: a name of
    40,000 characters with a terminal escape in it, and a User-Agent
    carrying a bidi override, make a row of a few hundred bytes.
    """
    harness = Harness.fresh()
    harness.register()
    name = "\x1b[2J" + "a" * 40_000 + ".example.test"
    reply = harness.request("POST", "/acme/new-authz",
                            harness_body(harness, name),
                            headers={"User-Agent": ["evil\u202eclient/1.0"]})
    assert reply.status == 400
    fired(harness.gateway.gateway.recorder.flush())
    rows = fired(harness.gateway.store.list_clients())
    recorded = [r for r in rows if r.user_agent.startswith("evil")]
    assert recorded, rows
    row = recorded[0]
    assert row.user_agent == "evil\\u202eclient/1.0"
    assert all(len(n) <= 255 for n in row.names) and row.names
    assert any(n.startswith("\\u001b[2j") for n in row.names), row.names
    assert len(json.dumps([row.user_agent, row.names, row.last_failure_reason])) < 2_000


def harness_body(harness: Harness, name: str) -> bytes:
    from tests.support.v1_signing import sign_v1

    return sign_v1(KEY, {"resource": "new-authz", "identifier": {"type": "dns", "value": name}},
                   harness.nonce())


def poisoned_row(**overrides) -> LegacyClient:
    values = dict(
        user_agent="CertbotACMEClient/1.32.0", address="192.0.2.7", thumbprints=("tp",),
        names=("\ud800.example.test",), first_seen=SEEN, last_seen=SEEN, successes=1,
        failures=1, certificates=0, last_success=SEEN, last_failure=SEEN,
        last_failure_reason="new-authz 400 urn:acme:error:malformed: \ud800 \x1b[31m",
    )
    values.update(overrides)
    return LegacyClient(**values)


def test_state_an_older_gateway_poisoned_is_shown(tmp_path):
    """
    A state file an older gateway wrote with a lone surrogate, a terminal
    escape and a huge name in its report rows: ``acme-gateway report``
    (text and JSON) exits 0 and shows them escaped, and ``/status`` of a
    gateway on that file answers 200.
    """
    state = str(tmp_path / "state.sqlite3")
    fired(SQLiteStore.inline(state).close())
    _write_poisoned_rows(state)
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    text = subprocess.run([sys.executable, "-m", "gateway", "report", "--state", state],
                          capture_output=True, env=env, timeout=120)
    assert text.returncode == 0, text.stderr.decode()
    assert b"Traceback" not in text.stderr
    shown = text.stdout.decode("utf-8")
    assert "\\ud800.example.test" in shown
    assert "\x1b" not in shown and "\\u001b[31m" in shown
    as_json = subprocess.run([sys.executable, "-m", "gateway", "report", "--json", "--state", state],
                             capture_output=True, env=env, timeout=120)
    assert as_json.returncode == 0, as_json.stderr.decode()
    report = json.loads(as_json.stdout)
    assert any("\\ud800.example.test" in c["names"] for c in report["clients"])


def _write_poisoned_rows(state: str) -> None:
    """
    Report rows as an older gateway wrote them, straight into the file's
    ``clients`` table (names as JSON, so the surrogate is stored escaped).
    """
    database = sqlite3.connect(state)
    columns = [row[1] for row in database.execute("PRAGMA table_info(clients)")]
    row = poisoned_row()
    values = {
        "user_agent": "Certbot\x1b]0;owned\x07ACMEClient/1.32.0", "address": row.address,
        "thumbprints": json.dumps(list(row.thumbprints)),
        "names": json.dumps(["\ud800.example.test", "b" * 50_000 + ".example.test"]),
        "first_seen": row.first_seen, "last_seen": row.last_seen, "successes": 1,
        "failures": 1, "certificates": 0, "last_success": row.last_success,
        "last_failure": row.last_failure, "last_failure_reason": "new-authz 400 \x1b[31mred",
    }
    assert set(values) <= set(columns), columns
    database.execute(
        f"INSERT INTO clients ({', '.join(values)}) VALUES ({', '.join('?' for _ in values)})",
        tuple(values.values()))
    database.commit()
    database.close()


def test_status_page_of_a_poisoned_state(tmp_path):
    """
    ``/status`` and ``/status.json`` over rows holding a lone surrogate
    answer 200 (they answered 500, also after a restart).
    """
    harness = Harness.fresh()
    store = harness.gateway.store
    database = store._database
    database.execute(
        "INSERT INTO clients (user_agent, address, thumbprints, names, first_seen, last_seen,"
        " successes, failures, certificates, last_success, last_failure, last_failure_reason)"
        " VALUES (?, ?, ?, ?, ?, ?, 1, 1, 0, ?, ?, ?)",
        ("CertbotACMEClient/1.32.0", "192.0.2.7", json.dumps(["tp"]),
         json.dumps(["\ud800.example.test"]), SEEN, SEEN, SEEN, SEEN, "reason \x1b[31m"))
    with logged_failures() as failures:
        page = admin_page(harness, "/status")
        data = admin_page(harness, "/status.json")
    assert page.status == 200, page.body
    assert data.status == 200, data.body
    assert failures == []
    assert b"\\ud800.example.test" in page.body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user_agent=ANY_STRING, address=ANY_TEXT, names=st.lists(ANY_STRING, max_size=4),
       thumbprints=st.lists(ANY_TEXT, max_size=3), reason=st.one_of(st.none(), ANY_STRING))
def test_renderers_show_any_stored_string(user_agent, address, names, thumbprints, reason):
    """
    Whatever strings a stored row holds, the page, the text and the JSON
    report render, encode as UTF-8, and carry no control character (but
    the text's newlines) and no unescaped markup.
    """
    row = LegacyClient(
        user_agent=user_agent, address=address, thumbprints=tuple(thumbprints),
        names=tuple(names), first_seen=SEEN, last_seen=SEEN, successes=1,
        failures=0 if reason is None else 1, certificates=0, last_success=SEEN,
        last_failure=None if reason is None else SEEN, last_failure_reason=reason,
    )
    report = build_report([row, poisoned_row()], NOW)
    page = statuspage.render(report).decode("utf-8")
    text = report.as_text()
    text.encode("utf-8")
    data = json.dumps(report.as_json()).encode("utf-8")
    json.loads(data)
    for rendered in (page, text):
        assert not any(ord(c) < 0x20 and c != "\n" for c in rendered)
        assert "\x1b" not in rendered and "\u202e" not in rendered
    # Markup a client sent is escaped: the page's only elements are its own.
    assert page.count("<script") == 0 and page.count("<img") == 0
    assert len(page) < 200_000


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user_agent=ANY_STRING, address=ANY_TEXT, names=st.lists(ANY_STRING, max_size=4),
       failure=st.one_of(st.none(), ANY_STRING))
def test_the_store_records_any_visit(user_agent, address, names, failure):
    """
    Any visit the face may make — strings of every kind — is recorded
    (printable and bounded) and read back, and the report of it renders.
    """
    from gateway.store import ClientVisit

    store = SQLiteStore.inline()
    visit = ClientVisit(user_agent=user_agent, address=address, at=SEEN, thumbprint="tp",
                        names=tuple(names), failure=failure)
    fired(store.record_clients([visit]))
    rows = fired(store.list_clients())
    assert len(rows) == 1
    row = rows[0]
    assert len(row.user_agent) <= 256 and all(len(n) <= 255 for n in row.names)
    report = build_report(rows, NOW)
    statuspage.render(report).decode("utf-8")
    report.as_text().encode("utf-8")
    fired(store.close())
