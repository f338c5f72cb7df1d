"""
Identifier policy: which DNS names the gateway accepts from v1 clients, and
in which spelling it passes them upstream.

Boulder's v1 refused wildcards; Let's Encrypt's v2 accepts ``*.`` only as
the whole leftmost label, once, and refuses a name that a wildcard in the
same request already covers.  The gateway applies those rules before any
upstream call, so a client's mistake costs no order.  Names are lower-cased
and IDNA-checked (an A-label is kept as sent; a U-label is converted).
"""

from __future__ import annotations

import ipaddress
import re
from typing import FrozenSet, Iterable, Sequence, Tuple

import attrs
import idna

from gateway.translate.errors import IdentifierRejected, Unauthorized

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
MAX_NAME_LENGTH = 253
MAX_NAMES_PER_CERTIFICATE = 100


@attrs.frozen
class DNSName:
    """
    A checked DNS identifier.

    :ivar value: the name without any ``*.`` prefix, lower-case A-labels.
    :ivar wildcard: whether the client asked for ``*.value``.
    """

    value: str
    wildcard: bool = False

    @property
    def spelled(self) -> str:
        """
        The name as certificates and v2 orders spell it.
        """
        return ("*." + self.value) if self.wildcard else self.value


def _to_ascii(name: str) -> str:
    if name.isascii():
        return name
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError as error:
        raise IdentifierRejected(f"Invalid identifier {name!r}: not a valid IDNA name ({error})")


def parse_dns_name(raw: object, allow_wildcard: bool = False) -> DNSName:
    """
    Check one name a v1 client sent.

    :param allow_wildcard: whether ``*.`` may lead the name.
    :raises IdentifierRejected: (Boulder's wording where it had one).
    """
    if not isinstance(raw, str) or not raw:
        raise IdentifierRejected("Invalid identifier: the name must be a non-empty string")
    name = _to_ascii(raw.strip().rstrip(".")).lower()
    wildcard = False
    if "*" in name:
        if name.count("*") > 1:
            raise IdentifierRejected(f"Invalid identifier {raw!r}: DNS name had more than one wildcard")
        if not name.startswith("*."):
            raise IdentifierRejected(
                f"Invalid identifier {raw!r}: DNS name had a malformed wildcard label"
            )
        if not allow_wildcard:
            raise IdentifierRejected("Wildcard names not supported")
        wildcard = True
        name = name[2:]
    if len(name) > MAX_NAME_LENGTH:
        raise IdentifierRejected(f"Invalid identifier {raw!r}: DNS name is too long")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise IdentifierRejected(f"Invalid identifier {raw!r}: IP addresses are not DNS names")
    labels = name.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise IdentifierRejected(f"Invalid identifier {raw!r}: not a valid DNS name")
    if labels[-1].isdigit():
        raise IdentifierRejected(f"Invalid identifier {raw!r}: the last label must not be numeric")
    if wildcard and len(labels) < 2:
        raise IdentifierRejected(f"Invalid identifier {raw!r}: a wildcard needs a registered domain")
    return DNSName(name, wildcard)


def parse_csr_name(raw: object, allow_wildcard: bool = False) -> DNSName:
    """
    Check one name of a ``new-cert`` CSR.

    The CSR goes upstream as the client signed it, and the CA compares its
    names with the order's identifiers lower-cased but otherwise as written
    (Pebble: "CSR is missing Order domain"; Boulder refuses a name ending in
    a dot outright).  So a name the gateway would have to respell for the
    order — a trailing dot, surrounding spaces, a U-label — can never be
    finalized: refuse it here, before an order and a finalize are spent.

    :raises IdentifierRejected: naming the name and what to change.
    """
    name = parse_dns_name(raw, allow_wildcard=allow_wildcard)
    assert isinstance(raw, str)  # parse_dns_name refuses anything else
    if raw.lower() != name.spelled:
        if raw.strip().endswith("."):
            why = "Domain name ends in a dot; remove the trailing dot"
        elif raw != raw.strip():
            why = "the name has surrounding spaces"
        else:
            why = f"the name must be spelled as the certificate will carry it, {name.spelled!r}"
        raise IdentifierRejected(
            f"Error creating new cert :: CSR name {raw!r} cannot be issued as written: {why} "
            f"(the CA compares the CSR's names with the order's exactly)"
        )
    return name


def parse_v1_identifier(identifier: object, allow_wildcard: bool = False) -> DNSName:
    """
    Check a v1 ``identifier`` object (``{"type": "dns", "value": ...}``).
    """
    if not isinstance(identifier, dict):
        raise IdentifierRejected("Invalid identifier: expected an object with type and value")
    if identifier.get("type") != "dns":
        raise IdentifierRejected("Invalid identifier type")
    return parse_dns_name(identifier.get("value"), allow_wildcard=allow_wildcard)


def check_name_set(names: Iterable[DNSName]) -> Tuple[DNSName, ...]:
    """
    Check a certificate's names together: no more than 100, and no name
    made redundant by a wildcard in the same set (a base domain and its
    wildcard may share a certificate).

    :return: the names, deduplicated and sorted by spelling.
    :raises IdentifierRejected:
    """
    unique = sorted(set(names), key=lambda n: n.spelled)
    if not unique:
        raise IdentifierRejected("Error finalizing: the CSR names no DNS identifier")
    if len(unique) > MAX_NAMES_PER_CERTIFICATE:
        raise IdentifierRejected(
            f"CSR contains more than {MAX_NAMES_PER_CERTIFICATE} DNS names"
        )
    wildcard_bases = {n.value for n in unique if n.wildcard}
    for name in unique:
        if name.wildcard:
            continue
        parent = name.value.split(".", 1)[1] if "." in name.value else ""
        if parent in wildcard_bases:
            raise IdentifierRejected(
                f"Domain name {name.value!r} is redundant with a wildcard domain in the same request. "
                f"Remove one or the other from the certificate request."
            )
    return tuple(unique)


def spellings(names: Sequence[DNSName]) -> Tuple[str, ...]:
    """
    The sorted spellings of ``names``: the key of an order's identifier set.
    """
    return tuple(sorted(n.spelled for n in names))


@attrs.frozen
class AllowedNames:
    """
    The names any account may get through the gateway (``--allow-names``),
    as exact names and ``*.suffix`` patterns.

    The gateway validates names itself whenever it has a means
    (``--http01-listen``, a dns-01 means) and always in managed mode, so
    without a bound any key — in managed mode any key at all — could get
    certificates for any name routed to it, names of other accounts
    included.  ``*.example.com`` allows every name below ``example.com``
    (at any depth, and wildcards there), not ``example.com`` itself;
    ``example.com`` allows that name only.

    :ivar patterns: the patterns as the operator gave them (normalized).
    """

    patterns: Tuple[str, ...]
    _exact: FrozenSet[str] = attrs.field(init=False, repr=False)
    _suffixes: Tuple[str, ...] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_exact",
                           frozenset(p for p in self.patterns if not p.startswith("*.")))
        object.__setattr__(self, "_suffixes",
                           tuple(p[1:] for p in self.patterns if p.startswith("*.")))

    @classmethod
    def parse(cls, patterns: Iterable[str]) -> "AllowedNames":
        """
        :raises ValueError: naming the first pattern that is neither a DNS
            name nor ``*.`` and one.
        """
        checked = []
        for pattern in patterns:
            try:
                name = parse_dns_name(pattern, allow_wildcard=True)
            except IdentifierRejected as error:
                raise ValueError(f"{pattern!r} is not a DNS name or *.suffix pattern "
                                 f"({error.detail})") from None
            checked.append(name.spelled)
        if not checked:
            raise ValueError("no pattern given")
        return cls(tuple(dict.fromkeys(checked)))

    def allows(self, name: DNSName) -> bool:
        if not name.wildcard and name.value in self._exact:
            return True
        return any(name.value.endswith(suffix) or (name.wildcard and "." + name.value == suffix)
                   for suffix in self._suffixes)

    def check(self, names: Iterable[DNSName]) -> None:
        """
        :raises Unauthorized: naming the names refused, before any order.
        """
        refused = [name.spelled for name in names if not self.allows(name)]
        if refused:
            raise Unauthorized(
                f"Policy forbids issuing for name{'s' if len(refused) > 1 else ''} "
                f"{', '.join(refused)}: this gateway issues only for names matching "
                f"--allow-names ({' '.join(self.patterns)})")
