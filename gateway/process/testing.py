"""
Public test doubles for the gateway, in the spirit of ``txacme.testing``.

* `FakeCA`: an in-memory ACME v2 (RFC 8555) CA as a ``twisted.web``
  resource, strict where real CAs are strict (nonces, JWS ``url``, ``kid``
  versus ``jwk``, ``Content-Type``) and scriptable where tests need faults
  (`FakeCA.fail_next`, `FakeCA.hang_next`).  It is a test double, not a CA:
  no rate limits, no CAA, no real validation — a pluggable ``validator``
  decides every challenge.
* `build_test_gateway`: a whole gateway, wired by the production wiring
  (`gateway.process.wiring.build_gateway`), on the SQL store on SQLite
  ``:memory:`` run inline and a `FakeCA` reached through
  ``treq.testing.StubTreq``, so a test drives complete v1 flows
  synchronously, without sockets, threads or a reactor.

Example::

    gateway = build_test_gateway([account_key])
    reply = gateway.client.get("http://gateway.test/directory")
    # StubTreq answers synchronously: successResultOf(reply) works.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import hmac
import json
import secrets
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union, cast

import attrs
import josepy
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web import resource, server

from gateway.status import Status
from gateway.keys.jose import (
    AccountKey, algorithm_for_public_key, b64url, b64url_decode, public_jwk, thumbprint,
)
from gateway.keys.keystore import KeyStore
from gateway.v1.nonces import NonceIssuer
from gateway.store import IStore
from gateway.store.sqlite import SQLiteStore
from gateway.operations.metrics import Metrics
from gateway.process.wiring import Gateway, ServeConfig, build_gateway
from gateway.translate.bindings import AccountBindings
from gateway.translate.budget import BudgetLimits
from gateway.translate.profiles import ProfilePolicy
from gateway.translate.context import Context, Policy
from gateway.translate.revalidation import Validators
from gateway.upstream.client import UpstreamClient
from gateway.v1.face import V1Face

__all__ = ["FakeCA", "InMemoryGateway", "build_test_gateway"]

V2_ERROR = "urn:ietf:params:acme:error:"
JOSE_CONTENT_TYPE = "application/jose+json"
#: The revocation reasons Let's Encrypt accepts.
REVOCATION_REASONS = (0, 1, 3, 4, 5)

Validator = Callable[["CAAuthorization", "CAChallenge", str], bool]


def always_valid(authorization: "CAAuthorization", challenge: "CAChallenge", key_authorization: str) -> bool:
    """
    The default validator: every answered challenge passes.
    """
    return True


class _Problem(Exception):
    """
    An RFC 7807 error the fake CA answers with.
    """

    def __init__(self, code: str, detail: str, status: int = 400, headers: Optional[dict] = None):
        super().__init__(detail)
        self.code, self.detail, self.status = code, detail, status
        self.headers = dict(headers or {})


@attrs.frozen
class _Reply:
    status: int
    body: Union[bytes, dict, list, None] = None
    headers: dict = attrs.field(factory=dict)
    content_type: Optional[str] = None


@attrs.frozen
class _Signed:
    """
    A verified POST: the signer's account (``kid``) or JWK (``jwk``), and the
    payload (``None`` for POST-as-GET).
    """

    account: Optional["CAAccount"]
    jwk: Dict[str, Any]
    thumbprint: str
    payload: Any

    @property
    def signer(self) -> "CAAccount":
        """
        The account that signed (``kid``): what every request but
        newAccount and revocation by certificate key is signed by.
        """
        if self.account is None:
            raise _Problem("accountDoesNotExist", "this request must be signed by an account (kid)")
        return self.account


# -- the CA's records ------------------------------------------------------------


@attrs.define(eq=False)
class CAAccount:
    id: int
    url: str
    jwk: dict
    thumbprint: str
    contact: list
    terms_agreed: bool
    status: str = Status.VALID

    def to_json(self) -> dict:
        return {"status": self.status, "contact": list(self.contact), "key": self.jwk,
                "termsOfServiceAgreed": self.terms_agreed, "orders": self.url + "/orders"}


@attrs.define(eq=False)
class CAChallenge:
    id: str
    url: str
    type: str
    token: str
    status: str = Status.PENDING
    validated: Optional[str] = None
    error: Optional[dict] = None
    answered_at: Optional[float] = None

    def to_json(self) -> Dict[str, Any]:
        body: Dict[str, Any] = {"type": self.type, "url": self.url, "token": self.token,
                                "status": self.status}
        if self.validated:
            body["validated"] = self.validated
        if self.error:
            body["error"] = self.error
        return body


@attrs.define(eq=False)
class CAAuthorization:
    """
    ``identifier`` is the name without ``*.``; ``wildcard`` says whether the
    order asked for ``*.identifier``.
    """

    id: str
    url: str
    account_id: int
    identifier: str
    wildcard: bool
    expires: float
    challenges: list
    status: str = Status.PENDING

    def to_json(self, format_time) -> dict:
        body = {
            "status": self.status,
            "expires": format_time(self.expires),
            "identifier": {"type": "dns", "value": self.identifier},
            "challenges": [c.to_json() for c in self.challenges],
        }
        if self.wildcard:
            body["wildcard"] = True
        return body


@attrs.define(eq=False)
class CACertificate:
    id: str
    url: str
    account_id: int
    certificate: x509.Certificate
    der: bytes
    revoked_reason: Optional[int] = None
    #: The order that replaced it (ARI ``replaces``), once one was finalized.
    replaced_by: Optional[str] = None


@attrs.define(eq=False)
class CAOrder:
    id: str
    url: str
    finalize: str
    account_id: int
    names: list
    authorizations: list
    expires: float
    status: str = Status.PENDING
    certificate: Optional[CACertificate] = None
    error: Optional[dict] = None
    #: The ARI certID the order replaces, and the profile it was given.
    replaces: Optional[str] = None
    profile: Optional[str] = None
    issued_at: Optional[float] = None  # while processing: when it becomes valid

    def to_json(self, format_time) -> dict:
        body = {
            "status": self.status,
            "expires": format_time(self.expires),
            "identifiers": [{"type": "dns", "value": n} for n in self.names],
            "authorizations": [a.url for a in self.authorizations],
            "finalize": self.finalize,
        }
        if self.certificate is not None and self.status == Status.VALID:
            body["certificate"] = self.certificate.url
        if self.error:
            body["error"] = self.error
        if self.replaces:
            body["replaces"] = self.replaces
        if self.profile:
            body["profile"] = self.profile
        return body


# -- the CA ------------------------------------------------------------------------


def _clock_at_now() -> Clock:
    clock = Clock()
    clock.advance(time.time())
    return clock


def _key_thumbprint(public_key: object) -> Optional[str]:
    """
    The RFC 7638 thumbprint of an RSA or EC public key; `None` for any
    other kind (no ACME account can have it).
    """
    if isinstance(public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        return thumbprint(public_jwk(public_key))
    return None


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


class FakeCA(resource.Resource):
    """
    An in-memory ACME v2 CA.

    :param base_url: the scheme and host every URL it hands out starts with;
        a JWS ``url`` must equal ``base_url`` + the request path exactly.
    :param clock: ``seconds()`` for expiries and certificate validity; by
        default a ``twisted.internet.task.Clock`` set to the current time.
    :param validator: ``validator(authorization, challenge, key_authorization)
        -> bool`` decides each answered challenge (default: always valid).
    :param validate_immediately: decide a challenge when it is answered
        (``True``) or leave it ``processing`` until the next read of the
        challenge, its authorization or its order (``False``).
    :param reuse_authorizations: give a new order the account's still-valid
        authorization for a name, as Let's Encrypt does.
    :param terms_of_service: ``meta.termsOfService``; when set, newAccount
        requires ``termsOfServiceAgreed``.
    :param renewal_info: offer ARI (RFC 9773): ``renewalInfo`` in the
        directory, suggested windows at two thirds of a certificate's
        lifetime (at once once it is revoked), and ``replaces`` in
        newOrder, refused as ``alreadyReplaced`` for a certificate an
        earlier order replaced.
    :param profiles: ``meta.profiles`` (name → description); newOrder may
        name one (another is ``invalidProfile``).
    :param eab_keys: External Account Binding keys (kid → HMAC key); with
        ``eab_required`` newAccount needs a binding under one of them.
    :param decide_after: with ``validate_immediately=False``, a challenge
        stays ``processing`` for this many seconds of the CA's clock, and is
        decided at the first read after that (`None`: at the next read).
    :param issue_after: seconds a finalized order stays ``processing``
        before it is ``valid`` (`None`: finalize issues at once).
    :param retry_after: the ``Retry-After`` header the CA sends with a
        pending authorization, a processing order and their challenges
        (`None`: none).

    Inspect ``counts`` (requests by kind: ``directory``, ``newNonce``,
    ``newAccount``, ``newOrder``, ``order``, ``finalize``, ``authorization``,
    ``challenge``, ``certificate``, ``account``, ``revokeCert``,
    ``keyChange``, ``unknown``), ``orders`` (every `CAOrder` created, in
    order), ``accounts``, ``authorizations`` and ``certificates``.
    """

    isLeaf = True

    def __init__(
        self,
        base_url: str = "https://ca.test",
        clock: Any = None,
        validator: Validator = always_valid,
        validate_immediately: bool = True,
        reuse_authorizations: bool = True,
        terms_of_service: Optional[str] = "https://ca.test/terms/v1",
        renewal_info: bool = False,
        profiles: Optional[Dict[str, str]] = None,
        eab_keys: Optional[Dict[str, bytes]] = None,
        eab_required: bool = False,
        decide_after: Optional[float] = None,
        issue_after: Optional[float] = None,
        retry_after: Optional[str] = None,
    ):
        super().__init__()
        self.renewal_info = renewal_info
        self.profiles = dict(profiles or {})
        self.eab_keys = dict(eab_keys or {})
        self.eab_required = eab_required
        #: The EAB key id each account was bound with, by account id.
        self.bindings: Dict[int, str] = {}
        self.decide_after = decide_after
        self.issue_after = issue_after
        self.retry_after = retry_after
        self.held: list = []  # (request, path) that hold_next() keeps until release_held()
        self.base_url = base_url.rstrip("/")
        self.clock = clock if clock is not None else _clock_at_now()
        self.validator = validator
        self.validate_immediately = validate_immediately
        self.reuse_authorizations = reuse_authorizations
        self.terms_of_service = terms_of_service
        self.counts: collections.Counter = collections.Counter()
        self.accounts: Dict[int, CAAccount] = {}
        self.orders: List[CAOrder] = []
        self.authorizations: Dict[str, CAAuthorization] = {}
        self.certificates: List[CACertificate] = []
        self.hanging: list = []  # requests hang_next() left unanswered
        self._challenges: Dict[str, tuple] = {}  # id -> (authorization, challenge)
        self._nonces: set = set()
        self._scripts: list = []  # (substring, reply or None for a hang)
        self._next_id = 0
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._sign(_name("FakeCA root"), self.root_key.public_key(), _name("FakeCA root"),
                               self.root_key, ca=True)
        self.intermediate = self._sign(_name("FakeCA intermediate"), self.intermediate_key.public_key(),
                                       self.root.subject, self.root_key, ca=True)
        #: The issuers a certificate download lists after the leaf, leaf
        #: side first; append ``root`` for a chain of two issuers.
        self.chain_issuers: List[x509.Certificate] = [self.intermediate]

    # -- public knobs ----------------------------------------------------------

    @property
    def directory_url(self) -> str:
        return self.base_url + "/directory"

    def url(self, path: str) -> str:
        return self.base_url + path

    def fail_next(
        self,
        path_substring: str,
        status: int,
        problem: Union[dict, bytes, None] = None,
        headers: Optional[dict] = None,
    ) -> None:
        """
        Answer the next request whose path contains ``path_substring`` with
        ``status`` and ``problem`` instead of serving it (a ``Replay-Nonce``
        is still sent).  Scripts queue up and are used once each.

        :param problem: a problem document (a short ``type`` such as
            ``"rateLimited"`` gets the ACME prefix; ``status`` is filled in),
            raw bytes sent as they are (``text/html`` unless ``headers`` says
            otherwise), or ``None`` for an empty body.
        :param headers: extra response headers, e.g. ``{"Retry-After": "30"}``.
        """
        headers = dict(headers or {})
        content_type = None
        if isinstance(problem, dict):
            problem = dict(problem)
            kind = problem.get("type", "serverInternal")
            if ":" not in kind:
                problem["type"] = V2_ERROR + kind
            problem.setdefault("status", status)
            problem.setdefault("detail", "scripted failure")
            content_type = "application/problem+json"
        elif isinstance(problem, bytes):
            content_type = "text/html"
        for name in list(headers):
            if name.lower() == "content-type":
                content_type = headers.pop(name)
        self._scripts.append((path_substring, _Reply(status, problem, headers, content_type)))

    def hang_next(self, path_substring: str) -> None:
        """
        Never answer the next request whose path contains ``path_substring``
        (to exercise the client's timeout); it is kept in ``hanging``.
        """
        self._scripts.append((path_substring, None))

    def hold_next(self, path_substring: str) -> None:
        """
        Keep the next request whose path contains ``path_substring``
        unanswered until `release_held` (an upstream read in flight, for as
        long as a test needs one).
        """
        self._scripts.append((path_substring, "hold"))

    def release_held(self) -> int:
        """
        Serve the requests `hold_next` kept, in arrival order, as the CA
        stands now.

        :return: how many were served.
        """
        held, self.held = self.held, []
        for request, path in held:
            try:
                reply = self._dispatch(request, path)
            except _Problem as problem:
                body = {"type": V2_ERROR + problem.code, "detail": problem.detail,
                        "status": problem.status}
                reply = _Reply(problem.status, body, problem.headers, "application/problem+json")
            request.write(self._write(request, reply))
            request.finish()
        return len(held)

    # -- helpers ----------------------------------------------------------------

    def _new_id(self) -> str:
        self._next_id += 1
        return f"{self._next_id}{secrets.token_hex(4)}"

    def _now(self) -> float:
        return self.clock.seconds()

    def format_time(self, seconds: float) -> str:
        moment = datetime.datetime.fromtimestamp(int(seconds), tz=datetime.timezone.utc)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _sign(self, subject, public_key, issuer, issuer_key, ca=False, names=()) -> x509.Certificate:
        now = datetime.datetime.fromtimestamp(self._now(), tz=datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=90 if not ca else 3650))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_key.public_key()), critical=False)
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    def _kind(self, path: str) -> str:
        first = path.strip("/").split("/")[0]
        return {
            "directory": "directory", "new-nonce": "newNonce", "new-account": "newAccount",
            "new-order": "newOrder", "order": "order", "finalize": "finalize",
            "authz": "authorization", "chall": "challenge", "cert": "certificate",
            "acct": "account", "revoke-cert": "revokeCert", "key-change": "keyChange",
            "renewal-info": "renewalInfo",
        }.get(first, "unknown")

    # -- twisted.web --------------------------------------------------------------

    def render(self, request):
        path = request.path.decode("latin-1")
        self.counts[self._kind(path)] += 1
        nonce = b64url(secrets.token_bytes(12))
        self._nonces.add(nonce)
        request.setHeader(b"Replay-Nonce", nonce.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        for index, (substring, scripted) in enumerate(self._scripts):
            if substring in path:
                del self._scripts[index]
                if scripted is None:
                    self.hanging.append(request)
                    return server.NOT_DONE_YET
                if scripted == "hold":
                    self.held.append((request, path))
                    return server.NOT_DONE_YET
                return self._write(request, scripted)
        try:
            reply = self._dispatch(request, path)
        except _Problem as problem:
            body = {"type": V2_ERROR + problem.code, "detail": problem.detail, "status": problem.status}
            reply = _Reply(problem.status, body, problem.headers, "application/problem+json")
        return self._write(request, reply)

    def _write(self, request, reply: _Reply) -> bytes:
        request.setResponseCode(reply.status)
        content_type = reply.content_type
        body = reply.body
        if isinstance(body, (dict, list)):
            content_type = content_type or "application/json"
            body = json.dumps(body).encode("utf-8")
        if content_type:
            request.setHeader(b"Content-Type", content_type.encode("ascii"))
        for name, value in reply.headers.items():
            for item in value if isinstance(value, list) else [value]:
                request.responseHeaders.addRawHeader(name.encode("ascii"), str(item).encode("latin-1"))
        return body or b""

    def _dispatch(self, request, path: str) -> _Reply:
        method = request.method.decode("ascii", "replace")
        parts = path.strip("/").split("/")
        kind = self._kind(path)
        if kind == "unknown" or (len(parts) != 2 and kind in (
                "order", "finalize", "authorization", "challenge", "certificate", "account")):
            raise _Problem("malformed", f"no such resource {path}", 404)
        if kind == "directory":
            self._allow(method, ("GET",))
            return _Reply(200, self._directory())
        if kind == "newNonce":
            self._allow(method, ("HEAD", "GET"))
            return _Reply(200 if method == "HEAD" else 204)
        if kind == "renewalInfo" and self.renewal_info and len(parts) == 2:
            self._allow(method, ("GET",))
            return self._renewal_window(parts[1])
        self._allow(method, ("POST",))
        signed = self._verify(request, kind)
        handler = getattr(self, "_post_" + kind)
        return handler(signed, *parts[1:])

    @staticmethod
    def _allow(method: str, allowed: tuple) -> None:
        if method not in allowed:
            raise _Problem("malformed", f"method {method} not allowed", 405,
                           {"Allow": ", ".join(allowed)})

    def _directory(self) -> Dict[str, Any]:
        meta: Dict[str, Any] = {}
        directory: Dict[str, Any] = {
            "newNonce": self.url("/new-nonce"),
            "newAccount": self.url("/new-account"),
            "newOrder": self.url("/new-order"),
            "revokeCert": self.url("/revoke-cert"),
            "keyChange": self.url("/key-change"),
            "meta": meta,
        }
        if self.terms_of_service:
            meta["termsOfService"] = self.terms_of_service
        if self.renewal_info:
            directory["renewalInfo"] = self.url("/renewal-info")
        if self.profiles:
            meta["profiles"] = dict(self.profiles)
        if self.eab_required:
            meta["externalAccountRequired"] = True
        return directory

    # -- JWS -----------------------------------------------------------------------

    @staticmethod
    def _check_signature(jws: dict, protected: dict, jwk: Any) -> str:
        """
        Verify ``jws`` with ``jwk``; return the key's thumbprint.
        """
        try:
            parsed = cast(josepy.JWK, josepy.JWK.from_json(jwk))
            public_key = parsed.key.public_numbers().public_key()
            algorithm = algorithm_for_public_key(public_key)
        except Exception:
            raise _Problem("badPublicKey", "unusable JWK")
        if protected.get("alg") != algorithm.name:
            raise _Problem("badSignatureAlgorithm", f"alg {protected.get('alg')!r} does not fit the key")
        try:
            signing_input = f"{jws['protected']}.{jws['payload']}".encode("ascii")
            valid = algorithm.verify(public_key, signing_input, b64url_decode(jws["signature"]))
        except Exception:
            valid = False
        if not valid:
            raise _Problem("malformed", "JWS verification error")
        return thumbprint(parsed)

    @staticmethod
    def _decode(jws: Any) -> tuple:
        if not isinstance(jws, dict) or not all(isinstance(jws.get(m), str)
                                                for m in ("protected", "payload", "signature")):
            raise _Problem("malformed", "not a flattened JWS")
        if "header" in jws:
            raise _Problem("malformed", "unprotected JWS headers are not allowed")
        try:
            protected = json.loads(b64url_decode(jws["protected"]))
            raw = b64url_decode(jws["payload"])
            payload = json.loads(raw) if raw else None
        except ValueError:
            raise _Problem("malformed", "JWS protected header or payload is not JSON")
        if not isinstance(protected, dict):
            raise _Problem("malformed", "JWS protected header is not an object")
        return protected, payload

    def _verify(self, request, kind: str) -> _Signed:
        content_type = request.getHeader(b"content-type")
        if content_type != JOSE_CONTENT_TYPE.encode("ascii"):
            raise _Problem("malformed", f"Content-Type must be {JOSE_CONTENT_TYPE}, not {content_type!r}", 415)
        try:
            jws = json.loads(request.content.read())
        except ValueError:
            raise _Problem("malformed", "body is not JSON")
        protected, payload = self._decode(jws)
        expected_url = self.base_url + request.uri.decode("latin-1")
        if protected.get("url") != expected_url:
            raise _Problem("unauthorized", f"JWS url {protected.get('url')!r} is not {expected_url!r}", 401)
        if ("jwk" in protected) == ("kid" in protected):
            raise _Problem("malformed", "exactly one of jwk and kid is required")
        if kind == "newAccount" and "jwk" not in protected:
            raise _Problem("malformed", "newAccount must be signed with jwk")
        if kind not in ("newAccount", "revokeCert") and "jwk" in protected:
            raise _Problem("malformed", "this resource must be signed with kid")
        account = None
        if "kid" in protected:
            account = next((a for a in self.accounts.values() if a.url == protected["kid"]), None)
            if account is None:
                raise _Problem("accountDoesNotExist", f"no account {protected['kid']!r}")
            jwk = account.jwk
        else:
            jwk = protected["jwk"]
        key_thumbprint = self._check_signature(jws, protected, jwk)
        nonce = protected.get("nonce")
        if nonce not in self._nonces:
            raise _Problem("badNonce", f"JWS has an invalid anti-replay nonce: {nonce!r}")
        self._nonces.discard(nonce)
        if account is not None and account.status != Status.VALID:
            raise _Problem("unauthorized", f"account is {account.status}", 401)
        return _Signed(account, jwk, key_thumbprint, payload)

    # -- accounts ---------------------------------------------------------------

    @staticmethod
    def _contact(payload: dict) -> list:
        contact = payload.get("contact", [])
        if not isinstance(contact, list) or not all(isinstance(c, str) for c in contact):
            raise _Problem("malformed", "contact must be a list of strings")
        for entry in contact:
            if not entry.startswith("mailto:") or "@" not in entry:
                raise _Problem("invalidContact", f"contact {entry!r} is not a mailto: address")
        return contact

    def _account_reply(self, account: CAAccount, status: int = 200) -> _Reply:
        return _Reply(status, account.to_json(), {"Location": account.url})

    def _post_newAccount(self, signed: _Signed) -> _Reply:
        payload = signed.payload if isinstance(signed.payload, dict) else {}
        existing = next((a for a in self.accounts.values() if a.thumbprint == signed.thumbprint), None)
        if existing is not None:
            if existing.status != Status.VALID:
                raise _Problem("unauthorized", f"account is {existing.status}", 401)
            return self._account_reply(existing)
        if payload.get("onlyReturnExisting"):
            raise _Problem("accountDoesNotExist", "No account exists with the provided key")
        if self.terms_of_service and payload.get("termsOfServiceAgreed") is not True:
            raise _Problem("userActionRequired", "must agree to terms of service", 403,
                           {"Link": f'<{self.terms_of_service}>;rel="terms-of-service"'})
        binding = self._external_account(payload.get("externalAccountBinding"), signed)
        contact = self._contact(payload)
        account_id = len(self.accounts) + 1
        if binding is not None:
            self.bindings[account_id] = binding
        account = CAAccount(account_id, self.url(f"/acct/{account_id}"), signed.jwk,
                            signed.thumbprint, contact, bool(payload.get("termsOfServiceAgreed")))
        self.accounts[account_id] = account
        return self._account_reply(account, 201)

    def _external_account(self, binding: Any, signed: _Signed) -> Optional[str]:
        """
        Check an ``externalAccountBinding`` (RFC 8555 §7.3.4) as Pebble
        does: HS256 under a known key id, the newAccount ``url``, no nonce,
        the outer JWS's key as payload.  :return: its key id, or `None`.
        """
        if binding is None:
            if self.eab_required:
                raise _Problem("externalAccountRequired",
                               "newAccount requests must include externalAccountBinding")
            return None
        try:
            protected, payload = self._decode(binding)
        except _Problem:
            raise _Problem("malformed", "externalAccountBinding is not a flattened JWS")
        if protected.get("alg") != "HS256" or "nonce" in protected:
            raise _Problem("malformed", "externalAccountBinding must be HS256, without a nonce")
        if protected.get("url") != self.url("/new-account"):
            raise _Problem("malformed", "externalAccountBinding url differs from the outer JWS")
        key = self.eab_keys.get(protected.get("kid"))
        if key is None:
            raise _Problem("unauthorized", "externalAccountBinding kid is not known", 403)
        signing_input = f"{binding['protected']}.{binding['payload']}".encode("ascii")
        expected = hmac.new(key, signing_input, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, b64url_decode(binding.get("signature", ""))):
            raise _Problem("unauthorized", "externalAccountBinding MAC does not verify", 403)
        if payload != signed.jwk:
            raise _Problem("badPublicKey", "externalAccountBinding key is not the account key")
        return str(protected["kid"])

    def _post_account(self, signed: _Signed, account_id: str) -> _Reply:
        if signed.signer.url != self.url(f"/acct/{account_id}"):
            raise _Problem("unauthorized", "the signer is not this account", 403)
        account = signed.signer
        payload = signed.payload
        if payload is not None:
            if not isinstance(payload, dict):
                raise _Problem("malformed", "account update must be an object")
            if "contact" in payload:
                account.contact = self._contact(payload)
            if "status" in payload:
                if payload["status"] != Status.DEACTIVATED:
                    raise _Problem("malformed", "only status deactivated may be set")
                account.status = Status.DEACTIVATED
        return self._account_reply(account)

    def _post_keyChange(self, signed: _Signed) -> _Reply:
        account = signed.signer
        inner = signed.payload
        protected, inner_payload = self._decode(inner)
        if "jwk" not in protected or "kid" in protected or "nonce" in protected:
            raise _Problem("malformed", "inner JWS must carry jwk, and neither kid nor nonce")
        if protected.get("url") != self.url("/key-change"):
            raise _Problem("malformed", "inner JWS url must equal the outer url")
        new_thumbprint = self._check_signature(inner, protected, protected["jwk"])
        if not isinstance(inner_payload, dict) or inner_payload.get("account") != account.url:
            raise _Problem("malformed", "inner payload account does not match the signer")
        try:
            old = thumbprint(cast(josepy.JWK, josepy.JWK.from_json(inner_payload["oldKey"])))
        except Exception:
            raise _Problem("malformed", "inner payload oldKey is not a JWK")
        if old != account.thumbprint:
            raise _Problem("malformed", "inner payload oldKey is not the account key")
        if new_thumbprint == account.thumbprint:
            raise _Problem("malformed", "new key is the old key")
        holder = next((a for a in self.accounts.values() if a.thumbprint == new_thumbprint), None)
        if holder is not None:
            raise _Problem("malformed", "new key is in use by another account", 409, {"Location": holder.url})
        account.jwk, account.thumbprint = protected["jwk"], new_thumbprint
        return self._account_reply(account)

    # -- orders, authorizations, challenges -------------------------------------------

    def _owned(self, signed: _Signed, record: Any, what: str) -> Any:
        if record is None:
            raise _Problem("malformed", f"no such {what}", 404)
        if record.account_id != signed.signer.id:
            raise _Problem("unauthorized", f"the {what} belongs to another account", 403)
        return record

    def _new_authorization(self, account: CAAccount, name: str) -> CAAuthorization:
        wildcard = name.startswith("*.")
        value = name[2:] if wildcard else name
        if self.reuse_authorizations:
            for existing in self.authorizations.values():
                self._refresh_authorization(existing)
                if (existing.account_id == account.id and existing.identifier == value
                        and existing.wildcard == wildcard and existing.status == Status.VALID):
                    return existing
        authz_id = self._new_id()
        types = ("dns-01",) if wildcard else ("http-01", "dns-01")
        challenges: List[CAChallenge] = []
        authorization = CAAuthorization(authz_id, self.url(f"/authz/{authz_id}"), account.id, value,
                                        wildcard, self._now() + 7 * 86400, challenges)
        for challenge_type in types:
            challenge_id = self._new_id()
            challenge = CAChallenge(challenge_id, self.url(f"/chall/{challenge_id}"), challenge_type,
                                    b64url(secrets.token_bytes(32)))
            challenges.append(challenge)
            self._challenges[challenge_id] = (authorization, challenge)
        self.authorizations[authz_id] = authorization
        return authorization

    def _post_newOrder(self, signed: _Signed) -> _Reply:
        payload = signed.payload
        identifiers = payload.get("identifiers") if isinstance(payload, dict) else None
        if not isinstance(identifiers, list) or not identifiers:
            raise _Problem("malformed", "an order needs identifiers")
        names = []
        for identifier in identifiers:
            if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
                raise _Problem("malformed", "malformed identifier")
            if identifier.get("type") != "dns":
                raise _Problem("unsupportedIdentifier", f"identifier type {identifier.get('type')!r}")
            name = identifier["value"].lower()
            if name not in names:
                names.append(name)
        profile = payload.get("profile")
        if profile is not None and profile not in self.profiles:
            raise _Problem("invalidProfile", f"Order includes unrecognized profile name {profile!r}")
        replaces = payload.get("replaces")
        if replaces is not None:
            self._check_replaces(replaces, signed.signer, names)
        order_id = self._new_id()
        order = CAOrder(
            order_id, self.url(f"/order/{order_id}"), self.url(f"/finalize/{order_id}"),
            signed.signer.id, names,
            [self._new_authorization(signed.signer, n) for n in names],
            self._now() + 7 * 86400, replaces=replaces, profile=profile,
        )
        self.orders.append(order)
        self._refresh_order(order)
        return _Reply(201, order.to_json(self.format_time), {"Location": order.url})

    def _certificate_of(self, cert_id: Any) -> CACertificate:
        """
        The certificate an ARI certID names (its AKI and serial).
        """
        try:
            key_id, serial = (b64url_decode(part) for part in str(cert_id).split("."))
        except ValueError:
            raise _Problem("malformed", f"malformed certID {cert_id!r}")
        for certificate in self.certificates:
            leaf = certificate.certificate
            aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
            if (aki.key_identifier == key_id
                    and leaf.serial_number == int.from_bytes(serial, "big")):
                return certificate
        raise _Problem("malformed", f"no certificate has certID {cert_id!r}", 404)

    def _check_replaces(self, cert_id: Any, account: CAAccount, names: list) -> None:
        certificate = self._certificate_of(cert_id)
        if certificate.replaced_by is not None:
            raise _Problem("alreadyReplaced", f"certificate {cert_id} already has a replacement order",
                           409)
        if certificate.account_id != account.id:
            raise _Problem("unauthorized", "the certificate to replace is another account's", 403)
        leaf_names = set(certificate.certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
        if not leaf_names & set(names):
            raise _Problem("malformed", "the order shares no identifier with the certificate")

    def _renewal_window(self, cert_id: str) -> _Reply:
        certificate = self._certificate_of(cert_id)
        leaf = certificate.certificate
        if certificate.revoked_reason is not None:
            start, end = self._now() - 3600, self._now() - 3599
        else:
            begin = leaf.not_valid_before_utc.timestamp()
            lifetime = leaf.not_valid_after_utc.timestamp() - begin
            ideal = begin + lifetime * 2 / 3
            start, end = ideal - 86400, ideal + 86400
        window = {"start": self.format_time(start), "end": self.format_time(end)}
        return _Reply(200, {"suggestedWindow": window}, {"Retry-After": "21600"})

    def _decide(self, authorization: CAAuthorization, challenge: CAChallenge) -> None:
        account = self.accounts[authorization.account_id]
        key_authorization = f"{challenge.token}.{account.thumbprint}"
        if self.validator(authorization, challenge, key_authorization):
            challenge.status = Status.VALID
            challenge.validated = self.format_time(self._now())
            authorization.status = Status.VALID
        else:
            challenge.status = Status.INVALID
            challenge.error = {"type": V2_ERROR + "incorrectResponse", "status": 403,
                               "detail": f"the {challenge.type} response for {authorization.identifier} "
                                         f"is not the expected key authorization"}
            authorization.status = Status.INVALID

    def _refresh_authorization(self, authorization: CAAuthorization) -> None:
        for challenge in authorization.challenges:
            if challenge.status == Status.PROCESSING and (
                    self.decide_after is None or challenge.answered_at is None
                    or self._now() >= challenge.answered_at + self.decide_after):
                self._decide(authorization, challenge)
        if authorization.status in (Status.PENDING, Status.VALID) and self._now() >= authorization.expires:
            authorization.status = Status.EXPIRED

    def _refresh_order(self, order: CAOrder) -> None:
        if (order.status == Status.PROCESSING and order.issued_at is not None
                and self._now() >= order.issued_at):
            order.status = Status.VALID
        for authorization in order.authorizations:
            self._refresh_authorization(authorization)
        if order.status in (Status.PENDING, Status.READY) and self._now() >= order.expires:
            order.status = Status.INVALID
        if order.status == Status.PENDING:
            statuses = {a.status for a in order.authorizations}
            if statuses == {Status.VALID}:
                order.status = Status.READY
            elif statuses - {Status.VALID, Status.PENDING}:
                order.status = Status.INVALID
                order.error = {"type": V2_ERROR + "unauthorized", "status": 403,
                               "detail": "an authorization of the order is not valid"}

    def _post_order(self, signed: _Signed, order_id: str) -> _Reply:
        order = self._owned(signed, next((o for o in self.orders if o.id == order_id), None), "order")
        if signed.payload is not None:
            raise _Problem("malformed", "orders are read with POST-as-GET")
        self._refresh_order(order)
        return _Reply(200, order.to_json(self.format_time), self._retry_after_for(order.status))

    def _retry_after_for(self, status: str) -> dict:
        if self.retry_after is None or status not in (Status.PENDING, Status.PROCESSING):
            return {}
        return {"Retry-After": self.retry_after}

    def _post_authorization(self, signed: _Signed, authz_id: str) -> _Reply:
        authorization = self._owned(signed, self.authorizations.get(authz_id), "authorization")
        self._refresh_authorization(authorization)
        if signed.payload is not None:
            if signed.payload != {"status": Status.DEACTIVATED}:
                raise _Problem("malformed", "only {\"status\": \"deactivated\"} may be posted")
            if authorization.status not in (Status.PENDING, Status.VALID):
                raise _Problem("malformed", f"authorization is {authorization.status}")
            authorization.status = Status.DEACTIVATED
        return _Reply(200, authorization.to_json(self.format_time),
                      self._retry_after_for(authorization.status))

    def _post_challenge(self, signed: _Signed, challenge_id: str) -> _Reply:
        authorization, challenge = self._challenges.get(challenge_id, (None, None))
        self._owned(signed, authorization, "challenge")
        if signed.payload is not None:
            if signed.payload != {}:
                raise _Problem("malformed", "a challenge is answered with {}")
            if challenge.status == Status.PENDING and authorization.status == Status.PENDING:
                challenge.status = Status.PROCESSING
                challenge.answered_at = self._now()
                if self.validate_immediately:
                    self._decide(authorization, challenge)
        else:
            self._refresh_authorization(authorization)
        return _Reply(200, challenge.to_json(), {"Link": f'<{authorization.url}>;rel="up"'})

    # -- certificates ----------------------------------------------------------------

    def _post_finalize(self, signed: _Signed, order_id: str) -> _Reply:
        order = self._owned(signed, next((o for o in self.orders if o.id == order_id), None), "order")
        self._refresh_order(order)
        if order.status != Status.READY:
            raise _Problem("orderNotReady", f"order is {order.status}, not ready", 403)
        csr_text = signed.payload.get("csr") if isinstance(signed.payload, dict) else None
        try:
            csr = x509.load_der_x509_csr(b64url_decode(cast(str, csr_text)))
        except Exception:
            raise _Problem("badCSR", "the CSR does not parse")
        if not csr.is_signature_valid:
            raise _Problem("badCSR", "the CSR signature is invalid")
        names = {a.value.lower() for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names |= {n.lower() for n in san.get_values_for_type(x509.DNSName)}
        except x509.ExtensionNotFound:
            pass
        if names != set(order.names):
            raise _Problem("unauthorized", f"CSR names {sorted(names)} are not the order's {sorted(order.names)}", 403)
        if _key_thumbprint(csr.public_key()) == signed.signer.thumbprint:
            raise _Problem("badCSR", "the CSR key must not be the account key")
        subject = _name(order.names[0]) if len(order.names[0]) <= 64 else x509.Name([])
        leaf = self._sign(subject, csr.public_key(), self.intermediate.subject,
                          self.intermediate_key, names=order.names)
        certificate_id = self._new_id()
        order.certificate = CACertificate(certificate_id, self.url(f"/cert/{certificate_id}"),
                                          signed.signer.id, leaf,
                                          leaf.public_bytes(serialization.Encoding.DER))
        self.certificates.append(order.certificate)
        if self.issue_after is None:
            order.status = Status.VALID
        else:
            order.status = Status.PROCESSING
            order.issued_at = self._now() + self.issue_after
        if order.replaces:
            self._certificate_of(order.replaces).replaced_by = order.id
        return _Reply(200, order.to_json(self.format_time),
                      {"Location": order.url, **self._retry_after_for(order.status)})

    def _post_certificate(self, signed: _Signed, certificate_id: str) -> _Reply:
        found = next((c for c in self.certificates if c.id == certificate_id), None)
        certificate = self._owned(signed, found, "certificate")
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM)
                         for c in (certificate.certificate, *self.chain_issuers))
        return _Reply(200, chain, content_type="application/pem-certificate-chain")

    def _post_revokeCert(self, signed: _Signed) -> _Reply:
        payload = signed.payload if isinstance(signed.payload, dict) else {}
        try:
            der = b64url_decode(cast(str, payload.get("certificate")))
        except Exception:
            raise _Problem("malformed", "certificate must be base64url DER")
        certificate = next((c for c in self.certificates if c.der == der), None)
        if certificate is None:
            raise _Problem("malformed", "Certificate not found", 404)
        reason = payload.get("reason", 0)
        if isinstance(reason, bool) or reason not in REVOCATION_REASONS:
            raise _Problem("badRevocationReason", f"unsupported revocation reason {reason!r}")
        if signed.account is not None:
            allowed = signed.account.id == certificate.account_id
        else:
            allowed = _key_thumbprint(certificate.certificate.public_key()) == signed.thumbprint
        if not allowed:
            raise _Problem("unauthorized", "the signer may not revoke this certificate", 403)
        if certificate.revoked_reason is not None:
            raise _Problem("alreadyRevoked", "Certificate already revoked")
        certificate.revoked_reason = reason
        return _Reply(200)


# -- a whole gateway in memory ---------------------------------------------------------


@attrs.define
class InMemoryGateway:
    """
    A gateway built by the production wiring (`gateway.process.wiring.
    build_gateway`) on the SQL store (SQLite ``:memory:`` with an inline
    runner, unless given another) and an `UpstreamClient` talking to a
    `FakeCA` through ``StubTreq``.

    :ivar client: a treq-like ``StubTreq`` of the face; its requests resolve
        synchronously, except when the upstream hangs (then `advance`).
    :ivar gateway: the whole object graph (metrics, recorder, admin pages…).
    """

    gateway: Gateway
    client: StubTreq
    ca: FakeCA
    base_url: str
    #: The ``StubTreq`` of each CA the gateway reaches, as it made them.
    upstream_http: List[StubTreq] = attrs.field(factory=list)

    @property
    def face(self) -> V1Face:
        return self.gateway.face

    @property
    def store(self) -> IStore:
        return self.gateway.store

    @property
    def context(self) -> Context:
        return self.gateway.context

    @property
    def clock(self) -> Any:
        return self.gateway.clock

    @property
    def nonces(self) -> NonceIssuer:
        return self.gateway.nonces

    @property
    def upstream(self) -> UpstreamClient:
        return self.gateway.upstream

    @property
    def keys(self) -> KeyStore:
        return self.gateway.keys

    def url(self, path: str) -> str:
        return self.base_url + path

    def advance(self, seconds: float) -> None:
        """
        Move the clock on and deliver whatever the face wrote meanwhile
        (an answer after an upstream timeout, for one).
        """
        self.clock.advance(seconds)
        self.flush()

    def flush(self) -> None:
        """
        Deliver what the CA and the face wrote since the last delivery (the
        answer to a request `FakeCA.hold_next` kept, once released).
        """
        for http in self.upstream_http:
            http.flush()
        self.client.flush()


def build_test_gateway(
    keys: Union[Iterable[AccountKey], KeyStore],
    ca: Optional[FakeCA] = None,
    clock: Any = None,
    base_url: str = "http://gateway.test",
    policy: Policy = Policy(),
    request_timeout: float = 30.0,
    validators: Optional[Validators] = None,
    metrics: Optional[Metrics] = None,
    store: Optional[IStore] = None,
    other_cas: Sequence[FakeCA] = (),
    budget: BudgetLimits = BudgetLimits(),
    unknown_keys: str = "reject",
    managed_keys: Optional[str] = None,
    profiles: ProfilePolicy = ProfilePolicy(),
    bindings: AccountBindings = AccountBindings(),
    plan_renewals: bool = True,
    nonces_alone: bool = False,
) -> InMemoryGateway:
    """
    A complete gateway over a `FakeCA`, wired as ``acme-gateway serve``
    wires one (`gateway.process.wiring.build_gateway`), for tests that run
    whole v1 flows.

    :param keys: the account keys the gateway holds (or a ready `KeyStore`).
    :param ca: the upstream; a fresh `FakeCA` on the same clock by default.
    :param clock: a ``twisted.internet.task.Clock`` shared by the face's
        nonces, the store, the upstream client's timeouts and the CA; by
        default the CA's clock, or a new one set to the current time.
    :param validators: the gateway's own challenge responders (none).
    :param metrics: the `gateway.operations.metrics.Metrics` to fill (a
        fresh one, without process metrics).
    :param store: the gateway's state (a test that restarts the gateway
        passes one open on a file, or another gateway's); by default a fresh
        in-memory SQLite store bound to the CA, whose calls complete before
        they return.
    :param other_cas: CAs the gateway ran against before, reachable to
        revoke the certificates they issued.
    :param budget: the rate-limit budget of each account.
    :param unknown_keys: ``managed`` to serve keys the gateway does not
        hold, with keys of its own kept in ``managed_keys``.
    :param profiles: ``--profile`` and the profile rules.
    :param bindings: the External Account Binding credentials.
    :param plan_renewals: plan a known certificate's renewal as one order.
    :param nonces_alone: redeem v1 nonces in the gateway's memory, as a
        process serving its state alone does (by default, at the store).
    """
    if clock is None:
        clock = ca.clock if ca is not None else _clock_at_now()
    if ca is None:
        ca = FakeCA(clock=clock)
    key_store = keys if isinstance(keys, KeyStore) else KeyStore.from_keys(keys)
    if store is None:
        store = SQLiteStore.inline(clock=clock, upstream=ca.directory_url)
    cas = {other.directory_url: other for other in (ca, *other_cas)}
    config = ServeConfig(
        upstream=ca.directory_url, keys=key_store.directory or "", base_url=base_url,
        agree_to_terms=policy.agree_to_terms, request_timeout=request_timeout, budget=budget,
        allow_names=policy.allowed_names.patterns if policy.allowed_names else (),
        unknown_keys=unknown_keys, managed_keys=managed_keys, profiles=profiles,
        bindings=bindings, plan_renewals=plan_renewals,
    )
    upstream_http: List[StubTreq] = []

    def http_for(directory_url: str) -> HTTPClient:
        upstream_http.append(StubTreq(cas[directory_url]))
        # StubTreq offers HTTPClient's methods (bound when it is made).
        return cast(HTTPClient, upstream_http[-1])

    gateway = build_gateway(
        config, clock=clock, keys=key_store, store=store, http_for=http_for,
        metrics=metrics if metrics is not None else Metrics(process=False),
        validators=validators if validators is not None else Validators(),
        nonces_alone=nonces_alone,
    )
    return InMemoryGateway(gateway=gateway, client=StubTreq(gateway.face), ca=ca,
                           base_url=base_url.rstrip("/"), upstream_http=upstream_http)
