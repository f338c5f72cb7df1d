"""
Upstream-driven state (`gateway.translate.following`): the gateway follows
an answered authorization, and a finalized order, at the CA itself; client
reads join the read in flight or get the newest answer, and cause no
upstream request of their own while it does.

The mechanism on its own (`SingleFlight`, `Follower`) against a
``task.Clock``, then whole v1 flows through an in-memory gateway and the
`FakeCA`, counting the signed requests the CA receives.
"""

from __future__ import annotations

from typing import List, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gateway.keys.jose import AccountKey, b64url
from gateway.process.testing import FakeCA, build_test_gateway
from gateway.status import Status
from gateway.translate.following import (
    Answer, FollowPolicy, Following, SingleFlight,
)
from gateway.translate.memory import BackgroundWork
from gateway.upstream.errors import PollTimeout
from tests.support.v1_client import V1TestClient

KEY = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))

#: Requests a CA receives that carry no signature.
UNSIGNED = ("directory", "newNonce")


def signed_requests(ca: FakeCA) -> int:
    return sum(n for kind, n in ca.counts.items() if kind not in UNSIGNED)


def to_next_call(clock, longest: float = 1.0) -> float:
    """
    Move ``clock`` to its next delayed call (at most ``longest`` on), so
    that what it runs runs at exactly its time; the new time.
    """
    now = clock.seconds()
    calls = [c.getTime() for c in clock.getDelayedCalls()]
    clock.advance(min([longest, *(t - now for t in calls if t > now)]) if calls else longest)
    return clock.seconds()


def gaps(times) -> List[float]:
    return [round(b - a, 3) for a, b in zip(times, times[1:])]


def make_csr(names) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                       critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


class ScriptedReads:
    """
    An upstream read whose answers a test hands out one by one: each call
    returns a Deferred the test fires with `answer`.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.started: List[float] = []
        self.pending: List[defer.Deferred] = []

    async def __call__(self) -> Answer[str]:
        self.started.append(self.clock.seconds())
        waiting: defer.Deferred = defer.Deferred()
        self.pending.append(waiting)
        return await waiting

    def answer(self, value: str, retry_after: Optional[float] = None) -> None:
        self.pending.pop(0).callback(Answer(value, retry_after))

    def fail(self, error: Exception) -> None:
        self.pending.pop(0).errback(error)


class SingleFlightTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.reads = ScriptedReads(self.clock)
        self.flights = SingleFlight()

    def test_concurrent_reads_share_one(self):
        """
        Twenty reads of one key while one is in flight make one upstream
        read, and each gets its answer.
        """
        waiting = [self.flights.read("authz:1", self.reads) for _ in range(20)]
        self.assertEqual(len(self.reads.started), 1)
        self.assertTrue(self.flights.in_flight("authz:1"))
        self.reads.answer("valid")
        self.assertEqual([self.successResultOf(w).value for w in waiting], ["valid"] * 20)
        self.assertFalse(self.flights.in_flight("authz:1"))
        # Once it has landed, the next read is a new one.
        self.flights.read("authz:1", self.reads)
        self.assertEqual(len(self.reads.started), 2)

    def test_other_keys_fly_alone(self):
        self.flights.read("authz:1", self.reads)
        self.flights.read("authz:2", self.reads)
        self.assertEqual(len(self.reads.started), 2)

    def test_an_error_reaches_every_caller(self):
        waiting = [self.flights.read("authz:1", self.reads) for _ in range(3)]
        self.reads.fail(ValueError("the CA failed"))
        for w in waiting:
            self.failureResultOf(w, ValueError)

    def test_a_caller_that_gives_up_leaves_the_read_to_the_others(self):
        first = self.flights.read("authz:1", self.reads)
        second = self.flights.read("authz:1", self.reads)
        first.cancel()
        self.failureResultOf(first, defer.CancelledError)
        self.reads.answer("valid")
        self.assertEqual(self.successResultOf(second).value, "valid")


class FollowerTests(SynchronousTestCase):
    """
    The follower's schedule: the first read after `FollowPolicy.first`
    (or at once when a client asks), then backing off, or as the CA's
    ``Retry-After`` says.
    """

    def setUp(self):
        self.clock = Clock()
        self.reads = ScriptedReads(self.clock)
        self.background = BackgroundWork()
        self.following = Following(self.clock, self.background,
                                   FollowPolicy(first=0.05, factor=2.0, maximum=0.4, timeout=10.0))

    def follow(self, first_delay=None):
        return self.following.follow("authz:1", self.reads, lambda value: value == "valid",
                                     first_delay)

    def run_reads(self, answers, until=30.0):
        """
        Answer each read the follower makes, the moment it makes it, with
        the next of ``answers`` (value, retry_after).
        """
        answers = list(answers)
        while self.clock.seconds() < until and answers:
            while self.reads.pending and answers:
                self.reads.answer(*answers.pop(0))
            to_next_call(self.clock)

    def test_backs_off_until_settled(self):
        """
        Reads at 0.05 (the first delay), then 0.05, 0.1, 0.2, 0.4 and 0.4
        (the maximum) apart, until the answer is settled; then it stops.
        """
        follower = self.follow()
        settled = follower.settled()
        self.run_reads([("pending", None)] * 5 + [("valid", None)])
        self.assertEqual(round(self.reads.started[0], 3), 0.05)
        self.assertEqual(gaps(self.reads.started), [0.05, 0.1, 0.2, 0.4, 0.4])
        self.assertEqual(self.successResultOf(settled), "valid")
        self.assertFalse(follower.running)
        self.assertIsNone(self.following.get("authz:1"))
        self.clock.advance(60)
        self.assertEqual(len(self.reads.started), 6)

    def test_honours_retry_after(self):
        """
        A ``Retry-After`` of 3 s puts the next read 3 s later, beyond the
        backoff's maximum; 0 (or a date in the past) is not a busy loop.
        """
        self.follow(first_delay=0)
        self.run_reads([("pending", 3.0), ("pending", 0.0), ("valid", None)])
        self.assertEqual(gaps(self.reads.started), [3.0, 0.05])

    def test_a_client_read_brings_the_first_read_forward(self):
        """
        A client read before the first read starts it now and joins it;
        later client reads get the newest answer at once and start nothing,
        however many there are.
        """
        follower = self.follow()
        self.clock.advance(0.01)
        first = follower.newest()
        self.assertEqual(self.reads.started, [0.01])
        joined = [follower.newest() for _ in range(5)]
        self.reads.answer("pending")
        self.assertEqual([self.successResultOf(d) for d in [first, *joined]], ["pending"] * 6)
        for _ in range(20):
            self.assertEqual(self.successResultOf(follower.newest()), "pending")
        self.assertEqual(len(self.reads.started), 1)
        # The follower's own schedule goes on from its read.
        self.clock.advance(0.05)
        self.assertEqual(len(self.reads.started), 2)
        in_flight = follower.newest()
        self.assertNoResult(in_flight)
        self.reads.answer("valid")
        self.assertEqual(self.successResultOf(in_flight), "valid")
        self.assertEqual(self.successResultOf(follower.newest()), "valid")

    def test_gives_up_after_the_timeout(self):
        follower = self.follow(first_delay=0)
        settled = follower.settled()
        self.run_reads([("pending", None)] * 100, until=30)
        self.failureResultOf(settled, PollTimeout)
        self.assertIsNone(self.following.get("authz:1"))
        self.assertLess(self.reads.started[-1], 10.0)

    def test_an_upstream_failure_ends_it(self):
        follower = self.follow(first_delay=0)
        settled = follower.settled()
        self.reads.fail(ValueError("the CA failed"))
        self.failureResultOf(settled, ValueError)
        self.assertIsNone(self.following.get("authz:1"))

    def test_one_follower_per_key(self):
        first = self.follow()
        self.assertIs(self.follow(), first)

    def test_shutdown_ends_it(self):
        follower = self.follow()
        settled = follower.settled()
        self.successResultOf(defer.ensureDeferred(self.background.drain()))
        self.failureResultOf(settled, defer.CancelledError)
        self.assertEqual(len(self.background), 0)


class AuthorizationFollowingTests(SynchronousTestCase):
    """
    v1 flows through an in-memory gateway: the CA keeps an answered
    challenge ``processing`` for a second (`FakeCA.decide_after`).
    """

    def setUp(self):
        self.ca = FakeCA(validate_immediately=False, decide_after=1.0)
        self.gateway = build_test_gateway([KEY], ca=self.ca)
        self.client = V1TestClient(self.gateway.base_url, KEY, http=self.gateway.client)

    def resolve(self, coroutine):
        return self.successResultOf(defer.ensureDeferred(coroutine))

    def new_authz(self, name="follow.example.test"):
        reply = self.resolve(self.client.post(self.gateway.url("/acme/new-authz"), {
            "resource": "new-authz", "identifier": {"type": "dns", "value": name}}))
        self.assertEqual(reply.status, 201, reply.body)
        return reply

    def answer(self, authz):
        challenge = next(c for c in authz.json()["challenges"] if c["type"] == "http-01")
        reply = self.resolve(self.client.post(challenge["uri"], {
            "resource": "challenge", "type": "http-01",
            "keyAuthorization": f"{challenge['token']}.{KEY.thumbprint}"}))
        self.assertEqual(reply.status, 202, reply.body)
        return reply

    def get(self, url):
        reply = self.resolve(self.client.get(url))
        self.assertEqual(reply.status, 200, reply.body)
        return reply.json()

    def test_twenty_gets_while_following_cause_no_signature(self):
        """
        Once the gateway follows the authorization (its first read made),
        20 anonymous GETs cause no signed upstream request: each is
        answered with the newest answer.
        """
        authz = self.new_authz()
        url = authz.header("location")
        self.answer(authz)
        self.assertEqual(self.get(url)["status"], Status.PENDING)  # the first read, brought forward
        before = signed_requests(self.ca)
        for _ in range(20):
            self.assertEqual(self.get(url)["status"], Status.PENDING)
        self.assertEqual(signed_requests(self.ca), before)

    def test_twenty_concurrent_gets_join_the_read_in_flight(self):
        """
        20 GETs while the one upstream read is in flight (the CA holds its
        answer) all wait for it: one signed request, 20 answers.
        """
        authz = self.new_authz()
        url = authz.header("location")
        self.answer(authz)
        before = self.ca.counts["authorization"]
        self.ca.hold_next("/authz/")
        gets = [defer.ensureDeferred(self.client.get(url)) for _ in range(20)]
        for get in gets:
            self.assertNoResult(get)
        self.assertEqual(self.ca.counts["authorization"] - before, 1)
        self.assertEqual(self.ca.release_held(), 1)
        self.gateway.flush()
        replies = [self.successResultOf(get) for get in gets]
        self.assertEqual({r.status for r in replies}, {200})
        self.assertEqual(self.ca.counts["authorization"] - before, 1)

    def test_gets_cost_nothing_beyond_the_followers_schedule(self):
        """
        A client polling every 0.02 s until the authorization is valid
        (the CA decides after 1 s) makes the CA no busier than the
        follower alone: the same reads as a run without client reads
        after the first, and every answer is the newest — valid as soon
        as the follower has read it.
        """

        def run(poll: bool) -> int:
            self.setUp()
            authz = self.new_authz()
            url = authz.header("location")
            self.answer(authz)
            before = signed_requests(self.ca)
            if poll:
                self.assertEqual(self.get(url)["status"], Status.PENDING)
            else:
                self.gateway.advance(0.05)  # the follower's first read, on its own
            seen = Status.PENDING
            while seen == Status.PENDING:
                self.gateway.advance(0.02)
                if poll:
                    seen = self.get(url)["status"]
                elif self.gateway.context.following.get(
                        "authz:" + url.rsplit("/", 1)[1]) is None:
                    seen = Status.VALID
            return signed_requests(self.ca) - before

        polled, alone = run(poll=True), run(poll=False)
        self.assertEqual(polled, alone)
        # 0, 0.05, 0.15, 0.35, 0.75, 1.55 s after answering: six reads.
        self.assertLessEqual(polled, 7)

    def test_valid_as_soon_as_the_follower_learns_it(self):
        """
        No read is held back by a timer: the GET right after the
        follower's read that saw ``valid`` answers ``valid``.
        """
        authz = self.new_authz()
        url = authz.header("location")
        self.answer(authz)
        authz_id = url.rsplit("/", 1)[1]
        while self.gateway.context.following.get("authz:" + authz_id) is not None:
            self.gateway.advance(0.01)
        before = signed_requests(self.ca)
        document = self.get(url)
        self.assertEqual(document["status"], Status.VALID)
        http01 = next(c for c in document["challenges"] if c["type"] == "http-01")
        self.assertEqual(http01["status"], Status.VALID)
        self.assertEqual(signed_requests(self.ca), before)

    def test_honours_retry_after(self):
        """
        The CA's ``Retry-After: 2`` on a pending authorization spaces the
        follower's reads 2 s apart, however fast the client polls.
        """
        self.ca.retry_after = "2"
        self.ca.decide_after = 5.0
        authz = self.new_authz()
        url = authz.header("location")
        self.answer(authz)
        times = []
        previous = self.ca.counts["authorization"]
        while self.get(url)["status"] == Status.PENDING and len(times) < 5:
            if self.ca.counts["authorization"] != previous:
                times.append(self.gateway.clock.seconds())
                previous = self.ca.counts["authorization"]
            to_next_call(self.gateway.clock, longest=0.1)
            self.gateway.flush()
        self.assertGreaterEqual(len(times), 2)
        self.assertEqual(set(gaps(times)), {2.0})

    def test_an_unanswered_authorization_is_read_upstream_once_per_recheck(self):
        """
        50 GETs of a pending authorization nobody answered, within one
        `PENDING_RECHECK_SECONDS`, cause one upstream read: nothing changes
        at the CA until a challenge is answered, and the store holds the
        CA's last answer, asked again only that often.
        """
        from gateway.translate.authorizations import PENDING_RECHECK_SECONDS

        authz = self.new_authz()
        url = authz.header("location")
        before = signed_requests(self.ca)
        for _ in range(50):
            self.assertEqual(self.get(url)["status"], Status.PENDING)
            self.gateway.advance(PENDING_RECHECK_SECONDS / 60)
        self.assertEqual(signed_requests(self.ca), before + 1)

    def test_an_invalid_authorization_is_not_read_upstream_again(self):
        """
        ``invalid`` is final (RFC 8555 § 7.1.6): once the gateway has the
        CA's ``invalid``, a client that keeps polling it -- legacy clients
        poll a failed authorization until they give up -- is answered from
        the store, the CA's reason included, and costs the CA nothing, not
        one read per `PENDING_RECHECK_SECONDS`.
        """
        from gateway.translate.authorizations import PENDING_RECHECK_SECONDS

        self.ca.validator = lambda authorization, challenge, key_authorization: False
        authz = self.new_authz()
        url = authz.header("location")
        self.answer(authz)
        self.gateway.advance(1.0)
        for _ in range(10):
            if self.get(url)["status"] == Status.INVALID:
                break
            self.gateway.advance(0.5)
        failed = self.get(url)
        self.assertEqual(failed["status"], Status.INVALID)
        before = signed_requests(self.ca)
        for _ in range(6):
            self.gateway.advance(PENDING_RECHECK_SECONDS)
            again = self.get(url)
            self.assertEqual(again["status"], Status.INVALID)
            [challenge] = [c for c in again["challenges"] if c["type"] == "http-01"]
            self.assertIn("not the expected key authorization", challenge["error"]["detail"])
        self.assertEqual(signed_requests(self.ca), before)

    def test_an_answer_the_store_never_got_is_found_at_the_recheck(self):
        """
        The challenge was answered upstream by a process killed before it
        stored the answer (or by another replica): the store says nothing
        is being validated, but the next read after `PENDING_RECHECK_SECONDS`
        asks the CA, and the client sees ``valid`` instead of ``pending``
        for good.
        """
        from gateway.translate.authorizations import PENDING_RECHECK_SECONDS

        authz = self.new_authz()
        url = authz.header("location")
        self.assertEqual(self.get(url)["status"], Status.PENDING)
        [ca_authz] = self.ca.authorizations.values()
        ca_authz.challenges[0].status = Status.VALID
        ca_authz.status = Status.VALID
        self.assertEqual(self.get(url)["status"], Status.PENDING)
        self.gateway.advance(PENDING_RECHECK_SECONDS)
        self.assertEqual(self.get(url)["status"], Status.VALID)

    def test_a_torn_read_does_not_end_the_following(self):
        """
        A read torn between the CA's two writes -- the authorization still
        ``pending``, its challenge already ``valid`` (Pebble's VA sets one,
        then the other, while its WFE copies them one after the other) --
        does not end the following: the client sees ``valid`` once the CA
        has it, and is not left polling ``pending`` for good.
        """
        authz = self.new_authz()
        url = authz.header("location")
        self.answer(authz)
        [ca_authz] = self.ca.authorizations.values()
        [answered] = [c for c in ca_authz.challenges if c.status == Status.PROCESSING]
        answered.status = Status.VALID
        self.assertEqual(self.get(url)["status"], Status.PENDING)
        authz_id = url.rsplit("/", 1)[1]
        self.assertIsNotNone(self.gateway.context.following.get("authz:" + authz_id))
        ca_authz.status = Status.VALID
        self.gateway.advance(0.5)
        self.assertEqual(self.get(url)["status"], Status.VALID)

    def test_a_challenge_the_ca_still_shows_pending_is_followed(self):
        """
        A CA whose answer to the challenge POST, and whose next reads, still
        show the challenge ``pending`` (its VA has not taken the job yet:
        Debian's Pebble 2.4, now and then) is followed all the same: the
        client sees ``valid`` once the CA decides, and is not left polling
        ``pending`` for good.
        """
        authz = self.new_authz()
        url = authz.header("location")
        [ca_authz] = self.ca.authorizations.values()
        self.answer(authz)
        [answered] = [c for c in ca_authz.challenges if c.status == Status.PROCESSING]
        answered.status = Status.PENDING  # the VA's queue
        self.assertEqual(self.get(url)["status"], Status.PENDING)
        self.gateway.advance(0.05)
        self.gateway.advance(0.1)
        self.assertEqual(self.get(url)["status"], Status.PENDING)
        authz_id = url.rsplit("/", 1)[1]
        self.assertIsNotNone(self.gateway.context.following.get("authz:" + authz_id))
        answered.status = Status.PROCESSING  # the VA took it: decided at the next read
        for _ in range(4):
            self.gateway.advance(0.5)
        self.assertEqual(self.get(url)["status"], Status.VALID)

    def test_after_a_restart_a_read_follows_again(self):
        """
        A gateway restarted while the CA validates has no follower; the
        stored challenge says ``processing``, so the first GET follows the
        authorization again, and the client sees it become valid.
        """
        authz = self.new_authz()
        url = authz.header("location")
        self.answer(authz)
        restarted = build_test_gateway([KEY], ca=self.ca, store=self.gateway.store)
        client = V1TestClient(restarted.base_url, KEY, http=restarted.client)
        authz_id = url.rsplit("/", 1)[1]
        self.assertIsNone(restarted.context.following.get("authz:" + authz_id))
        reply = self.resolve(client.get(url))
        self.assertEqual(reply.json()["status"], Status.PENDING)
        self.assertIsNotNone(restarted.context.following.get("authz:" + authz_id))
        restarted.advance(2.0)
        self.assertEqual(self.resolve(client.get(url)).json()["status"], Status.VALID)


class OrderFollowingTests(SynchronousTestCase):
    """
    After finalize the gateway follows the order at once, backing off,
    honouring ``Retry-After``, storing each status as it arrives.
    """

    def make(self, **ca_options):
        self.ca = FakeCA(**ca_options)
        self.gateway = build_test_gateway([KEY], ca=self.ca)
        self.client = V1TestClient(self.gateway.base_url, KEY, http=self.gateway.client)

    def resolve(self, coroutine):
        return self.successResultOf(defer.ensureDeferred(coroutine))

    def authorize(self, name):
        reply = self.resolve(self.client.post(self.gateway.url("/acme/new-authz"), {
            "resource": "new-authz", "identifier": {"type": "dns", "value": name}}))
        challenge = next(c for c in reply.json()["challenges"] if c["type"] == "http-01")
        self.resolve(self.client.post(challenge["uri"], {"resource": "challenge",
                                                         "type": "http-01"}))
        self.resolve(self.client.get(reply.header("location")))

    def new_cert(self, name):
        return defer.ensureDeferred(self.client.post(self.gateway.url("/acme/new-cert"), {
            "resource": "new-cert", "csr": b64url(make_csr([name]))}))

    def order_reads_until_issued(self, pending):
        times = [self.gateway.clock.seconds()]
        count = self.ca.counts["order"]
        while not pending.called:
            to_next_call(self.gateway.clock)
            self.gateway.flush()
            if self.ca.counts["order"] != count:
                count = self.ca.counts["order"]
                times.append(self.gateway.clock.seconds())
        return gaps(times)

    def test_follows_at_once_then_backs_off(self):
        """
        The CA takes 0.3 s to issue: the gateway reads the order at once
        after finalize, then 0.05, 0.1 and 0.2 s later, and stores
        ``processing`` when it sees it.
        """
        self.make(issue_after=0.3)
        self.authorize("order.example.test")
        pending = self.new_cert("order.example.test")
        self.assertNoResult(pending)
        self.assertEqual(self.ca.counts["order"], 1)  # read at once, still processing
        stored = self.successResultOf(self.gateway.store.find_orders(
            1, ("order.example.test",), (Status.PROCESSING,)))
        self.assertEqual(len(stored), 1)
        gaps = self.order_reads_until_issued(pending)
        self.assertEqual(gaps, [0.05, 0.1, 0.2])
        reply = self.successResultOf(pending)
        self.assertEqual(reply.status, 201, reply.body)
        valid = self.successResultOf(self.gateway.store.find_orders(
            1, ("order.example.test",), (Status.VALID,)))
        self.assertEqual(len(valid), 1)

    def test_honours_retry_after(self):
        """
        ``Retry-After: 1`` on finalize and on the processing order: the
        first read one second after finalize, the next one second later.
        """
        self.make(issue_after=1.5, retry_after="1")
        self.authorize("order.example.test")
        self.ca.counts["order"] = 0
        pending = self.new_cert("order.example.test")
        self.assertEqual(self.ca.counts["order"], 0)
        gaps = self.order_reads_until_issued(pending)
        self.assertEqual(gaps, [1.0, 1.0])
        self.assertEqual(self.successResultOf(pending).status, 201)
