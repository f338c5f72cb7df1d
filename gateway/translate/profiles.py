"""
Which certificate profile an order asks the CA for.

CAs now offer profiles (Let's Encrypt's ``classic``, ``tlsserver`` and
``shortlived``; Google's ``standard`` and ``minimal``), chosen per order
with ``"profile"`` in ``newOrder`` and listed in the directory's
``meta.profiles``.  A v1 client has no field for one, so the operator
chooses for it: ``--profile NAME`` for every order, and rules in the
config file for some clients — by account key thumbprint, by User-Agent,
or by the names ordered.  The first rule that matches wins; without one,
``--profile``; without that, the order names none and the CA uses its
default.

Pure: no I/O.
"""

from __future__ import annotations

import fnmatch
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

import attrs


@attrs.frozen
class ProfileRule:
    """
    One per-client rule: orders of clients it matches ask for ``profile``.
    Every criterion given must hold.

    :ivar thumbprint: the account key's RFC 7638 thumbprint.
    :ivar user_agent: a shell-style pattern (``CertbotACMEClient/0.*``)
        matched against the client's whole User-Agent, ignoring case.
    :ivar names: a shell-style pattern (``*.lab.example.com``) that every
        name of the order must match, ignoring case.
    """

    profile: str
    thumbprint: Optional[str] = None
    user_agent: Optional[str] = None
    names: Optional[str] = None

    def matches(self, thumbprint: str, user_agent: str, names: Sequence[str]) -> bool:
        if self.thumbprint is not None and thumbprint != self.thumbprint:
            return False
        if self.user_agent is not None and not fnmatch.fnmatchcase(
                user_agent.lower(), self.user_agent.lower()):
            return False
        if self.names is not None and not (names and all(
                fnmatch.fnmatchcase(name.lower(), self.names.lower()) for name in names)):
            return False
        return True

    def describe(self) -> str:
        """
        The rule as the config file spells it, for messages.
        """
        criteria = [f"{key} = {value!r}" for key, value in (
            ("thumbprint", self.thumbprint), ("user-agent", self.user_agent),
            ("names", self.names)) if value is not None]
        return ", ".join(criteria + [f"profile = {self.profile!r}"])


#: The keys a ``[[profile-rule]]`` table may hold.
RULE_KEYS = ("profile", "thumbprint", "user-agent", "names")


def rule_from_table(table: Mapping[str, object]) -> ProfileRule:
    """
    A rule from a ``[[profile-rule]]`` table of the config file.

    :raises ValueError: naming what is wrong with it.
    """
    unknown = sorted(set(table) - set(RULE_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (a rule has "
                         f"{', '.join(RULE_KEYS)})")
    values = {}
    for key in RULE_KEYS:
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"{key} must be a non-empty string")
        values[key] = value
    if values["profile"] is None:
        raise ValueError("a rule needs a profile")
    if all(values[key] is None for key in ("thumbprint", "user-agent", "names")):
        raise ValueError("a rule needs at least one of thumbprint, user-agent, names")
    return ProfileRule(profile=str(values["profile"]), thumbprint=values["thumbprint"],
                       user_agent=values["user-agent"], names=values["names"])


@attrs.frozen
class ProfilePolicy:
    """
    The operator's choice of profiles: ``--profile`` and the rules.
    """

    default: Optional[str] = None
    rules: Tuple[ProfileRule, ...] = ()

    def choose(self, thumbprint: str, user_agent: str, names: Sequence[str]) -> Optional[str]:
        """
        The profile an order for ``names`` by this client asks for, or
        `None` for the CA's default.
        """
        for rule in self.rules:
            if rule.matches(thumbprint, user_agent, names):
                return rule.profile
        return self.default

    def unknown(self, offered: Iterable[str]) -> List[Tuple[str, str]]:
        """
        Every profile named that the CA does not offer, with where it was
        named (``--profile``, or the rule), in order.
        """
        offered = set(offered)
        missing = []
        if self.default is not None and self.default not in offered:
            missing.append(("--profile", self.default))
        for index, rule in enumerate(self.rules, 1):
            if rule.profile not in offered:
                missing.append((f"profile-rule {index} ({rule.describe()})", rule.profile))
        return missing
