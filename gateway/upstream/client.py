"""
An asynchronous ACME v2 (RFC 8555) client on Twisted and treq: the upstream
half of the gateway.

Everything the upstream CA sees comes from here, so this module carries the
details CAs are strict about:

- URLs are used exactly as the directory and ``Location`` headers spelled
  them (Pebble builds them from the Host header; a JWS ``url`` must match the
  request URL byte for byte);
- every POST is a flattened JWS with ``alg``, ``nonce``, ``url`` and exactly
  one of ``jwk`` (newAccount, revocation by certificate key) or ``kid``, sent
  with ``Content-Type: application/jose+json`` and nothing appended;
- nonces come from a pool fed by every response's ``Replay-Nonce``; a HEAD
  to ``newNonce`` happens only when the pool is empty; ``badNonce`` is retried
  with a fresh nonce, a bounded number of times;
- reads are POST-as-GET (payload ``""``); a challenge is answered with ``{}``;
- polling honours ``Retry-After`` in both its forms, with a bounded backoff
  when the CA gives none;
- every failure is a typed exception (`gateway.upstream.errors`): a problem
  document, an unreachable or misbehaving CA, or a poll that did not end.

The reactor (for timeouts and polling delays) and the treq ``HTTPClient`` are
injected, so tests drive this with ``treq.testing.StubTreq`` and
``twisted.internet.task.Clock``.
"""

from __future__ import annotations

import collections
import json
import random
from typing import (
    Any, Awaitable, Callable, Counter, Deque, Dict, Iterable, Iterator, List, Optional, Protocol,
    Sequence, Tuple, TypeVar,
)

import attrs
from twisted.internet import defer
from treq.client import HTTPClient
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web import client as web_client

from gateway import __version__
from gateway.crashpoints import crash_point
from gateway.keys.jose import (
    AccountKey, b64url, external_account_binding, sign_flattened, sign_request,
)
from gateway.upstream.errors import (
    PollTimeout,
    UpstreamError,
    UpstreamProblem,
    UpstreamProtocolError,
    UpstreamUnavailable,
)
from gateway.status import AUTHORIZATION_FINAL, ORDER_FINAL, Status
from gateway.upstream.transport import AgentTransport, CachingEndpointFactory, agent_transport
from gateway.upstream.messages import (
    Authorization,
    CertificateChain,
    Challenge,
    Directory,
    ExternalAccountKey,
    Order,
    RenewalInfo,
    UpstreamAccount,
    order_is_ready,
    parse_links,
    parse_retry_after,
    split_pem_chain,
)

T = TypeVar("T")

#: Authorization statuses that mean an order waiting on them cannot become
#: ready any more.
AUTHORIZATION_DEAD = frozenset({Status.INVALID, Status.DEACTIVATED, Status.EXPIRED,
                                Status.REVOKED})

JOSE_CONTENT_TYPE = "application/jose+json"
DEFAULT_USER_AGENT = f"acme-gateway/{__version__} (ACME v1-to-v2 gateway; Twisted/treq)"
_NONCE_POOL_SIZE = 64


@attrs.frozen
class UpstreamResponse:
    """
    One upstream HTTP response, fully read.

    :ivar headers: lower-cased header names to lists of values.
    """

    url: str
    status: int
    headers: Dict[str, List[str]]
    body: bytes = attrs.field(repr=False)

    def header(self, name: str) -> Optional[str]:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def location(self) -> Optional[str]:
        return self.header("location")

    @property
    def links(self) -> Dict[str, List[str]]:
        return parse_links(self.headers.get("link", []))

    def json(self) -> Any:
        """
        The body as JSON.

        :raises UpstreamProtocolError: when it is not JSON.
        """
        try:
            return json.loads(self.body)
        except ValueError:
            raise UpstreamProtocolError(
                f"upstream answered {self.status} with a body that is not JSON", url=self.url
            )


@attrs.frozen
class PollPolicy:
    """
    How to poll a resource that has not reached a final state.

    :ivar initial: the first delay when the CA sends no ``Retry-After``.
    :ivar factor: the growth of that delay after each poll.
    :ivar maximum: the largest delay, whatever the CA asks for.
    :ivar timeout: the total time before giving up with `PollTimeout`.
    """

    initial: float = 0.5
    factor: float = 1.5
    maximum: float = 10.0
    timeout: float = 120.0

    def delays(self) -> Iterable[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(self.maximum, delay * self.factor)


class UpstreamMetrics(Protocol):
    """
    Told of every upstream exchange (`gateway.operations.metrics.Metrics`
    is one).
    """

    def upstream_response(self, kind: str, status: Optional[int], seconds: float) -> None: ...


class RecoverAccount(Protocol):
    """
    What the client calls when the CA answers ``accountDoesNotExist`` for a
    ``kid`` it used to know (a CA that lost its state): find or create the
    account of ``key`` again, and return the URL to sign with from now on
    (`gateway.translate.accounts.AccountRecovery`).
    """

    def __call__(self, upstream: "UpstreamClient", key: AccountKey,
                 stale_url: str) -> Awaitable[str]: ...


class UpstreamClient:
    """
    A client of one upstream ACME v2 CA.

    :param directory_url: the directory URL, exactly as the CA should see it.
    :param http: a treq ``HTTPClient`` (or ``StubTreq``).
    :param clock: an ``IReactorTime`` for timeouts and polling.
    :param request_timeout: seconds before one HTTP exchange is abandoned.
    :param max_nonce_retries: how many times one request is re-signed after
        ``badNonce`` before the error is raised.
    :param account_recovery: what to do when the CA forgot an account
        (`RecoverAccount`); `None` lets its ``accountDoesNotExist`` through.
    """

    log = Logger()

    def __init__(
        self,
        directory_url: str,
        http: HTTPClient,  # treq's, or a treq.testing.StubTreq in tests
        clock: IReactorTime,
        user_agent: str = DEFAULT_USER_AGENT,
        request_timeout: float = 30.0,
        max_nonce_retries: int = 5,
        poll_policy: PollPolicy = PollPolicy(),
        metrics: Optional[UpstreamMetrics] = None,
        read_retries: int = 2,
        retry_base_delay: float = 0.25,
        account_recovery: Optional[RecoverAccount] = None,
    ):
        self.directory_url = directory_url
        self._http = http
        #: The exchanges, on ``http``'s agent (`gateway.upstream.transport`),
        #: made at the first.
        self._transport: Optional[AgentTransport] = None
        self._clock = clock
        self._user_agent_raw = user_agent.encode("utf-8")
        self._request_timeout = request_timeout
        self._max_nonce_retries = max_nonce_retries
        self.poll_policy = poll_policy
        self._directory: Optional[Directory] = None
        self._nonces: Deque[str] = collections.deque(maxlen=_NONCE_POOL_SIZE)
        #: Counters of upstream requests by kind, for tests and metrics.
        self.request_counts: Counter[str] = collections.Counter()
        #: A `gateway.operations.metrics.Metrics` told of every exchange, or `None`.
        self.metrics = metrics
        self._account_recovery = account_recovery
        #: How often an idempotent read (directory, nonce, POST-as-GET) is
        #: retried after the CA failed to answer, with jittered backoff.
        self.read_retries = read_retries
        self.retry_base_delay = retry_base_delay
        self._random = random.Random()

    @classmethod
    def create(
        cls,
        reactor: Any,
        directory_url: str,
        ca_bundle: Optional[str] = None,
        **kwargs: Any,
    ) -> "UpstreamClient":
        """
        A client on real connections (`https_client`).

        :param ca_bundle: a PEM file of roots to trust for the CA's TLS
            instead of the system's (a private CA, Pebble in tests).
        """
        return cls(directory_url, https_client(reactor, ca_bundle), reactor, **kwargs)

    # -- transport -----------------------------------------------------------

    async def _exchange(
        self, method: str, url: str, body: Optional[bytes], headers: Headers
    ) -> UpstreamResponse:
        if self._transport is None:
            self._transport = agent_transport(self._http)
        code, response_headers, content = await self._transport.exchange(
            method.encode("ascii"), url, headers, body)
        raw_headers: Dict[str, List[str]] = {}
        for name, values in response_headers.getAllRawHeaders():
            raw_headers[name.decode("latin-1").lower()] = [v.decode("latin-1") for v in values]
        return UpstreamResponse(url=url, status=code, headers=raw_headers, body=content)

    async def _send(
        self, method: str, url: str, body: Optional[bytes] = None, content_type: Optional[str] = None,
        kind: str = "other",
    ) -> UpstreamResponse:
        """
        One HTTP exchange, bounded in time, that keeps any ``Replay-Nonce``.

        :raises UpstreamUnavailable: on connection failure, TLS failure or
            timeout.
        """
        headers = Headers({b"User-Agent": [self._user_agent_raw]})
        if content_type is not None:
            headers.setRawHeaders(b"Content-Type", [content_type.encode("ascii")])
        exchange = defer.Deferred.fromCoroutine(self._exchange(method, url, body, headers))
        timed_out: List[bool] = []

        def give_up() -> None:
            timed_out.append(True)
            exchange.cancel()

        timer = self._clock.callLater(self._request_timeout, give_up)
        self.request_counts[kind] += 1
        started = self._clock.seconds()
        try:
            response = await exchange
        except Exception as failure:
            self._observe(method, url, kind, None, started, failure)
            # Connection refused or reset, TLS failures and cancellation all
            # surface here, under several exception types.
            if timed_out:
                raise UpstreamUnavailable(
                    f"no answer from {url} within {self._request_timeout:g}s", url=url
                )
            if isinstance(failure, UpstreamError):
                raise
            if _cancelled(failure):
                # The caller gave up (a readiness deadline, shutdown): not
                # an outage to retry.
                raise defer.CancelledError(f"{method} {url} cancelled") from None
            raise UpstreamUnavailable(f"cannot reach {url}: {_describe(failure)}", url=url)
        finally:
            if timer.active():
                timer.cancel()
        nonce = response.header("replay-nonce")
        if nonce:
            self._nonces.append(nonce)
        self._observe(method, url, kind, response.status, started)
        return response

    def _observe(
        self, method: str, url: str, kind: str, status: Optional[int], started: float,
        failure: Optional[BaseException] = None,
    ) -> None:
        """
        Log one exchange with named fields, and count it in the metrics.
        (The log observer adds the id of the v1 request it served, and the
        metrics read it for their exemplar: `gateway.operations.scope`.)
        """
        seconds = self._clock.seconds() - started
        if self.metrics is not None:
            self.metrics.upstream_response(kind, status, seconds)
        if failure is None:
            self.log.info(
                "upstream {method} {url} -> {status} ({kind}, {duration:.3f}s)",
                method=method, url=url, status=status, kind=kind, duration=seconds,
            )
        else:
            self.log.warn(
                "upstream {method} {url} failed ({kind}, {duration:.3f}s): {error}",
                method=method, url=url, kind=kind, duration=seconds,
                error=_describe(failure),
            )

    def _raise_for_status(self, response: UpstreamResponse) -> None:
        if response.status < 400:
            return
        retry_after = parse_retry_after(response.header("retry-after"), self._clock.seconds())
        content_type = (response.header("content-type") or "").split(";")[0].strip().lower()
        single_headers = {k: v[0] for k, v in response.headers.items() if v}
        if "link" in response.headers:
            single_headers["link"] = ", ".join(response.headers["link"])
        document = None
        if response.body and content_type in ("application/problem+json", "application/json"):
            try:
                document = json.loads(response.body)
            except ValueError:
                document = None
        if isinstance(document, dict):
            raise UpstreamProblem.from_document(
                document, response.status, retry_after=retry_after, url=response.url,
                headers=single_headers,
            )
        if response.status >= 500:
            raise UpstreamUnavailable(
                f"upstream answered {response.status} without a problem document",
                retry_after=retry_after,
                url=response.url,
            )
        raise UpstreamProblem(
            "about:blank", "", response.status, retry_after=retry_after, url=response.url,
            headers=single_headers,
        )

    # -- directory and nonces ------------------------------------------------

    async def directory(self, refresh: bool = False) -> Directory:
        """
        The upstream directory, fetched once and cached.
        """
        if self._directory is None or refresh:
            async def fetch() -> UpstreamResponse:
                response = await self._send("GET", self.directory_url, kind="directory")
                self._raise_for_status(response)
                return response

            response = await self._retrying_read(fetch)
            self._directory = Directory.from_json(response.json())
        return self._directory

    async def _retrying_read(self, read: Callable[[], Awaitable[T]]) -> T:
        """
        Run an idempotent read, retrying when the CA failed to answer
        (connection refused or reset, timeout, 5xx) with exponential,
        jittered backoff — never for a response that broke the protocol,
        and never for a problem document.
        """
        attempt = 0
        while True:
            try:
                return await read()
            except UpstreamProtocolError:
                raise
            except UpstreamUnavailable as error:
                if attempt >= self.read_retries:
                    raise
                delay = self.retry_base_delay * (2 ** attempt) * self._random.uniform(0.5, 1.5)
                if error.retry_after is not None:
                    delay = max(delay, min(error.retry_after, self.poll_policy.maximum))
                attempt += 1
                self.log.info("upstream read failed ({error}); retry {attempt} in {delay:.2f}s",
                              error=str(error), attempt=attempt, delay=delay)
                await self._sleep(delay)

    async def _nonce(self) -> str:
        if self._nonces:
            return self._nonces.pop()
        directory = await self.directory()
        response = await self._send("HEAD", directory.new_nonce, kind="newNonce")
        if response.status >= 400:
            self._raise_for_status(response)
        if not self._nonces:
            raise UpstreamProtocolError(
                "upstream newNonce answered without a Replay-Nonce", url=directory.new_nonce
            )
        return self._nonces.pop()

    # -- signed requests -----------------------------------------------------

    async def signed_post(
        self,
        url: str,
        payload: Any,
        key: AccountKey,
        kid: Optional[str] = None,
        kind: str = "post",
    ) -> UpstreamResponse:
        """
        POST a JWS over ``payload`` to ``url``, signed by ``key``.

        :param payload: a JSON object, ``{}``, or ``None`` for POST-as-GET.
        :param kid: the account URL; when ``None`` the JWS carries ``jwk``.
        :raises UpstreamProblem: on an error status (after ``badNonce``
            retries are exhausted, the last ``badNonce``).
        """
        attempts = 0
        recovered = False
        while True:
            body = sign_request(key, payload, await self._nonce(), url, kid)
            response = await self._send("POST", url, body, JOSE_CONTENT_TYPE, kind=kind)
            try:
                self._raise_for_status(response)
            except UpstreamProblem as problem:
                if problem.code == "badNonce" and attempts < self._max_nonce_retries:
                    attempts += 1
                    self.log.info(
                        "upstream rejected nonce for {url}; retry {attempt}",
                        url=url, attempt=attempts,
                    )
                    continue
                if (problem.code == "accountDoesNotExist" and kid is not None
                        and self._account_recovery is not None and not recovered):
                    recovered = True
                    kid = await self._account_recovery(self, key, kid)
                    continue
                raise
            return response

    async def post_as_get(self, account: UpstreamAccount, url: str, kind: str = "read") -> UpstreamResponse:
        """
        Read ``url`` as ``account`` (RFC 8555 §6.3), retried when the CA
        failed to answer.
        """
        return await self._retrying_read(
            lambda: self.signed_post(url, None, account.key, kid=account.url, kind=kind)
        )

    # -- accounts ------------------------------------------------------------

    async def find_account(self, key: AccountKey) -> Optional[UpstreamAccount]:
        """
        The existing account of ``key``, or ``None`` when the CA has never
        seen the key (``onlyReturnExisting``).
        """
        directory = await self.directory()
        try:
            response = await self.signed_post(
                directory.new_account, {"onlyReturnExisting": True}, key, kind="newAccount"
            )
        except UpstreamProblem as problem:
            if problem.code == "accountDoesNotExist":
                return None
            raise
        return self._account_from(key, response)

    async def new_account(
        self, key: AccountKey, contact: Sequence[str] = (), terms_of_service_agreed: bool = True,
        binding: Optional[ExternalAccountKey] = None,
    ) -> UpstreamAccount:
        """
        Create (or, for a key the CA knows, find) the account of ``key``.

        :param binding: bind the new account to this external account
            (``externalAccountBinding``: HS256 over the account's JWK, with
            the binding's ``kid`` and the ``newAccount`` URL).
        """
        directory = await self.directory()
        payload: Dict[str, Any] = {"termsOfServiceAgreed": bool(terms_of_service_agreed)}
        if contact:
            payload["contact"] = list(contact)
        if binding is not None:
            payload["externalAccountBinding"] = external_account_binding(
                binding.kid, binding.hmac_key, key.public_jwk_json, directory.new_account)
        response = await self.signed_post(directory.new_account, payload, key, kind="newAccount")
        return self._account_from(key, response)

    def _account_from(self, key: AccountKey, response: UpstreamResponse) -> UpstreamAccount:
        if not response.location:
            raise UpstreamProtocolError("newAccount answered without a Location", url=response.url)
        body = _json_object_or_empty(response)
        contact = body.get("contact")
        status = body.get("status")
        return UpstreamAccount(
            key=key,
            url=response.location,
            status=status if isinstance(status, str) else Status.VALID,
            contact=tuple(contact) if isinstance(contact, list) else (),
            body=body,
        )

    async def read_account(self, account: UpstreamAccount) -> UpstreamAccount:
        response = await self.post_as_get(account, account.url, kind="account")
        return self._updated_account(account, response)

    async def update_account(self, account: UpstreamAccount, contact: Sequence[str]) -> UpstreamAccount:
        response = await self.signed_post(
            account.url, {"contact": list(contact)}, account.key, kid=account.url, kind="account"
        )
        return self._updated_account(account, response)

    async def deactivate_account(self, account: UpstreamAccount) -> UpstreamAccount:
        response = await self.signed_post(
            account.url, {"status": Status.DEACTIVATED}, account.key, kid=account.url,
            kind="account"
        )
        return self._updated_account(account, response)

    def _updated_account(self, account: UpstreamAccount, response: UpstreamResponse) -> UpstreamAccount:
        body = _json_object_or_empty(response)
        contact = body.get("contact")
        status = body.get("status")
        return attrs.evolve(
            account,
            status=status if isinstance(status, str) else account.status,
            contact=tuple(contact) if isinstance(contact, list) else account.contact,
            body=body,
        )

    async def change_key(self, account: UpstreamAccount, new_key: AccountKey) -> UpstreamAccount:
        """
        Roll ``account`` over to ``new_key`` (RFC 8555 §7.3.5): the inner JWS
        is signed by the new key, carries its ``jwk`` and the same ``url`` as
        the outer one, and no nonce.
        """
        directory = await self.directory()
        if directory.key_change is None:
            raise UpstreamProtocolError("the upstream directory offers no keyChange")
        inner = sign_flattened(
            new_key,
            {"account": account.url, "oldKey": account.key.public_jwk_json},
            {"jwk": new_key.public_jwk_json, "url": directory.key_change},
        )
        await self.signed_post(
            directory.key_change, inner, account.key, kid=account.url, kind="keyChange"
        )
        return attrs.evolve(account, key=new_key)

    # -- orders, authorizations, challenges ----------------------------------

    async def new_order(self, account: UpstreamAccount, names: Iterable[str],
                        replaces: Optional[str] = None, profile: Optional[str] = None) -> Order:
        """
        Create an order for DNS ``names`` (a wildcard spelled ``*.example.com``).

        :param replaces: the ARI certID (RFC 9773 §5) of the certificate
            this order renews.
        :param profile: the profile to issue under (``meta.profiles``);
            `None` for the CA's default.
        """
        directory = await self.directory()
        payload: Dict[str, Any] = {
            "identifiers": [{"type": "dns", "value": name} for name in names]}
        if replaces is not None:
            payload["replaces"] = replaces
        if profile is not None:
            payload["profile"] = profile
        response = await self.signed_post(
            directory.new_order, payload, account.key, kid=account.url, kind="newOrder",
        )
        if not response.location:
            raise UpstreamProtocolError("newOrder answered without a Location", url=response.url)
        crash_point("after-new-order")
        return Order.from_json(response.location, response.json())

    async def renewal_info(self, cert_id: str) -> RenewalInfo:
        """
        The CA's suggested renewal window of the certificate ``cert_id``
        names (ARI, RFC 9773 §4: an unauthenticated GET of
        ``<renewalInfo>/<certID>``), with its ``Retry-After``.

        :raises UpstreamProtocolError: when the CA offers no renewalInfo.
        """
        directory = await self.directory()
        if directory.renewal_info is None:
            raise UpstreamProtocolError("the upstream directory offers no renewalInfo")
        url = directory.renewal_info.rstrip("/") + "/" + cert_id

        async def read() -> UpstreamResponse:
            response = await self._send("GET", url, kind="renewalInfo")
            self._raise_for_status(response)
            return response

        response = await self._retrying_read(read)
        retry_after = parse_retry_after(response.header("retry-after"), self._clock.seconds())
        return RenewalInfo.from_json(response.json(), retry_after)

    async def get_order(self, account: UpstreamAccount, url: str) -> Order:
        return (await self.read_order(account, url))[0]

    async def read_order(self, account: UpstreamAccount,
                         url: str) -> Tuple[Order, Optional[float]]:
        """
        The order at ``url``, with the CA's ``Retry-After`` in seconds (or
        `None`), for a caller that polls it.
        """
        response = await self.post_as_get(account, url, kind="order")
        return Order.from_json(url, response.json()), self._retry_after(response)

    async def get_authorization(self, account: UpstreamAccount, url: str) -> Authorization:
        return (await self.read_authorization(account, url))[0]

    async def read_authorization(self, account: UpstreamAccount,
                                 url: str) -> Tuple[Authorization, Optional[float]]:
        """
        The authorization at ``url``, with the CA's ``Retry-After`` in
        seconds (or `None`), for a caller that polls it.
        """
        response = await self.post_as_get(account, url, kind="authorization")
        return Authorization.from_json(url, response.json()), self._retry_after(response)

    def _retry_after(self, response: UpstreamResponse) -> Optional[float]:
        return parse_retry_after(response.header("retry-after"), self._clock.seconds())

    async def deactivate_authorization(self, account: UpstreamAccount, url: str) -> Authorization:
        response = await self.signed_post(
            url, {"status": Status.DEACTIVATED}, account.key, kid=account.url,
            kind="authorization"
        )
        return Authorization.from_json(url, response.json())

    async def answer_challenge(self, account: UpstreamAccount, url: str) -> Challenge:
        """
        Tell the CA the challenge at ``url`` is ready to be validated (``{}``).
        """
        response = await self.signed_post(url, {}, account.key, kid=account.url, kind="challenge")
        return Challenge.from_json(response.json())

    async def get_challenge(self, account: UpstreamAccount, url: str) -> Challenge:
        response = await self.post_as_get(account, url, kind="challenge")
        return Challenge.from_json(response.json())

    async def _sleep(self, seconds: float) -> None:
        await deferLater(self._clock, seconds, lambda: None)

    def _next_delay(self, delays: Iterator[float], retry_after: Optional[float]) -> float:
        fallback = next(delays)
        if retry_after is None:
            return fallback
        return min(max(retry_after, 0.0), self.poll_policy.maximum)

    async def poll_authorization(self, account: UpstreamAccount, url: str) -> Authorization:
        """
        Read the authorization at ``url`` until it leaves ``pending`` (or
        its challenge leaves ``processing``).

        :raises PollTimeout: when the policy's timeout passes first.
        """
        deadline = self._clock.seconds() + self.poll_policy.timeout
        delays = iter(self.poll_policy.delays())
        while True:
            authorization, retry_after = await self.read_authorization(account, url)
            if authorization.status in AUTHORIZATION_FINAL:
                return authorization
            delay = self._next_delay(delays, retry_after)
            if self._clock.seconds() + delay > deadline:
                raise PollTimeout(url, authorization.status)
            await self._sleep(delay)

    async def poll_order(
        self, account: UpstreamAccount, url: str,
        until: Sequence[str] = (Status.READY, Status.VALID, Status.INVALID)
    ) -> Order:
        """
        Read the order at ``url`` until its status is one of ``until`` (an
        order waiting only on valid authorizations counts as ``ready``).
        """
        deadline = self._clock.seconds() + self.poll_policy.timeout
        delays = iter(self.poll_policy.delays())
        while True:
            response = await self.post_as_get(account, url, kind="order")
            order = Order.from_json(url, response.json())
            if order.status in until or order.status in ORDER_FINAL:
                return order
            if Status.READY in until and order.status == Status.PENDING:
                authorizations = [
                    await self.get_authorization(account, a) for a in order.authorizations
                ]
                if order_is_ready(order, authorizations):
                    return order
                if any(a.status in AUTHORIZATION_DEAD for a in authorizations):
                    return order
            retry_after = parse_retry_after(response.header("retry-after"), self._clock.seconds())
            delay = self._next_delay(delays, retry_after)
            if self._clock.seconds() + delay > deadline:
                raise PollTimeout(url, order.status)
            await self._sleep(delay)

    async def finalize(self, account: UpstreamAccount, order: Order, csr_der: bytes) -> Order:
        """
        Finalize ``order`` with ``csr_der`` and wait until it is ``valid``
        (or ``invalid``).
        """
        finalized, _ = await self.submit_finalize(account, order, csr_der)
        if finalized.status in ORDER_FINAL:
            return finalized
        return await self.poll_order(account, order.url, until=(Status.VALID, Status.INVALID))

    async def submit_finalize(self, account: UpstreamAccount, order: Order,
                              csr_der: bytes) -> Tuple[Order, Optional[float]]:
        """
        Finalize ``order`` with ``csr_der``: the one POST, answered with the
        order as the CA left it (usually ``processing`` or ``valid``) and
        its ``Retry-After``, for a caller that follows the order itself.
        """
        response = await self.signed_post(
            order.finalize, {"csr": b64url(csr_der)}, account.key, kid=account.url, kind="finalize"
        )
        crash_point("after-finalize")
        return Order.from_json(order.url, response.json()), self._retry_after(response)

    async def download_certificate(self, account: UpstreamAccount, url: str) -> CertificateChain:
        """
        Download the PEM chain at ``url`` and split it into DER certificates;
        ``alternate`` chains are listed, not fetched.
        """
        response = await self.post_as_get(account, url, kind="certificate")
        certificates = split_pem_chain(response.body)
        return CertificateChain(
            url=url,
            certificates=certificates,
            alternates=tuple(response.links.get("alternate", ())),
        )

    async def revoke_certificate(
        self,
        certificate_der: bytes,
        reason: Optional[int] = None,
        account: Optional[UpstreamAccount] = None,
        certificate_key: Optional[AccountKey] = None,
    ) -> None:
        """
        Revoke a certificate, signed either by ``account`` (``kid``) or by the
        certificate's own key (``jwk``).
        """
        if (account is None) == (certificate_key is None):
            raise ValueError("revoke with exactly one of account or certificate_key")
        directory = await self.directory()
        if directory.revoke_cert is None:
            raise UpstreamProtocolError("the upstream directory offers no revokeCert")
        payload: Dict[str, Any] = {"certificate": b64url(certificate_der)}
        if reason is not None:
            payload["reason"] = reason
        if account is not None:
            await self.signed_post(
                directory.revoke_cert, payload, account.key, kid=account.url, kind="revokeCert"
            )
        elif certificate_key is not None:
            await self.signed_post(directory.revoke_cert, payload, certificate_key, kind="revokeCert")


def _json_object_or_empty(response: UpstreamResponse) -> Dict[str, Any]:
    """
    A response body as a JSON object, or ``{}``: some CAs answer account
    requests with an empty body (Boulder 2018 on newAccount, Pebble on
    keyChange), which is not an error.
    """
    if not response.body:
        return {}
    try:
        body = json.loads(response.body)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _cancelled(failure: BaseException) -> bool:
    """
    Whether an exchange failed because it was cancelled (alone, or as the
    reason of Twisted's ``ResponseNeverReceived`` and its kind).
    """
    if isinstance(failure, defer.CancelledError):
        return True
    reasons = getattr(failure, "reasons", None) or ()
    return bool(reasons) and all(
        isinstance(getattr(r, "value", r), defer.CancelledError) for r in reasons)


def _describe(failure: BaseException) -> str:
    reasons = getattr(failure, "reasons", None)
    if reasons:
        return "; ".join(str(getattr(r, "value", r)) for r in reasons)
    return str(failure) or type(failure).__name__


#: Idle connections kept open to the CA.  Every v1 request in flight may
#: hold one upstream request; with fewer kept than are in flight, the rest
#: are closed after use and the next burst pays a TLS handshake each (2 %
#: of the py-spy samples of the gateway at 32 concurrent clients with 16).
PERSISTENT_PER_HOST = 64


def https_client(reactor: Any, ca_bundle: Optional[str] = None) -> HTTPClient:
    """
    A treq ``HTTPClient`` on a ``twisted.web.client.Agent`` with one pool
    of persistent connections (up to `PERSISTENT_PER_HOST` kept idle),
    trusting ``ca_bundle`` (a PEM of roots) instead of the system's roots
    when given.

    The Agent asks its TLS policy for a connection creator on every
    request, a kept connection's too, and Twisted's policy builds a new
    one each time (certificate options, an OpenSSL context, the trust
    root loaded into it, the host name checked by IDNA): 5.8 % of the
    gateway's GIL-holding samples at 32 concurrent clients (py-spy
    ``--gil``, issue 15).  One creator per host name is kept instead
    (Twisted's ``HostnameCachingHTTPSPolicy``, 20 names); the trust and
    the name it checks are the same.
    """
    policy = web_client.BrowserLikePolicyForHTTPS(
        trustRoot=trust_root(ca_bundle) if ca_bundle else None
    )
    pool = web_client.HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = PERSISTENT_PER_HOST
    pool.retryAutomatically = False
    # Twisted's own endpoint factory, asked once per host (the Agent asks on
    # every request): `gateway.upstream.transport.CachingEndpointFactory`.
    endpoints = web_client._StandardEndpointFactory(
        reactor, web_client.HostnameCachingHTTPSPolicy(policy), None, None)
    return HTTPClient(web_client.Agent.usingEndpointFactory(
        reactor, CachingEndpointFactory(endpoints), pool=pool))


def trust_root(ca_bundle: str) -> Any:
    """
    A Twisted trust root from a PEM bundle holding one or more certificates.
    """
    from twisted.internet import ssl

    with open(ca_bundle, "rb") as f:
        data = f.read()
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    certificates = [
        ssl.Certificate.loadPEM(c.public_bytes(Encoding.PEM))
        for c in x509.load_pem_x509_certificates(data)
    ]
    return ssl.trustRootFromCertificates(certificates)
