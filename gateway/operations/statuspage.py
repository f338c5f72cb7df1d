"""
The migration report as a page a person reads at a glance (the admin
listener's ``/status``): how many legacy clients still speak v1, then one
row per client — those failing first, in red, with why; those migrated away
last, greyed.

It is one self-contained HTML document: no script, no external style sheet
or font, so it renders the same behind any proxy and under the strict
``Content-Security-Policy`` the admin listener sends.  Everything a client
controls (its User-Agent above all) is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Iterable

from gateway import __version__
from gateway.operations.report import (
    ACTIVE,
    FAILING,
    MIGRATED,
    STATE_LABELS,
    MigrationReport,
    ago,
    format_duration,
)
from gateway.store.records import format_timestamp, timestamp_instant

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", sans-serif;
       margin: 0; color: #1d2430; background: #f5f6f8; }
header { background: #1d2430; color: #fff; padding: 14px 24px; }
header h1 { font-size: 19px; margin: 0; font-weight: 600; }
header p { margin: 2px 0 0; color: #b9c0cc; font-size: 13px; }
main { padding: 18px 24px 32px; }
.summary { display: flex; gap: 12px; flex-wrap: wrap; margin-bottom: 10px; }
.card { background: #fff; border-radius: 8px; padding: 10px 16px; min-width: 130px;
        box-shadow: 0 1px 2px rgba(0,0,0,.08); border-top: 4px solid #8a94a6; }
.card b { display: block; font-size: 28px; line-height: 1.1; }
.card.failing { border-top-color: #c62828; } .card.active { border-top-color: #2e7d32; }
.card.migrated { border-top-color: #8a94a6; }
.verdict { margin: 8px 0 16px; font-size: 16px; }
.verdict.done { color: #2e7d32; font-weight: 600; }
table { border-collapse: collapse; width: 100%; background: #fff; border-radius: 8px;
        overflow: hidden; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
th, td { text-align: left; padding: 8px 10px; vertical-align: top; border-bottom: 1px solid #e6e8ec; }
th { background: #eef0f3; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: #4a5363; }
tr.failing td { background: #fff5f5; }
tr.migrated td { color: #8a94a6; }
.state { display: inline-block; border-radius: 10px; padding: 1px 9px; font-size: 12px;
         font-weight: 600; color: #fff; white-space: nowrap; }
.state.failing { background: #c62828; } .state.active { background: #2e7d32; }
.state.migrated { background: #8a94a6; }
.ua { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; overflow-wrap: anywhere; min-width: 14em; }
.small { font-size: 12px; color: #5b6473; }
details ul { margin: 4px 0 0; padding-left: 16px; } .ua-variant { overflow-wrap: anywhere; }
.reason { color: #b71c1c; font-size: 13px; }
td.when, td.count { white-space: nowrap; }
h2 { font-size: 20px; margin: 6px 0 14px; }
code { font-size: 12px; }
footer { color: #8a94a6; font-size: 12px; margin-top: 14px; }
"""


def _time(timestamp: str, now: float) -> str:
    seconds = now - timestamp_instant(timestamp).timestamp()
    return f'<time datetime="{escape(timestamp)}" title="{escape(timestamp)}">{escape(ago(seconds))}</time>'


def _thumbprints(thumbprints: Iterable[str]) -> str:
    items = [
        f'<code title="{escape(t)}">{escape(t[:12])}&hellip;</code>' for t in thumbprints
    ]
    return "<br>".join(items) if items else '<span class="small">none yet</span>'


def _names(names: Iterable[str]) -> str:
    names = list(names)
    if not names:
        return '<span class="small">none yet</span>'
    shown = ", ".join(escape(n) for n in names[:8])
    if len(names) > 8:
        shown += f' <span class="small">and {len(names) - 8} more</span>'
    return shown


def _variants(status, now: float) -> str:
    """
    The full User-Agents the client used (certbot's says which subcommand
    and flags ran), each with its counts.
    """
    if not status.variants:
        return ""
    items = "".join(
        f'<li><span class="ua-variant">{escape(v.user_agent)}</span> '
        f'<span class="small">{v.successes} ok / {v.failures} failed, last {_time(v.last_seen, now)}</span></li>'
        for v in status.variants
    )
    count = len(status.variants)
    return (f'<details class="small"><summary>{count} User-Agent variant{"" if count == 1 else "s"}'
            f"</summary><ul>{items}</ul></details>")


def _row(status, now: float, report: MigrationReport) -> str:
    client = status.client
    failure = ""
    for held in report.opened_early(client):
        failure += (f'<div class="reason">renew now: the CA\'s renewal window of '
                    f'{_names(held.names)} opened early</div>')
    if client.last_failure is not None:
        failure = (
            f'<div class="reason">{escape(client.last_failure_reason or "")}</div>'
            f'<div class="small">{_time(client.last_failure, now)}</div>'
        )
    return (
        f'<tr class="{status.state}">'
        f'<td><span class="state {status.state}">{escape(STATE_LABELS[status.state])}</span></td>'
        f'<td class="ua">{escape(client.user_agent)}{_variants(status, now)}</td>'
        f"<td>{escape(client.address)}</td>"
        f'<td class="when">{_time(client.last_seen, now)}'
        f'<div class="small">first seen {_time(client.first_seen, now)}</div></td>'
        f'<td class="count">{client.successes} ok / {client.failures} failed'
        f'<div class="small">{client.certificates} certificate{"" if client.certificates == 1 else "s"}</div></td>'
        f"<td>{_names(client.names)}</td>"
        f"<td>{_thumbprints(client.thumbprints)}</td>"
        f"<td>{failure}</td>"
        "</tr>"
    )


def _window(held) -> str:
    if held.window_start is None:
        return f'<span class="small">{escape(held.window_error or "not asked yet")}</span>'
    text = f"{escape(held.window_start)} &ndash; {escape(held.window_end or '')}"
    if held.opened_early:
        text = f'<span class="state failing">opened early</span> {text}'
    return text


def _inventory(report: MigrationReport) -> str:
    """
    The renewal inventory: each certificate a client holds, its expiry,
    profile and the CA's suggested renewal window (ARI).
    """
    if not report.certificates:
        return ""
    rows = "".join(
        f'<tr class="{"failing" if held.opened_early else ""}"><td>{_names(held.names)}'
        + (f'<div class="small">imported from {escape(held.adopted_from)}</div>'
           if held.adopted_from else "")
        + f"</td><td><code>{escape(held.serial)}</code></td>"
        f'<td class="when">{escape(held.not_after or "")}</td>'
        f"<td>{escape(held.profile or 'CA default')}</td><td>{_window(held)}</td>"
        f"<td>{_thumbprints([held.thumbprint])}</td></tr>"
        for held in report.certificates
    )
    return (
        f'<h2 id="certificates">Renewal inventory: {len(report.certificates)} certificate'
        f'{"" if len(report.certificates) == 1 else "s"}</h2>'
        "<table><thead><tr><th>Names</th><th>Serial</th><th>Expires</th><th>Profile</th>"
        "<th>Renewal window (ARI)</th><th>Account key</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _headline(report: MigrationReport) -> str:
    if not report.clients:
        return "No legacy client yet"
    if report.done:
        return "Every legacy client has migrated away"
    count = report.still_legacy
    return f"{count} legacy client{'' if count == 1 else 's'} still speak{'s' if count == 1 else ''} ACME v1"


def render(report: MigrationReport) -> bytes:
    """
    The ``/status`` page of ``report``, as UTF-8 HTML.
    """
    counts = report.counts()
    cards = "".join(
        f'<div class="card {state}"><b>{counts[state]}</b>{escape(STATE_LABELS[state])}</div>'
        for state in (FAILING, ACTIVE, MIGRATED)
    )
    verdict_class = "verdict done" if report.done else "verdict"
    if report.clients:
        rows = "".join(_row(status, report.now, report) for status in report.clients)
        table = (
            "<table><thead><tr><th>State</th><th>Client (product/version; User-Agents)</th><th>Address</th>"
            "<th>Last seen</th><th>Requests</th><th>Names</th><th>Account keys</th>"
            "<th>Last failure</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    else:
        table = "<p>No legacy client has called the gateway yet.</p>"
    orphans = ""
    if report.orphans:
        rows = "".join(
            f"<tr><td><code>{escape(o.serial)}</code></td><td>{_names(o.names)}</td>"
            f"<td>{_time(o.issued_at, report.now)}</td><td>{_thumbprints([o.thumbprint])}</td>"
            f'<td class="small">{escape(o.directory_url or "")}</td></tr>'
            for o in report.orphans
        )
        orphans = (
            f'<h2 id="orphans">{len(report.orphans)} certificate'
            f'{"" if len(report.orphans) == 1 else "s"} issued that no client received</h2>'
            "<p>The answer to the request was lost and the client retried with a new key; "
            "the gateway keeps these and never hands them out.</p>"
            "<table><thead><tr><th>Serial</th><th>Names</th><th>Issued</th><th>Account key</th>"
            f"<th>CA</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    page = (
        "<!DOCTYPE html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>acme-gateway: {report.still_legacy} legacy client"
        f"{'' if report.still_legacy == 1 else 's'} still on ACME v1</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<header><h1>acme-gateway &mdash; ACME v1 migration status</h1>"
        f"<p>{escape(format_timestamp(report.now))} &middot; a client silent for more than "
        f"{escape(format_duration(report.migrated_after))} counts as migrated away</p></header>"
        f"<main><h2>{escape(_headline(report))}</h2>"
        f'<section class="summary">{cards}</section>'
        f'<p class="{verdict_class}">{escape(report.summary())}</p>'
        f"{table}{_inventory(report)}{orphans}"
        f"<footer>acme-gateway {escape(__version__)} &middot; "
        '<a href="status.json">JSON</a> &middot; <a href="metrics">metrics</a></footer>'
        "</main></body></html>"
    )
    return page.encode("utf-8")
