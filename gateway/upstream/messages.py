"""
ACME v2 (RFC 8555) objects as the upstream CA serves them, and the pure
parsing the upstream client needs: ``Retry-After``, ``Link`` headers,
certificate chains.

Nothing here does I/O.  Objects are built from untrusted JSON, so every
constructor checks types and raises `UpstreamProtocolError` on a shape it
cannot use, rather than failing later with an ``AttributeError``.
"""

from __future__ import annotations

import email.utils
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.keys.jose import AccountKey
from gateway.status import AUTHORIZATION_FINAL, ORDER_FINAL, Status
from gateway.upstream.errors import UpstreamProblem, UpstreamProtocolError

__all__ = ["AUTHORIZATION_FINAL", "ORDER_FINAL"]  # (from gateway.status, for the client)


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """
    Seconds to wait from a ``Retry-After`` header (RFC 9110 §10.2.3), which
    is either delta-seconds or an HTTP date; Pebble sends both at random.

    :param now: the current POSIX time, for the date form.
    :return: a non-negative number of seconds, or ``None`` when the header is
        absent or unparseable.
    """
    if value is None:
        return None
    value = value.strip()
    # delta-seconds are ASCII digits: str.isdigit() also takes "²", which
    # int() refuses (a ValueError, answered as the gateway's own bug)
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})\Z")

_LINK_ENTRY = re.compile(r'\s*<([^>]*)>\s*((?:;\s*[^,;]+)*)')


def parse_links(values: Iterable[str]) -> Dict[str, List[str]]:
    """
    Parse ``Link`` header values (RFC 8288) into ``{rel: [url, ...]}``.

    Only what ACME uses is supported: angle-bracketed targets and a ``rel``
    parameter, quoted or not, possibly naming several relations.
    """
    links: Dict[str, List[str]] = {}
    for value in values:
        position = 0
        while position < len(value):
            match = _LINK_ENTRY.match(value, position)
            if not match:
                break
            target, params = match.group(1), match.group(2)
            for param in params.split(";"):
                name, _, raw = param.partition("=")
                if name.strip().lower() != "rel":
                    continue
                for rel in raw.strip().strip('"').split():
                    links.setdefault(rel.lower(), []).append(target)
            position = match.end()
            while position < len(value) and value[position] in ", ":
                position += 1
    return links


def split_pem_chain(pem: bytes) -> Tuple[bytes, ...]:
    """
    Split an ``application/pem-certificate-chain`` body into DER
    certificates, leaf first.

    :raises UpstreamProtocolError: when the body holds no certificate or one
        that does not parse.
    """
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise UpstreamProtocolError(f"certificate chain does not parse: {error}")
    if not certificates:
        raise UpstreamProtocolError("certificate chain is empty")
    return tuple(c.public_bytes(Encoding.DER) for c in certificates)


def _require(document: Any, name: str, kind: type, what: str) -> Any:
    if not isinstance(document, dict):
        raise UpstreamProtocolError(f"{what} is not a JSON object")
    value = document.get(name)
    if not isinstance(value, kind):
        raise UpstreamProtocolError(f"{what} has no valid {name!r}")
    return value


@attrs.frozen
class Directory:
    """
    The upstream directory.  URLs are kept exactly as the server spelled
    them: Pebble derives them from the Host header, and a JWS ``url`` must
    match byte for byte.
    """

    new_nonce: str
    new_account: str
    new_order: str
    revoke_cert: Optional[str]
    key_change: Optional[str]
    new_authz: Optional[str]
    meta: Dict[str, Any]
    #: ARI (RFC 9773): where suggested renewal windows are read, if offered.
    renewal_info: Optional[str] = None

    @classmethod
    def from_json(cls, document: Any) -> "Directory":
        what = "upstream directory"
        if isinstance(document, dict) and "newNonce" not in document and "new-reg" in document:
            raise UpstreamProtocolError(
                f"{what} is an ACME v1 directory (new-reg, no newNonce): give the CA's ACME v2 "
                f"directory URL")
        meta = document.get("meta") if isinstance(document, dict) else None

        def optional(name: str) -> Optional[str]:
            value = document.get(name)
            return value if isinstance(value, str) else None

        return cls(
            new_nonce=_require(document, "newNonce", str, what),
            new_account=_require(document, "newAccount", str, what),
            new_order=_require(document, "newOrder", str, what),
            revoke_cert=optional("revokeCert"),
            key_change=optional("keyChange"),
            new_authz=optional("newAuthz"),
            meta=meta if isinstance(meta, dict) else {},
            renewal_info=optional("renewalInfo"),
        )

    @property
    def terms_of_service(self) -> Optional[str]:
        value = self.meta.get("termsOfService")
        return value if isinstance(value, str) else None

    @property
    def profiles(self) -> Dict[str, str]:
        """
        The profiles the CA offers (``meta.profiles``: name → description),
        empty when it offers none (a CA from before profiles).
        """
        value = self.meta.get("profiles")
        if not isinstance(value, dict):
            return {}
        return {name: str(text) for name, text in value.items() if isinstance(name, str)}

    @property
    def external_account_required(self) -> bool:
        """
        Whether the CA creates accounts only with an External Account
        Binding (``meta.externalAccountRequired``).
        """
        return self.meta.get("externalAccountRequired") is True


def _identifier(document: Any, what: str) -> Tuple[str, str]:
    identifier = _require(document, "identifier", dict, what)
    kind = identifier.get("type")
    value = identifier.get("value")
    if not isinstance(kind, str) or not isinstance(value, str):
        raise UpstreamProtocolError(f"{what} has a malformed identifier")
    return kind, value


@attrs.frozen
class Challenge:
    """
    One upstream challenge.
    """

    url: str
    type: str
    status: str
    token: Optional[str]
    error: Optional[UpstreamProblem] = attrs.field(eq=False, default=None)
    validated: Optional[str] = None
    validation_record: Optional[List[Any]] = None

    @classmethod
    def from_json(cls, document: Any) -> "Challenge":
        what = "upstream challenge"
        token = document.get("token") if isinstance(document, dict) else None
        error = document.get("error") if isinstance(document, dict) else None
        record = document.get("validationRecord") if isinstance(document, dict) else None
        validated = document.get("validated") if isinstance(document, dict) else None
        return cls(
            url=_require(document, "url", str, what),
            type=_require(document, "type", str, what),
            status=_require(document, "status", str, what),
            token=token if isinstance(token, str) else None,
            error=(
                UpstreamProblem.from_document(error, status=int(error.get("status") or 403))
                if isinstance(error, dict)
                else None
            ),
            validated=validated if isinstance(validated, str) else None,
            validation_record=record if isinstance(record, list) else None,
        )


@attrs.frozen
class Authorization:
    """
    One upstream authorization.  For a wildcard name the identifier value
    has its ``*.`` stripped and ``wildcard`` is true (RFC 8555 §7.1.4): key
    maps on ``(value, wildcard)``, never on the value alone.
    """

    url: str
    identifier_type: str
    identifier: str
    status: str
    expires: Optional[str]
    wildcard: bool
    challenges: Tuple[Challenge, ...]

    @classmethod
    def from_json(cls, url: str, document: Any) -> "Authorization":
        what = "upstream authorization"
        kind, value = _identifier(document, what)
        challenges = _require(document, "challenges", list, what)
        expires = document.get("expires")
        return cls(
            url=url,
            identifier_type=kind,
            identifier=value,
            status=_require(document, "status", str, what),
            expires=expires if isinstance(expires, str) else None,
            wildcard=document.get("wildcard") is True,
            challenges=tuple(Challenge.from_json(c) for c in challenges),
        )

    @property
    def name(self) -> str:
        """
        The name as a certificate spells it: ``*.example.com`` for a wildcard.
        """
        return ("*." + self.identifier) if self.wildcard else self.identifier

    def challenge(self, challenge_type: str) -> Optional[Challenge]:
        """
        The challenge of type ``challenge_type``, chosen by type: CAs shuffle
        the list and may offer types a client has never heard of.
        """
        return next((c for c in self.challenges if c.type == challenge_type), None)


@attrs.frozen
class Order:
    """
    One upstream order.
    """

    url: str
    status: str
    identifiers: Tuple[str, ...]
    authorizations: Tuple[str, ...]
    finalize: str
    certificate: Optional[str]
    expires: Optional[str]
    error: Optional[UpstreamProblem] = attrs.field(eq=False, default=None)
    #: The profile the CA gave the order, when it says (CAs with profiles do).
    profile: Optional[str] = None
    #: The ARI certID the order replaces, as the CA echoes it.
    replaces: Optional[str] = None

    @classmethod
    def from_json(cls, url: str, document: Any) -> "Order":
        what = "upstream order"
        identifiers = _require(document, "identifiers", list, what)
        names = []
        for entry in identifiers:
            if not isinstance(entry, dict) or not isinstance(entry.get("value"), str):
                raise UpstreamProtocolError(f"{what} has a malformed identifier")
            names.append(entry["value"])
        authorizations = _require(document, "authorizations", list, what)
        if not all(isinstance(a, str) for a in authorizations):
            raise UpstreamProtocolError(f"{what} has malformed authorizations")
        certificate = document.get("certificate")
        expires = document.get("expires")
        error = document.get("error")
        profile = document.get("profile")
        replaces = document.get("replaces")
        return cls(
            url=url,
            status=_require(document, "status", str, what),
            identifiers=tuple(sorted(names)),
            authorizations=tuple(authorizations),
            finalize=_require(document, "finalize", str, what),
            certificate=certificate if isinstance(certificate, str) else None,
            expires=expires if isinstance(expires, str) else None,
            error=(
                UpstreamProblem.from_document(error, status=int(error.get("status") or 403))
                if isinstance(error, dict)
                else None
            ),
            profile=profile if isinstance(profile, str) and profile else None,
            replaces=replaces if isinstance(replaces, str) and replaces else None,
        )


@attrs.frozen
class RenewalInfo:
    """
    A CA's suggested renewal window for one certificate (ARI, RFC 9773
    §4.2), and when to ask again.

    :ivar start: the window's start and ``end``, RFC 3339 as the CA spelled
        them.
    :ivar explanation_url: why the window is what it is, when the CA says.
    :ivar retry_after: seconds until the CA wants to be asked again
        (``Retry-After``), when it said.
    """

    start: str
    end: str
    explanation_url: Optional[str] = None
    retry_after: Optional[float] = None

    @classmethod
    def from_json(cls, document: Any, retry_after: Optional[float] = None) -> "RenewalInfo":
        what = "renewalInfo"
        window = _require(document, "suggestedWindow", dict, what)
        start = _require(window, "start", str, what + " suggestedWindow")
        end = _require(window, "end", str, what + " suggestedWindow")
        if not (_RFC3339.match(start) and _RFC3339.match(end)):
            raise UpstreamProtocolError(f"{what} suggestedWindow is not two RFC 3339 timestamps")
        explanation = document.get("explanationURL")
        return cls(start=start, end=end,
                   explanation_url=explanation if isinstance(explanation, str) else None,
                   retry_after=retry_after)


@attrs.frozen
class CertificateChain:
    """
    A downloaded certificate chain: the leaf and its issuers as DER, leaf
    first, and the URLs of ``alternate`` chains the CA offers.
    """

    url: str
    certificates: Tuple[bytes, ...] = attrs.field(repr=False)
    alternates: Tuple[str, ...] = ()

    @property
    def leaf(self) -> bytes:
        return self.certificates[0]

    @property
    def issuers(self) -> Tuple[bytes, ...]:
        return self.certificates[1:]


@attrs.frozen
class ExternalAccountKey:
    """
    The credentials a CA that requires External Account Binding hands out
    for binding new ACME accounts (RFC 8555 §7.3.4): a key id and an HMAC
    key (decoded).  Some CAs' keys bind one account only.
    """

    kid: str
    hmac_key: bytes = attrs.field(repr=False)


@attrs.frozen
class UpstreamAccount:
    """
    An account at the upstream CA: the key that signs for it and the URL
    used as ``kid``.
    """

    key: AccountKey = attrs.field(repr=False)
    url: str
    status: str = Status.VALID
    contact: Tuple[str, ...] = ()
    body: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def thumbprint(self) -> str:
        return self.key.thumbprint


def order_is_ready(order: Order, authorizations: Sequence[Authorization]) -> bool:
    """
    Whether ``order`` can be finalized: its status is ``ready``, or it is
    ``pending`` while every one of its authorizations is ``valid``
    (Let's Encrypt served orders without ``ready`` for months in 2018).
    """
    if order.status == Status.READY:
        return True
    return (
        order.status == Status.PENDING
        and len(authorizations) > 0
        and all(a.status == Status.VALID for a in authorizations)
    )
