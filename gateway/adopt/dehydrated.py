"""
Adopting a dehydrated installation (``--basedir``, ``--config``).

dehydrated keeps one account per CA in
``<ACCOUNTDIR>/<urlbase64(CA + "\\n")>/`` (it encodes ``echo "$CA"``, the
newline included): ``account_key.pem``, ``registration_info.json`` and a
few more.  Its config file is a shell script setting ``CA=…``.  Changing
``CA`` alone makes dehydrated look in another account directory, find no
key, and generate and register a new one.

Adoption therefore imports every ``account_key.pem`` into the key store,
copies the account of the configured CA to the directory named after the
gateway's URL (the old one stays as it was), and rewrites each ``CA=`` line
of the config file and of the ``CONFIG_D/*.sh`` files it names (Debian's
``/etc/dehydrated/conf.d``), adding one to the config file when none sets it.
"""

from __future__ import annotations

import base64
import os
import stat
from typing import List, Optional
from urllib.parse import urlsplit

from gateway.adopt import lines as textlines
from gateway.adopt.certificates import dehydrated_certificates
from gateway.adopt.changes import AdoptError, CreateFile, EditFile, Plan, read_small
from gateway.adopt.keyimport import KeyImporter, read_key
from gateway.keys.keystore import KeyFileError

#: dehydrated 0.7.0's CA short names.
SHORT_NAMES = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-test": "https://acme-staging-v02.api.letsencrypt.org/directory",
    "zerossl": "https://acme.zerossl.com/v2/DV90",
    "buypass": "https://api.buypass.com/acme/directory",
    "buypass-test": "https://api.test4.buypass.no/acme/directory",
}

#: The CA dehydrated 0.7.0 uses when its config sets none.
DEFAULT_CA = "letsencrypt"


def account_dir_name(ca_url: str) -> str:
    """
    The account directory name dehydrated derives from ``ca_url``.
    """
    return base64.urlsafe_b64encode((ca_url + "\n").encode()).decode().rstrip("=")


def _ca_of(name: str) -> Optional[str]:
    """
    The CA URL an account directory name stands for, if it decodes to one.
    """
    try:
        decoded = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded[:-1] if decoded.endswith("\n") else None


def _literal(plan: Plan, config: str, lines, name: str) -> Optional[str]:
    try:
        settings = textlines.find_shell(lines, name)
    except textlines.Unparsable as error:
        plan.problem(config, f"cannot use {name}: {error}")
        return None
    return settings[-1].value if settings else None


def _plan_config(plan: Plan, configs: List[str]) -> Optional[str]:
    """
    Plan the ``CA=`` edits of the config file and its ``CONFIG_D`` files
    (sourced after it, in order: the last ``CA=`` wins); the old CA URL
    (``None`` when a file cannot be parsed, since then the CA in effect is
    unknown).
    """
    parsed = []
    for config in configs:
        try:
            data = read_small(config)
            lines = textlines.split_lines(data)
            parsed.append((config, data, lines, textlines.find_shell(lines, "CA")))
        except (OSError, ValueError) as error:
            plan.problem(config, f"cannot parse: {getattr(error, 'strerror', None) or error}")
            return None
        if _literal(plan, config, lines, "API") == "2":
            plan.notes.append(f"{config} sets API=2: dehydrated will speak ACME v2, and the gateway "
                              f"serves v1; set API=1 (or auto)")
    assigned = [setting for *_, settings in parsed for setting in settings]
    old = assigned[-1].value if assigned else DEFAULT_CA
    old = SHORT_NAMES.get(old, old)
    for config, data, lines, settings in parsed:
        changed = lines
        for setting in settings:
            if setting.value != plan.gateway:
                changed = textlines.with_value(changed, setting,
                                               textlines.shell_word(plan.gateway, setting.quote))
        summary = f"CA {settings[-1].value if settings else ''} -> gateway"
        if not assigned and config == configs[0]:
            changed = textlines.with_line_after(lines, None, f"CA={textlines.shell_word(plan.gateway, '')}")
            summary = f"CA added: the config named none (dehydrated's default, {old})"
        if changed is not lines:
            plan.changes.append(EditFile(path=config, old=data, new=textlines.join_lines(changed),
                                         summary=summary))
    return old


def _plan_copy(plan: Plan, accounts: str, old_ca: str) -> None:
    """
    Copy the account of ``old_ca`` to the gateway's account directory.
    """
    source = os.path.join(accounts, account_dir_name(old_ca))
    target = os.path.join(accounts, account_dir_name(plan.gateway))
    if os.path.normpath(source) == os.path.normpath(target):
        return
    if not os.path.isfile(os.path.join(source, "account_key.pem")):
        plan.problem(source, f"no account_key.pem for {old_ca}: there is no account to move, "
                             f"and dehydrated would register a new key through the gateway")
        return
    if os.path.exists(os.path.join(source, "deactivated")):
        plan.notes.append(f"the account of {old_ca} is marked deactivated; dehydrated will not use it")
    if os.path.lexists(target):
        try:
            _, there = read_key(os.path.join(target, "account_key.pem"))
            _, here = read_key(os.path.join(source, "account_key.pem"))
        except (OSError, ValueError, KeyFileError):
            there = here = None
        if there is None or here is None or there.thumbprint != here.thumbprint:
            plan.problem(target, "the gateway's account directory exists with another account")
        return
    for name in sorted(os.listdir(source)):
        path = os.path.join(source, name)
        if not os.path.isfile(path):
            continue
        try:
            data = read_small(path)
        except (OSError, ValueError) as error:
            plan.problem(path, f"cannot read: {getattr(error, 'strerror', None) or error}")
            continue
        plan.changes.append(CreateFile(path=os.path.join(target, name), data=data,
                                       mode=stat.S_IMODE(os.stat(path).st_mode),
                                       summary=f"account of {old_ca}"))


def basedir_of(config: str) -> str:
    """
    The ``BASEDIR`` the dehydrated config file at ``config`` sets, as an
    absolute path: what ``--basedir`` defaults to, for adoption and undo.

    :raises AdoptError: when the file cannot be read or sets no literal
        ``BASEDIR``.
    """
    config = os.path.abspath(config)
    try:
        config_lines = textlines.split_lines(read_small(config))
    except (OSError, ValueError) as error:
        raise AdoptError(f"cannot read --config {config}: {getattr(error, 'strerror', None) or error}")
    probe = Plan(client="dehydrated", root="", gateway="", keys_dir=None)
    basedir = _literal(probe, config, config_lines, "BASEDIR")
    if not basedir:
        raise AdoptError(f"{config} sets no literal BASEDIR: give --basedir")
    return os.path.abspath(basedir)


def plan_dehydrated(basedir: Optional[str], config: Optional[str], gateway: str,
                    importer: KeyImporter) -> Plan:
    """
    The adoption of the dehydrated installation at ``basedir`` configured
    by ``config`` (default ``<basedir>/config``; ``basedir`` defaults to the
    config's ``BASEDIR``).

    :raises AdoptError: when neither is usable.
    """
    if config is None:
        if basedir is None:
            raise AdoptError("give --basedir or --config")
        config = os.path.join(basedir, "config")
    config = os.path.abspath(config)
    if not os.path.isfile(config):
        raise AdoptError(f"--config {config} is not a file")
    try:
        config_lines = textlines.split_lines(read_small(config))
    except (OSError, ValueError) as error:
        raise AdoptError(f"cannot read --config {config}: {getattr(error, 'strerror', None) or error}")
    basedir = os.path.abspath(basedir if basedir is not None else basedir_of(config))
    if not os.path.isdir(basedir):
        raise AdoptError(f"--basedir {basedir} is not a directory")
    plan = Plan(client="dehydrated", root=basedir, gateway=gateway, keys_dir=importer.keys_dir)
    accounts = _literal(plan, config, config_lines, "ACCOUNTDIR") or os.path.join(basedir, "accounts")
    configs = [config]
    config_d = _literal(plan, config, config_lines, "CONFIG_D")
    if config_d and os.path.isdir(config_d):
        configs += sorted(os.path.join(config_d, name) for name in os.listdir(config_d)
                          if name.endswith(".sh") and os.path.isfile(os.path.join(config_d, name)))
    old_ca = _plan_config(plan, configs)
    if os.path.isdir(accounts):
        for name in sorted(os.listdir(accounts)):
            key_path = os.path.join(accounts, name, "account_key.pem")
            if not os.path.isfile(key_path):
                continue
            ca = _ca_of(name)
            key = None
            try:
                _, key = read_key(key_path)
            except (OSError, ValueError, KeyFileError):
                pass
            host = urlsplit(ca).netloc if ca else name[:24]
            label = f"{host}-{key.thumbprint[:12]}" if key is not None else host
            importer.plan_file(plan, key_path, "dehydrated", label)
    else:
        plan.notes.append(f"no account directory {accounts}")
    if old_ca is not None:
        _plan_copy(plan, accounts, old_ca)
    owner = os.path.join(accounts, account_dir_name(old_ca), "account_key.pem") if old_ca else None
    plan.certificates += dehydrated_certificates(
        plan, basedir, _literal(plan, config, config_lines, "DOMAINS_TXT"),
        _literal(plan, config, config_lines, "CERTDIR"),
        owner if owner and os.path.isfile(owner) else None)
    return plan
