"""
The settings of what the gateway asks of the upstream CA on its clients'
behalf: the certificate profile (``--profile`` and the config file's
``[[profile-rule]]`` tables) and External Account Binding
(``--eab-kid``/``--eab-hmac-key``, ``--eab-file``), read and checked for
``serve``; and the start-up check of the profiles against the CA's
directory.

An ``--eab-file`` is TOML, one table per account key, named by the key's
RFC 7638 thumbprint (``acme-gateway keys list`` prints them)::

    ["nB5u2Kx…"]
    kid = "kid-1"
    hmac-key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajV…"
"""

from __future__ import annotations

import tomllib
from typing import Dict, List, Mapping, Optional, Sequence

from gateway.keys.jose import b64url_decode
from gateway.translate.bindings import AccountBindings
from gateway.translate.profiles import ProfilePolicy, ProfileRule, rule_from_table
from gateway.upstream.messages import Directory, ExternalAccountKey


class OptionError(ValueError):
    """
    A setting that cannot be used: ``flag`` names it (the config file key
    for what only the file holds), and the message says why.
    """

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


def hmac_key(text: str, flag: str = "--eab-hmac-key") -> bytes:
    """
    An EAB HMAC key as CAs hand it out: base64url (padded or not).

    :raises OptionError: for anything else, or an empty key.
    """
    try:
        key = b64url_decode(text.strip())
    except ValueError:
        raise OptionError(flag, "expected the base64url HMAC key the CA gave you") from None
    if not key:
        raise OptionError(flag, "the HMAC key is empty")
    return key


def read_eab_file(path: str) -> Dict[str, ExternalAccountKey]:
    """
    The ``--eab-file`` at ``path``: each thumbprint's credentials.

    :raises OptionError: naming the file and the entry at fault.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as error:
        raise OptionError("--eab-file", f"cannot read {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise OptionError("--eab-file", f"{path} is not valid TOML: {error}") from None
    bindings = {}
    for thumbprint, table in data.items():
        where = f"{path}: [{thumbprint!r}]"
        if not isinstance(table, dict):
            raise OptionError("--eab-file", f"{where}: expected a table with kid and hmac-key")
        unknown = sorted(set(table) - {"kid", "hmac-key"})
        kid, key = table.get("kid"), table.get("hmac-key")
        if unknown or not isinstance(kid, str) or not kid or not isinstance(key, str):
            raise OptionError("--eab-file", f"{where}: expected exactly kid and hmac-key, "
                                            f"both strings")
        try:
            bindings[thumbprint] = ExternalAccountKey(kid, hmac_key(key, "--eab-file"))
        except OptionError as error:
            raise OptionError("--eab-file", f"{where}: {error}") from None
    if not bindings:
        raise OptionError("--eab-file", f"{path} names no account key")
    return bindings


def account_bindings(kid: Optional[str], key_text: Optional[str],
                     eab_file: Optional[str]) -> AccountBindings:
    """
    The EAB credentials of ``--eab-kid``, ``--eab-hmac-key`` and
    ``--eab-file``.

    :raises OptionError: when one of the pair is given without the other,
        or a value is unusable.
    """
    if bool(kid) != bool(key_text):
        raise OptionError("--eab-hmac-key" if kid else "--eab-kid",
                          "give both --eab-kid and --eab-hmac-key, or neither")
    default = ExternalAccountKey(kid, hmac_key(key_text)) if kid and key_text else None
    by_thumbprint = read_eab_file(eab_file) if eab_file else {}
    return AccountBindings(default=default, by_thumbprint=by_thumbprint)


def profile_policy(profile: Optional[str],
                   rule_tables: Sequence[Mapping[str, object]] = ()) -> ProfilePolicy:
    """
    ``--profile`` and the config file's ``[[profile-rule]]`` tables.

    :raises OptionError: naming the rule that cannot be used.
    """
    if profile is not None and not profile.strip():
        raise OptionError("--profile", "expected a profile name")
    rules: List[ProfileRule] = []
    for index, table in enumerate(rule_tables, 1):
        try:
            rules.append(rule_from_table(table))
        except ValueError as error:
            raise OptionError("profile-rule", f"rule {index}: {error}") from None
    return ProfilePolicy(default=profile or None, rules=tuple(rules))


def profiles_problem(policy: ProfilePolicy, directory: Directory) -> Optional[str]:
    """
    Why the profiles ``policy`` names cannot be used at the CA of
    ``directory`` (each must be in its ``meta.profiles``), naming the ones
    it offers; `None` when they all can.
    """
    missing = policy.unknown(directory.profiles)
    if not missing:
        return None
    offered = ", ".join(sorted(directory.profiles))
    named = "; ".join(f"{where}: {name!r}" for where, name in missing)
    if not offered:
        return f"the upstream CA offers no profiles (its directory has no meta.profiles): {named}"
    return f"the upstream CA does not offer {named}; it offers: {offered}"
