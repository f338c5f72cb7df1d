"""
What every v1 request costs the gateway's HTTP front, counted (never
timed): the work a profile of ``HEAD /directory`` at 64 connections showed
and that was removed, each test counting that it stays removed while the
answers stay exactly what they were.  (The listener's timers are counted
in ``tests/security/test_listener_limits.py``.)
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from gateway.process.testing import FakeCA, build_test_gateway
from gateway.v1 import messages, resource
from tests.support.v1_client import _reply
from tests.test_v1_face import KEY


class WebsiteCA(FakeCA):
    """
    A FakeCA whose directory ``meta`` names a website, which can change.
    """

    website = "https://ca.test/about"

    def _directory(self):
        directory = super()._directory()
        directory["meta"]["website"] = self.website
        return directory


class DirectoryBuiltOncePerBase(SynchronousTestCase):
    """
    The directory document is built and encoded once per base URL, not per
    request (`gateway.v1.resource.Directory`).
    """

    def setUp(self):
        self.builds = []
        build = messages.directory

        def counting(urls, meta):
            self.builds.append(urls.base)
            return build(urls, meta)

        self.patch(messages, "directory", counting)

    def request(self, gateway, url, method="GET"):
        return self.successResultOf(defer.Deferred.fromCoroutine(
            self._request(gateway, url, method)))

    @staticmethod
    async def _request(gateway, url, method):
        return await _reply(await gateway.client.request(method, url))

    def test_one_build_for_many_requests(self):
        """
        Twenty GETs and HEADs of the directory (both paths) build it once;
        every GET gets the same document, every answer its own nonce.
        """
        gateway = build_test_gateway([KEY])
        replies = [self.request(gateway, gateway.base_url + path, method)
                   for _ in range(5) for path in ("/directory", "/directory/")
                   for method in ("GET", "HEAD")]
        self.assertEqual(self.builds, [gateway.base_url])
        self.assertEqual({reply.status for reply in replies}, {200})
        bodies = {reply.body for reply in replies if reply.body}
        self.assertEqual(len(bodies), 1)
        self.assertEqual(replies[0].json()["new-reg"], gateway.base_url + "/acme/new-reg")
        self.assertEqual({reply.body for reply in replies[1::2]}, {b""})  # the HEADs
        nonces = {reply.header("replay-nonce") for reply in replies}
        self.assertEqual(len(nonces), len(replies))

    def test_rebuilt_when_the_upstream_directory_is_fetched_again(self):
        """
        A new upstream directory (its ``meta``) is shown at once.
        """
        ca = WebsiteCA()
        gateway = build_test_gateway([KEY], ca=ca)
        url = gateway.base_url + "/directory"
        self.assertEqual(self.request(gateway, url).json()["meta"]["website"], ca.website)
        ca.website = "https://ca.test/about-v2"
        self.successResultOf(defer.Deferred.fromCoroutine(
            gateway.gateway.context.upstream.directory(refresh=True)))
        for _ in range(3):
            self.assertEqual(self.request(gateway, url).json()["meta"]["website"],
                             "https://ca.test/about-v2")
        self.assertEqual(len(self.builds), 2)

    def test_one_build_per_host_and_a_bounded_number_kept(self):
        """
        Without ``--base-url`` each ``Host`` gets its own links, built once;
        a client cycling through hosts never makes the gateway keep more
        than `DIRECTORY_ANSWERS_KEPT` answers.
        """
        gateway = build_test_gateway([KEY], base_url="")
        for _ in range(3):
            for host in ("a.test", "b.test:8443"):
                reply = self.request(gateway, f"http://{host}/directory")
                self.assertEqual(reply.json()["new-cert"], f"http://{host}/acme/new-cert")
        self.assertEqual(self.builds, ["http://a.test", "http://b.test:8443"])
        kept = resource.DIRECTORY_ANSWERS_KEPT
        for index in range(kept * 3):
            self.request(gateway, f"http://h{index}.test/directory")
        directory = gateway.gateway.face.tree.children[b"directory"]
        self.assertEqual(len(directory._answers), kept)
        self.assertEqual(len(self.builds), 2 + kept * 3)


class TimeStampsOncePerSecond(SynchronousTestCase):
    """
    Every log line's time stamp has its second formatted once per second,
    not once per line (`gateway.operations.logs.SecondStamps`), and reads
    exactly as before.
    """

    #: Times around the edges: a microsecond rounding into the next second,
    #: half a microsecond (rounded to even), the epoch, a leap day.
    EDGES = (0.0, 1.0, 1733220000.0, 1733220000.9999995, 1733220000.9999996,
             1733220000.0000004, 1733220000.0000005, 1733220000.0015, 1733220000.9994999,
             1709208000.25, 1764754799.5, 1764754799.9999999)

    def moments(self):
        import random

        generator = random.Random(15)
        return self.EDGES + tuple(generator.uniform(0, 4e9) for _ in range(2000)) + tuple(
            1733220000 + generator.randrange(1000) + generator.choice((0.9999995, 0.9999996, 0.0005))
            for _ in range(500))

    def test_text_time_as_twisted_formats_it(self):
        from twisted.logger import formatTime

        from gateway.operations.logs import classic_time

        for when in self.moments():
            self.assertEqual(classic_time(when), formatTime(when), when)
        self.assertEqual(classic_time(None), formatTime(None))

    def test_json_time_as_datetime_formats_it(self):
        from datetime import datetime, timezone

        from gateway.operations.logs import utc_time

        for when in self.moments():
            expected = datetime.fromtimestamp(when, tz=timezone.utc).isoformat(
                timespec="milliseconds").replace("+00:00", "Z")
            self.assertEqual(utc_time(when), expected, when)

    def test_one_second_formatted_for_many_lines(self):
        """
        400 access lines over three seconds, in either format, format three
        seconds (each line used to format its own).
        """
        from twisted.logger import LogLevel

        from gateway.operations import logs

        for stamps, render in ((logs.local_seconds, logs.event_as_text),
                               (logs.utc_seconds, logs.event_as_json)):
            before = stamps.formatted
            lines = [render({"log_format": "{method} {path} -> {status}", "method": "HEAD",
                             "path": "/directory", "status": 200, "log_level": LogLevel.info,
                             "log_namespace": "gateway.v1.face.V1Face",
                             "log_time": 1733220000.0 + index * 3 / 400})
                     for index in range(400)]
            self.assertEqual(stamps.formatted - before, 3)
            self.assertEqual(len({line for line in lines}), 400 if render is logs.event_as_json else 3)


class MessagesWithoutStringFormatter(SynchronousTestCase):
    """
    A log line's message is filled in by ``str.format_map``, not by
    ``string.Formatter`` (`gateway.operations.logs.format_message`), and
    every line reads exactly as Twisted writes it.
    """

    def events(self):
        from twisted.logger import LogLevel
        from twisted.python.failure import Failure

        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()

        class Odd:
            def __str__(self):
                return "odd\nline"

            def __repr__(self):
                return "<Odd>"

        class Unprintable:
            def __str__(self):
                raise RuntimeError("no")

        base = {"log_level": LogLevel.info, "log_namespace": "gateway.v1.face.V1Face",
                "log_time": 1733220000.25}
        formats = ["{method} {path} -> {status}", "{method} {path} -> {status} {problem}",
                   "{odd!r} and {odd}", "{status:>5}|{status:03d}", "{call()}", "{missing}",
                   "{}", "{0}", "{odd.__class__.__name__}", "{names[0]}", "plain", "", "{{literal}}",
                   "{bad", "{status:d}", "{method!x}", "{unprintable}", b"{method} as bytes", None, 12]
        fields = {"method": "HEAD", "path": "/directory", "status": 200, "problem": "{'x': 1}",
                  "odd": Odd(), "call": lambda: "called", "names": ["a", "b"],
                  "unprintable": Unprintable()}
        events = [dict(base, log_format=text, **fields) for text in formats]
        events += [dict(base, log_format="{method}", method="GET", log_system="system-7"),
                   dict(base, log_format="{method}", method="GET", log_system=Unprintable()),
                   {"log_format": "no level or namespace"},
                   dict(base, log_format="{method}", method="GET", log_level=None),
                   dict(base, log_format="{method}", method="GET", log_namespace=None),
                   dict(base, log_format="failed {what}", what="x", log_failure=failure),
                   dict(base)]
        return events

    def test_lines_as_twisted_writes_them(self):
        from twisted.logger import formatEvent, formatEventAsClassicLogText, formatTime

        import json

        from gateway.operations.logs import event_as_json, event_as_text, format_message

        for event in self.events():
            self.assertEqual(event_as_text(dict(event)),
                             formatEventAsClassicLogText(dict(event), formatTime=formatTime), event)
            self.assertEqual(format_message(dict(event)), formatEvent(dict(event)), event)
        access = {k: v for k, v in self.events()[0].items() if k != "unprintable"}
        self.assertEqual(json.loads(event_as_json(dict(access)))["message"], formatEvent(access))

    def test_an_access_line_uses_no_string_formatter(self):
        """
        An access line, text or JSON: ``string.Formatter.vformat`` is not
        called (it was, once per line).
        """
        import string

        from twisted.logger import LogLevel

        from gateway.operations.logs import event_as_json, event_as_text

        calls = []
        vformat = string.Formatter.vformat

        def counting(self, *args, **kwargs):
            calls.append(args[0])
            return vformat(self, *args, **kwargs)

        self.patch(string.Formatter, "vformat", counting)
        event = {"log_format": "{method} {path} -> {status}", "method": "HEAD",
                 "path": "/directory", "status": 200, "log_level": LogLevel.info,
                 "log_namespace": "gateway.v1.face.V1Face", "log_time": 1733220000.5,
                 "request_id": "0123456789abcdef"}
        for _ in range(50):
            self.assertIn("HEAD /directory -> 200", event_as_text(dict(event)))
            self.assertIn("HEAD /directory -> 200", event_as_json(dict(event)))
        self.assertEqual(calls, [])


class LevelFilterWithoutNamespaceWalk(SynchronousTestCase):
    """
    The level filter of ``serve``'s log observer keeps exactly the events
    Twisted's ``LogLevelFilterPredicate`` keeps, with no walk over each
    event's namespace (`gateway.operations.logs.AtLeast`).
    """

    def test_same_verdicts_as_twisted(self):
        from twisted.logger import LogLevel, LogLevelFilterPredicate

        from gateway.operations.logs import LEVELS, AtLeast

        missing = object()
        for configured in LEVELS.values():
            ours, theirs = AtLeast(configured), LogLevelFilterPredicate(defaultLogLevel=configured)
            for level in (*LogLevel.iterconstants(), None, missing):
                for namespace in ("gateway.v1.face.V1Face", "twisted", "", None, missing):
                    event = {"log_format": "x"}
                    if level is not missing:
                        event["log_level"] = level
                    if namespace is not missing:
                        event["log_namespace"] = namespace
                    self.assertIs(ours(dict(event)), theirs(dict(event)), (configured, event))

    def test_no_namespace_walk_per_event(self):
        """
        100 access events through the observer: no namespace lookup (one
        per event, each walking the namespace's parents, before).
        """
        import io

        from twisted.internet.task import Clock
        from twisted.logger import LogLevel, LogLevelFilterPredicate

        from gateway.operations.logs import observer_for

        lookups = []
        lookup = LogLevelFilterPredicate.logLevelForNamespace

        def counting(self, namespace):
            lookups.append(namespace)
            return lookup(self, namespace)

        self.patch(LogLevelFilterPredicate, "logLevelForNamespace", counting)
        out = io.StringIO()
        observer = observer_for("text", "info", out, Clock())
        for index in range(100):
            observer({"log_format": "{method} {path} -> {status}", "method": "HEAD",
                      "path": "/directory", "status": 200, "log_level": LogLevel.info,
                      "log_namespace": "gateway.v1.face.V1Face", "log_time": 1733220000.0})
        observer({"log_format": "hidden", "log_level": LogLevel.debug, "log_namespace": "gateway",
                  "log_time": 1733220000.0})
        self.assertEqual(out.getvalue().count("HEAD /directory -> 200"), 100)
        self.assertNotIn("hidden", out.getvalue())
        self.assertEqual(lookups, [])


class NonceTagsWithoutHMACObjects(SynchronousTestCase):
    """
    A nonce's tag is one ``hmac.digest`` call (`gateway.v1.nonces`): no
    ``hmac.HMAC`` object per nonce issued or checked, the same tag as
    before (nonces issued before an upgrade stay good).
    """

    def test_no_hmac_objects_and_the_same_tags(self):
        import hashlib
        import hmac

        from twisted.internet.task import Clock

        from gateway.keys.jose import b64url_decode
        from gateway.v1.nonces import NonceIssuer

        built = []
        init = hmac.HMAC.__init__

        def counting(self, *args, **kwargs):
            built.append(args)
            init(self, *args, **kwargs)

        self.patch(hmac.HMAC, "__init__", counting)
        clock = Clock()
        clock.advance(1733220000)
        issuer = NonceIssuer(clock, used=None)
        nonces = [issuer.issue() for _ in range(100)]
        self.assertTrue(all(issuer.check(nonce) for nonce in nonces))
        self.assertEqual(built, [])
        for nonce in nonces[:5]:
            raw = b64url_decode(nonce)
            self.assertEqual(raw[12:], hmac.new(issuer.key, raw[:12], hashlib.sha256).digest()[:12])


class DroppedVisitsNotBuilt(SynchronousTestCase):
    """
    An unsigned request of a client that never signed is not recorded in
    the migration report, so its visit is not even built
    (`gateway.operations.report.ClientRecorder.drops`); a client that has
    signed still has every request recorded.
    """

    def test_visits_built_only_when_recorded(self):
        from gateway.operations import observe
        from tests.support.v1_client import V1TestClient

        built = []
        visit_for = observe.visit_for

        def counting(scope, *args, **kwargs):
            visit = visit_for(scope, *args, **kwargs)
            built.append(visit)
            return visit

        self.patch(observe, "visit_for", counting)
        gateway = build_test_gateway([KEY])
        recorder = gateway.gateway.face.recorder
        recorded = []

        class Recording:
            drops = recorder.drops

            def record(self, visit):
                recorded.append(visit)
                return recorder.record(visit)

        self.patch(gateway.gateway.face, "recorder", Recording())
        client = V1TestClient(gateway.base_url, KEY, http=gateway.client)
        run = lambda coroutine: self.successResultOf(defer.Deferred.fromCoroutine(coroutine))
        for _ in range(20):
            self.assertEqual(run(client.get(gateway.base_url + "/directory", method="HEAD")).status,
                             200)
        self.assertEqual((built, recorded), ([], []))
        reply = run(client.post(gateway.base_url + "/acme/new-reg",
                                {"resource": "new-reg", "contact": ["mailto:a@example.test"]}))
        self.assertIn(reply.status, (201, 409))
        for _ in range(3):
            run(client.get(gateway.base_url + "/directory", method="HEAD"))
        # new-reg's own HEAD for a nonce came before it signed: not built.
        self.assertEqual(len(built), 4)
        self.assertEqual(recorded, built)
        self.assertEqual([visit.thumbprint is None for visit in built], [False, True, True, True])


class LogEventsKeptInOneCall(SynchronousTestCase):
    """
    ``serve``'s observer drops and stamps events in one call
    (`gateway.operations.logs.KeptEvents`) and its writer tells a warning
    by a set lookup: no Twisted filter loop and no comparison of
    ``constantly`` constants per access event, the same events kept and
    stamped as by Twisted's ``FilteringLogObserver`` over the two
    predicates.
    """

    def test_same_events_as_twisteds_filter(self):
        from twisted.logger import FilteringLogObserver, LogLevel

        from gateway.operations.logs import LEVELS, QUIET_NAMESPACES, AtLeast, KeptEvents
        from gateway.operations.scope import RequestScope, current

        missing = object()
        quiet = next(iter(QUIET_NAMESPACES))
        for configured in LEVELS.values():
            ours, theirs = [], []
            keep = KeptEvents(ours.append, configured)
            twisteds = FilteringLogObserver(with_request_id(theirs.append),
                                            [without_noise, AtLeast(configured)])
            for scoped in (False, True):
                if scoped:
                    token = current.set(RequestScope(id="0123456789abcdef"))
                for level in (*LogLevel.iterconstants(), None, missing):
                    for namespace in ("gateway.v1.face.V1Face", quiet, "", None, missing):
                        for named in ({}, {"request_id": "mine"}):
                            event = {"log_format": "x", **named}
                            if level is not missing:
                                event["log_level"] = level
                            if namespace is not missing:
                                event["log_namespace"] = namespace
                            keep(dict(event))
                            twisteds(dict(event))
                if scoped:
                    current.reset(token)
            self.assertEqual(ours, theirs, configured)
            self.assertTrue(ours)
            self.assertTrue(any(event.get("request_id") == "0123456789abcdef" for event in ours))

    def test_no_filter_loop_and_no_constant_comparisons(self):
        """
        100 access events and a warning through the observer: Twisted's
        ``shouldLogEvent`` never runs, no ``constantly`` constant is
        compared (``>=`` and ``==`` of ``LogLevel``/``PredicateResult``
        per event, before); the lines and the warning's flush as before.
        """
        import io

        from constantly import _constants
        from twisted.internet.task import Clock
        from twisted.logger import LogLevel, _filter

        from gateway.operations.logs import observer_for

        compared, filtered = [], []
        for name in ("__lt__", "__le__", "__gt__", "__ge__"):
            original = getattr(_constants._Constant, name)

            def counting(this, other, original=original, name=name):
                compared.append(name)
                return original(this, other)

            self.patch(_constants._Constant, name, counting)
        should = _filter.shouldLogEvent
        self.patch(_filter, "shouldLogEvent",
                   lambda predicates, event: (filtered.append(event), should(predicates, event))[1])

        class Flushes(io.StringIO):
            flushed = 0

            def flush(self):
                self.flushed += 1

        out, clock = Flushes(), Clock()
        observer = observer_for("text", "info", out, clock)
        compared.clear()
        for _ in range(100):
            observer({"log_format": "{method} {path} -> {status}", "method": "HEAD",
                      "path": "/directory", "status": 200, "log_level": LogLevel.info,
                      "log_namespace": "gateway.v1.face.V1Face", "log_time": 1733220000.0})
        self.assertEqual(out.flushed, 0)
        observer({"log_format": "trouble", "log_level": LogLevel.warn,
                  "log_namespace": "gateway", "log_time": 1733220000.0})
        self.assertEqual(out.flushed, 1)
        self.assertEqual(out.getvalue().count("HEAD /directory -> 200"), 100)
        self.assertIn("trouble", out.getvalue())
        self.assertEqual((compared, filtered), ([], []))


class AnswerCountersLookedUpOnce(SynchronousTestCase):
    """
    Each answer's counter child is looked up once per (endpoint, status)
    pair (`gateway.operations.metrics.Metrics.v1_response`), not with
    ``labels()`` per answer; the counts are what they were.
    """

    def test_one_lookup_per_pair(self):
        from prometheus_client import Counter

        from gateway.operations.metrics import Metrics

        looked_up = []
        labels = Counter.labels

        def counting(counter, *values, **named):
            looked_up.append((counter._name, values))
            return labels(counter, *values, **named)

        self.patch(Counter, "labels", counting)
        metrics = Metrics(process=False)
        for _ in range(20):
            metrics.v1_response("directory", 200)
            metrics.v1_response("new-cert", 201)
            metrics.v2_response("new-order", 201)
        metrics.v1_response("directory", 503)
        self.assertEqual(sorted(looked_up), sorted([
            ("acme_gateway_v1_requests", ("directory", "200")),
            ("acme_gateway_v1_requests", ("new-cert", "201")),
            ("acme_gateway_v2_requests", ("new-order", "201")),
            ("acme_gateway_v1_requests", ("directory", "503")),
        ]))
        value = metrics.registry.get_sample_value
        self.assertEqual(value("acme_gateway_v1_requests_total",
                               {"endpoint": "directory", "status": "200"}), 20)
        self.assertEqual(value("acme_gateway_v1_requests_total",
                               {"endpoint": "directory", "status": "503"}), 1)
        self.assertEqual(value("acme_gateway_v2_requests_total",
                               {"endpoint": "new-order", "status": "201"}), 20)
        self.assertEqual(value("acme_gateway_certificates_issued_total"), 20)


class VisitTimeStampsOncePerSecond(SynchronousTestCase):
    """
    A recorded visit's time stamp text is formatted once per whole second
    (`gateway.operations.report.SecondText`), and reads as before.
    """

    def test_one_format_per_second_and_the_same_text(self):
        from gateway.operations import report
        from gateway.operations.scope import RequestScope
        from gateway.store.records import format_timestamp

        formatted = []
        self.patch(report, "format_timestamp",
                   lambda seconds: (formatted.append(seconds), format_timestamp(seconds))[1])
        stamps = report.SecondText()
        moments = [1733220000 + fraction / 20 for fraction in range(20)] + [1733220001.0]
        self.assertEqual([stamps(at) for at in moments],
                         [format_timestamp(at) for at in moments])
        self.assertEqual(formatted, [1733220000, 1733220001])
        for at in (0.0, 0.999999, 1.0, 951782400.5, 1733220000.9999996, 4102444800.25):
            self.assertEqual(stamps(at), format_timestamp(at), at)
        self.patch(report, "visit_time", report.SecondText())
        del formatted[:]
        scope = RequestScope(id="0123456789abcdef", thumbprint="tp", endpoint="new-authz")
        visits = [report.visit_for(scope, "ua", "192.0.2.7", 1733220000.25 + index / 100, 201)
                  for index in range(20)]
        self.assertEqual({visit.at for visit in visits}, {"2024-12-03T10:00:00Z"})
        self.assertEqual(len(formatted), 1)


class MergedVisitsOrderedWithoutParsing(SynchronousTestCase):
    """
    Merging a visit into a report row orders the gateway's own time stamps
    as strings (`gateway.store.records._later`): no parse beyond the
    row's own validation; other spellings still order by instant.
    """

    def visit(self, at):
        from gateway.store.records import ClientVisit

        return ClientVisit(user_agent="ua", address="192.0.2.7", at=at, thumbprint="tp")

    def test_no_parse_beyond_validation(self):
        import attrs

        from gateway.store import records

        parsed = []
        instant = records.timestamp_instant
        self.patch(records, "timestamp_instant",
                   lambda text: (parsed.append(text), instant(text))[1])
        row = records.merge_visit(None, self.visit("2026-12-03T15:30:00Z"))
        later, earlier = self.visit("2026-12-03T15:30:01Z"), self.visit("2026-12-03T15:29:59Z")
        del parsed[:]
        merged = records.merge_visit(records.merge_visit(row, later), earlier)
        merging = len(parsed)
        del parsed[:]
        attrs.evolve(attrs.evolve(row, last_seen=later.at), last_seen=later.at)
        self.assertEqual(merging, len(parsed))  # the records' validators' own parses
        self.assertEqual(merged.last_seen, "2026-12-03T15:30:01Z")
        self.assertEqual(merged.last_success, "2026-12-03T15:29:59Z")
        self.assertEqual(merged.successes, 3)

    def test_other_spellings_by_instant(self):
        from gateway.store.records import _later, merge_visit

        cases = [
            # (row's last_seen, visit's at, the later)
            ("2026-12-03T15:30:00Z", "2026-12-03T15:30:00.5Z", "2026-12-03T15:30:00.5Z"),
            ("2026-12-03T15:30:00.5Z", "2026-12-03T15:30:00Z", "2026-12-03T15:30:00.5Z"),
            ("2026-12-03t15:30:01Z", "2026-12-03T15:30:00Z", "2026-12-03t15:30:01Z"),
            ("2026-12-03T15:30:00Z", "2026-12-03t15:30:01Z", "2026-12-03t15:30:01Z"),
            ("2026-12-03T15:30:00z", "2026-12-03T15:30:01Z", "2026-12-03T15:30:01Z"),
            ("2026-12-03T16:30:00+02:00", "2026-12-03T15:30:00Z", "2026-12-03T15:30:00Z"),
            ("2026-12-03T15:30:00Z", "2026-12-03T16:30:00+01:00", "2026-12-03T15:30:00Z"),
            ("2026-12-03T15:30:00Z", "2026-12-03T15:30:00Z", "2026-12-03T15:30:00Z"),
            ("2026-12-03T15:30:01Z", "2026-12-03T15:30:00Z", "2026-12-03T15:30:01Z"),
            ("2026-12-03T15:30:00Z", "2026-12-03T15:30:01Z", "2026-12-03T15:30:01Z"),
        ]
        for seen, at, later in cases:
            row = merge_visit(None, self.visit(seen))
            self.assertEqual(merge_visit(row, self.visit(at)).last_seen, later, (seen, at))
            self.assertEqual(_later(seen, at), later, (seen, at))


def without_noise(event):
    """
    The predicate ``serve`` filtered with before `KeptEvents`: drop the
    events of ``QUIET_NAMESPACES`` below warning level.
    """
    from twisted.logger import LogLevel, PredicateResult

    from gateway.operations.logs import QUIET_NAMESPACES

    level = event.get("log_level")
    if event.get("log_namespace") in QUIET_NAMESPACES and (
        level is None or level < LogLevel.warn
    ):
        return PredicateResult.no
    return PredicateResult.maybe


def with_request_id(observer):
    """
    The wrapper ``serve`` stamped with before `KeptEvents`: the current v1
    request's ``request_id`` on each event that names none.
    """
    from gateway.operations.scope import current_request_id

    def stamp(event):
        if "request_id" not in event:
            request_id = current_request_id()
            if request_id is not None:
                event = dict(event, request_id=request_id)
        observer(event)

    return stamp
