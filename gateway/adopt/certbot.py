"""
Adopting a certbot installation (``--config-dir``, usually
``/etc/letsencrypt``).

certbot files each account under the server it registered with,
``accounts/<host[:port]><path>/<id>/`` (see `gateway.clients.certbot`), and
each certificate's renewal settings in ``renewal/<name>.conf``, whose
``[renewalparams]`` name the ``server`` and the ``account`` id.  After the
v1 shutdown those still named ``acme-v01``; pointing certbot at another
server made it look for accounts under that server's directory, find none,
and register a brand-new key.

Adoption therefore, for every account under any other server:

* imports its ``private_key.json`` into the key store;
* writes a copy of the account under the gateway's URL (same id, same key,
  same ``meta.json``; ``regr.json`` with the gateway's URLs), so certbot
  finds it there;

and points the ``server`` of every renewal file, and of ``cli.ini`` when it
names one, at the gateway, editing that one line.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

from gateway.adopt import lines as textlines
from gateway.adopt.certificates import certbot_certificates
from gateway.adopt.changes import AdoptError, CreateFile, EditFile, Plan, read_small
from gateway.adopt.keyimport import KeyImporter
from gateway.clients.certbot import account_id, accounts_dir

#: The files of one certbot account directory.
ACCOUNT_FILES = ("private_key.json", "regr.json", "meta.json")


def _account_dirs(accounts_root: str) -> List[Tuple[str, str]]:
    """
    ``(server path, account dir)`` of every account below ``accounts/``,
    following the symlinks certbot itself made when it reused v01 accounts
    for v02.
    """
    found = []
    for directory, subdirectories, files in os.walk(accounts_root, followlinks=True):
        subdirectories.sort()
        if "private_key.json" not in files:
            continue
        subdirectories[:] = []
        found.append((os.path.relpath(os.path.dirname(directory), accounts_root), directory))
    return found


def _gateway_url(gateway: str, path: str) -> str:
    parsed = urlsplit(gateway)
    return urlunsplit(parsed._replace(path=path, query="", fragment=""))


def _regr_copy(data: bytes, gateway: str, thumbprint: str) -> bytes:
    """
    ``regr.json`` for the gateway's copy: the registration body unchanged;
    as its URI, the gateway's registration URL by key thumbprint
    (``/acme/reg/<thumbprint>``, which the gateway takes as the signer's own
    registration), since the gateway's id for the account is not known
    before its first request and the old URI names the dead CA (certbot
    posts ``update_account`` and ``unregister`` there); the gateway's
    ``new-authz`` URL.

    :raises ValueError: when it is not a JSON object.
    """
    regr = json.loads(data)
    if not isinstance(regr, dict):
        raise ValueError("not a JSON object")
    regr["uri"] = _gateway_url(gateway, f"/acme/reg/{thumbprint}")
    if "new_authzr_uri" in regr:
        regr["new_authzr_uri"] = _gateway_url(gateway, "/acme/new-authz")
    return json.dumps(regr).encode("utf-8")


def _mode(path: str, default: int) -> int:
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        return default


def _plan_accounts(plan: Plan, config_dir: str, importer: KeyImporter) -> Dict[str, str]:
    """
    Plan imports and gateway copies of every account; the ids known, to
    check the renewal files' ``account`` against.
    """
    accounts_root = os.path.join(config_dir, "accounts")
    target_root = accounts_dir(config_dir, plan.gateway)
    known: Dict[str, str] = {}
    if os.path.isdir(target_root):
        for name in sorted(os.listdir(target_root)):
            if os.path.isfile(os.path.join(target_root, name, "private_key.json")):
                known[name] = target_root
    if not os.path.isdir(accounts_root):
        plan.notes.append("no accounts/ directory: certbot has no account to keep")
        return known
    for server_path, directory in _account_dirs(accounts_root):
        identifier = os.path.basename(directory)
        key_path = os.path.join(directory, "private_key.json")
        key = importer.plan_file(plan, key_path, "certbot", identifier)
        under_gateway = os.path.normpath(os.path.dirname(directory)) == os.path.normpath(target_root)
        if key is None or under_gateway or identifier in known:
            continue
        if account_id(key.private_key) != identifier:
            plan.notes.append(f"account {identifier} under {server_path} holds the key of account "
                              f"{account_id(key.private_key)}; copied under its own name anyway")
        known[identifier] = directory
        target = os.path.join(target_root, identifier)
        if os.path.exists(os.path.join(target, "private_key.json")):
            continue
        try:
            contents = {name: read_small(os.path.join(directory, name)) for name in ACCOUNT_FILES}
        except (OSError, ValueError) as error:
            plan.problem(directory, f"incomplete account ({getattr(error, 'strerror', None) or error})")
            continue
        try:
            contents["regr.json"] = _regr_copy(contents["regr.json"], plan.gateway, key.thumbprint)
        except ValueError as error:
            plan.problem(os.path.join(directory, "regr.json"), f"cannot parse: {error}")
            continue
        for name in ACCOUNT_FILES:
            source = os.path.join(directory, name)
            plan.changes.append(CreateFile(
                path=os.path.join(target, name), data=contents[name],
                mode=_mode(source, 0o400 if name == "private_key.json" else 0o644),
                summary=f"account {identifier} from {server_path}"))
    return known


def _plan_server_line(plan: Plan, path: str, section: Optional[str], required: bool) -> Optional[str]:
    """
    Point the ``server`` of one configobj file at the gateway.

    :param section: the section holding ``server`` (``None``: top level).
    :param required: add a ``server`` line when the file has none (a
        renewal file without one renews against certbot's default CA).
    :return: the file's ``account`` value, if any.
    """
    try:
        data = read_small(path)
        lines = textlines.split_lines(data)
        servers, header = textlines.find_configobj(lines, "server", section)
        accounts, _ = textlines.find_configobj(lines, "account", section)
    except (OSError, ValueError) as error:
        plan.problem(path, f"cannot parse: {getattr(error, 'strerror', None) or error}")
        return None
    if section is not None and header is None:
        plan.problem(path, f"cannot parse: no [{section}] section")
        return None
    if servers:
        (setting,) = servers
        if setting.value == plan.gateway:
            changed = None
        else:
            changed = textlines.with_value(lines, setting, setting.quote + plan.gateway + setting.quote)
            summary = f"server {setting.value} -> gateway"
    elif required:
        changed = textlines.with_line_after(lines, header, f"server = {plan.gateway}")
        summary = "server added: the file named none (certbot's default CA)"
    else:
        changed = None
    if changed is not None:
        plan.changes.append(EditFile(path=path, old=data, new=textlines.join_lines(changed),
                                     summary=summary))
    return accounts[0].value if accounts else None


def plan_certbot(config_dir: str, gateway: str, importer: KeyImporter) -> Plan:
    """
    The adoption of the certbot installation at ``config_dir``.

    :raises AdoptError: when ``config_dir`` is not a certbot configuration
        directory.
    """
    config_dir = os.path.abspath(config_dir)
    if not os.path.isdir(config_dir):
        raise AdoptError(f"--config-dir {config_dir} is not a directory")
    if not any(os.path.isdir(os.path.join(config_dir, d)) for d in ("accounts", "renewal")):
        raise AdoptError(f"--config-dir {config_dir} has neither accounts/ nor renewal/: "
                         f"not a certbot configuration directory")
    plan = Plan(client="certbot", root=config_dir, gateway=gateway, keys_dir=importer.keys_dir)
    known = _plan_accounts(plan, config_dir, importer)
    renewal = os.path.join(config_dir, "renewal")
    names = sorted(os.listdir(renewal)) if os.path.isdir(renewal) else []
    for name in names:
        path = os.path.join(renewal, name)
        if not name.endswith(".conf") or not os.path.isfile(path):
            continue
        account = _plan_server_line(plan, path, "renewalparams", required=True)
        if account is not None and account not in known:
            plan.notes.append(f"renewal/{name} names account {account}, which is not under "
                              f"accounts/: certbot will not find it")
    cli_ini = os.path.join(config_dir, "cli.ini")
    if os.path.isfile(cli_ini):
        _plan_server_line(plan, cli_ini, None, required=False)
    plan.certificates += certbot_certificates(plan, config_dir)
    return plan
