"""
Metrics families (`gateway.operations.metrics`), log shapes (`gateway.operations.logs`) and the
request scope (`gateway.operations.scope`) they both read.
"""

from __future__ import annotations

import io
import json

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import Logger, LogLevel, globalLogPublisher

from gateway.keys.jose import AccountKey
from gateway.operations.logs import FLUSH_SECONDS, event_as_json, event_as_text, observer_for
from gateway.operations.metrics import Metrics
from gateway.operations.scope import RequestScope, current, current_request_id, request_id_from, run_in_scope

KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))


def families(metrics: Metrics) -> dict:
    body, content_type = metrics.render(None)
    assert content_type.startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def test_every_family_is_exposed_even_before_it_is_filled():
    """
    Every family the README promises is in a scrape from the start, with
    its help and type — including those that later features fill (no made
    up samples for them).
    """
    found = families(Metrics(process=False))
    expected = {
        "acme_gateway_v1_requests": "counter",
        "acme_gateway_v2_requests": "counter",
        "acme_gateway_upstream_requests": "counter",
        "acme_gateway_upstream_request_duration_seconds": "histogram",
        "acme_gateway_orders_created": "counter",
        "acme_gateway_pending_authorizations": "gauge",
        "acme_gateway_rate_limit_budget_remaining": "gauge",
        "acme_gateway_revalidations": "counter",
        "acme_gateway_certificates_issued": "counter",
        "acme_gateway_certificates_revoked": "counter",
        "acme_gateway_legacy_clients": "gauge",
        "acme_gateway_ready": "gauge",
        "acme_gateway_build_info": "gauge",
    }
    for name, kind in expected.items():
        assert found[name].type == kind, name
        assert found[name].documentation
    assert found["acme_gateway_rate_limit_budget_remaining"].samples == []
    assert found["acme_gateway_revalidations"].samples == []


def test_process_metrics_and_separate_registries():
    """
    A gateway's registry has the process collectors; two gateways never
    share counts.
    """
    one, two = Metrics(), Metrics()
    one.v1_response("directory", 200)
    assert "process_cpu_seconds" in families(one) or "python_info" in families(one)
    samples = [s for s in families(two)["acme_gateway_v1_requests"].samples]
    assert samples == []


def test_upstream_exemplars_carry_the_request_id():
    """
    In OpenMetrics (what Prometheus asks for), upstream latencies carry the
    v1 request id as an exemplar; a failed exchange counts as status error.
    """
    metrics = Metrics(process=False)
    # Inside the scope of v1 request 4f2a9c1d00000000 (as the upstream client
    # is while it serves one), and outside any.
    run_in_scope(RequestScope("4f2a9c1d00000000"), metrics.upstream_response, "finalize", 200, 0.42)
    metrics.upstream_response("directory", None, 0.01)
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    assert '# {request_id="4f2a9c1d00000000"} 0.42' in text
    assert 'acme_gateway_upstream_requests_total{kind="directory",status="error"} 1.0' in text


def test_hooks_for_later_features():
    """
    Revalidation and rate limiting get one call each to fill their families.
    """
    metrics = Metrics(process=False)
    metrics.revalidation("valid")
    metrics.set_rate_limit_budget("tp-1", 42)
    text = metrics.render(None)[0].decode()
    assert 'acme_gateway_revalidations_total{outcome="valid"} 1.0' in text
    assert 'acme_gateway_rate_limit_budget_remaining{account="tp-1"} 42.0' in text


def test_store_backed_gauges():
    """
    The admin listener's refreshes show up as gauge values.
    """
    metrics = Metrics(process=False)
    metrics.set_pending_authorizations(3)
    metrics.set_client_states({"active": 2, "migrated": 5})
    metrics.set_ready("upstream", False)
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in families(metrics).values() for s in f.samples}
    assert found[("acme_gateway_pending_authorizations", ())] == 3
    assert found[("acme_gateway_legacy_clients", (("state", "active"),))] == 2
    assert found[("acme_gateway_legacy_clients", (("state", "failing"),))] == 0
    assert found[("acme_gateway_legacy_clients", (("state", "migrated"),))] == 5
    assert found[("acme_gateway_ready", (("check", "upstream"),))] == 0


def _event(**fields) -> dict:
    event = {"log_format": "upstream {method} -> {status}", "log_level": LogLevel.info,
             "log_namespace": "gateway.test", "log_time": 1795888800.25,
             "method": "POST", "status": 201}
    event.update(fields)
    return event


def test_json_event_shape():
    """
    One JSON object per event: time, level, namespace, formatted message,
    the request id and every named field; bookkeeping keys are left out.
    """
    line = event_as_json(_event(request_id="abc123", kind="newOrder", log_logger=object()))
    assert line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line)
    assert record == {
        "time": "2026-11-28T18:00:00.250Z", "level": "info", "namespace": "gateway.test",
        "message": "upstream POST -> 201", "request_id": "abc123",
        "method": "POST", "status": 201, "kind": "newOrder",
    }


def test_json_never_writes_key_material():
    """
    An account key logged by mistake is written as its thumbprint, bytes
    only as their length, and a field named like a reserved one is kept
    under another name.
    """
    record = json.loads(event_as_json(_event(key=KEY, der=b"\x30\x82secret", message="x",
                                             nested={"k": [KEY]})))
    assert record["key"] == KEY.thumbprint
    assert record["nested"] == {"k": [KEY.thumbprint]}
    assert record["der"] == "<8 bytes>"
    assert "secret" not in json.dumps(record)


def test_json_failure_has_traceback():
    """
    A logged failure carries its error and traceback as fields.
    """
    from twisted.python.failure import Failure

    try:
        raise ValueError("boom")
    except ValueError:
        failure = Failure()
    record = json.loads(event_as_json(_event(log_failure=failure, log_level=LogLevel.critical)))
    assert record["level"] == "critical"
    assert record["error"] == "boom"
    assert "ValueError" in record["traceback"]


def test_text_event_names_the_request():
    """
    The text form is Twisted's classic line, with the request id appended.
    """
    text = event_as_text(_event(request_id="abc123"))
    assert text.endswith("upstream POST -> 201 request_id=abc123\n")
    assert "request_id" not in event_as_text(_event())


def test_observer_stamps_scope_and_filters_level():
    """
    Events emitted inside a request scope get its id; events below the
    level are dropped; unknown formats and levels are refused.
    """
    out = io.StringIO()
    observer = observer_for("json", "info", out)
    log = Logger(namespace="gateway.test", observer=observer)
    run_in_scope(RequestScope(id="req-1"), log.info, "inside")
    log.info("outside")
    log.debug("too chatty")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["message"], r.get("request_id")) for r in records] == [("inside", "req-1"), ("outside", None)]
    with pytest.raises(ValueError):
        observer_for("xml")
    with pytest.raises(ValueError):
        observer_for("json", "loud")


class CountingStream(io.StringIO):
    """
    A stream that counts its flushes.
    """

    flushes = 0

    def flush(self):
        self.flushes += 1
        super().flush()


def test_lines_are_flushed_together():
    """
    Lines are written as they come, and flushed once per `FLUSH_SECONDS`
    however many there were -- not once a line, the system call per
    request the profile showed -- and at once for a warning or worse.
    """
    out, clock = CountingStream(), Clock()
    log = Logger(namespace="gateway.test", observer=observer_for("text", "info", out, clock=clock))
    for n in range(100):
        log.info("GET /directory -> 200 {n}", n=n)
    assert len(out.getvalue().splitlines()) == 100
    assert out.flushes == 0
    clock.advance(FLUSH_SECONDS)
    assert out.flushes == 1
    clock.advance(FLUSH_SECONDS)
    assert out.flushes == 1  # nothing new, no timer
    log.info("one more")
    log.error("the store failed")
    assert out.flushes == 2  # the error at once
    assert out.getvalue().splitlines()[-1].endswith("the store failed")
    clock.advance(FLUSH_SECONDS)
    assert out.flushes == 3  # the info line's timer


def test_request_ids():
    """
    A sane proxy id is kept; anything else gets a fresh 64-bit hex id.
    """
    assert request_id_from(b"edge-4f2a9c1d") == "edge-4f2a9c1d"
    for bad in (None, b"", b"short", b"has space in it", b"x" * 65, b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8"):
        fresh = request_id_from(bad)
        assert len(fresh) == 16 and int(fresh, 16) >= 0
    assert request_id_from(None) != request_id_from(None)


@pytest_twisted.ensureDeferred
async def test_scope_survives_reactor_turns_in_fromCoroutine():
    """
    A scope entered around ``Deferred.fromCoroutine`` is current in the
    coroutine after real reactor delays and in coroutines it starts, while
    concurrent requests keep their own, and the caller's context is left
    untouched.
    """
    seen = []

    async def inner(tag):
        await deferLater(reactor, 0.01, lambda: None)
        seen.append((tag, "inner", current_request_id()))

    async def handler(tag):
        seen.append((tag, "start", current_request_id()))
        await deferLater(reactor, 0.02, lambda: None)
        await defer.Deferred.fromCoroutine(inner(tag))
        seen.append((tag, "end", current_request_id()))

    first = run_in_scope(RequestScope(id="id-a"), defer.Deferred.fromCoroutine, handler("a"))
    second = run_in_scope(RequestScope(id="id-b"), defer.Deferred.fromCoroutine, handler("b"))
    assert current.get() is None
    await defer.gatherResults([first, second])
    for tag, step, request_id in seen:
        assert request_id == f"id-{tag}", (tag, step)
    assert len(seen) == 6
    assert current.get() is None


def test_global_publisher_round_trip():
    """
    Through the global publisher (as ``serve`` logs), a module's Logger
    event comes out as one parseable JSON line.
    """
    out = io.StringIO()
    observer = observer_for("json", "info", out)
    globalLogPublisher.addObserver(observer)
    try:
        Logger(namespace="gateway.somewhere").info("hello {who}", who="operator")
    finally:
        globalLogPublisher.removeObserver(observer)
    (record,) = [json.loads(line) for line in out.getvalue().splitlines()
                 if "gateway.somewhere" in line]
    assert record["message"] == "hello operator" and record["who"] == "operator"
