"""
Adopting an acme.sh installation (``--home``, usually ``~/.acme.sh``).

Written from acme.sh's documented on-disk layout; no acme.sh is run by the
tests (they adopt hand-built trees):

* ``ca/<host>/<path>/account.key`` (acme.sh 3.x), or ``ca/<host>/account.key``
  (2.x, the v1 era; 3.x moves it into the 3.x place itself), where
  ``<host>`` and ``<path>`` come from the directory URL as acme.sh cuts it:
  the host *without* its port, the path without its leading slash;
  very old versions kept one ``account.key`` in the home directory;
* ``<domain>/<domain>.conf`` (``<domain>_ecc/`` for ECDSA certificates)
  with ``Le_API='<directory URL>'``, the server each certificate renews
  against;
* ``account.conf``, maybe with ``DEFAULT_ACME_SERVER`` and
  ``ACCOUNT_KEY_PATH``.

Adoption imports every account key, copies the account key of the server
the certificates used to the gateway's CA directory (only ``account.key``:
acme.sh registers it again through the gateway, which answers that the key
already has an account, and writes fresh ``ca.conf`` and ``account.json``
naming the gateway instead of the dead v1 URL), and rewrites ``Le_API`` of
every domain and ``DEFAULT_ACME_SERVER``.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Dict, List, Optional, Tuple

from gateway.adopt import lines as textlines
from gateway.adopt.certificates import acmesh_certificates
from gateway.adopt.changes import AdoptError, CreateFile, EditFile, Plan, read_small
from gateway.adopt.keyimport import KeyImporter, read_key
from gateway.keys.jose import AccountKey
from gateway.keys.keystore import KeyFileError

#: Directories of the acme.sh home that are not certificates.
NOT_DOMAINS = {"ca", "deploy", "dnsapi", "notify"}


def _squeeze(text: str) -> str:
    return re.sub("/+", "/", text)


def server_host_and_path(url: str) -> Tuple[str, str]:
    """
    The ``<host>`` and ``<path>`` acme.sh derives from a directory URL
    (``http://127.0.0.1:4000/directory`` → ``127.0.0.1``, ``directory``).
    """
    fields = url.split(":")
    host_field = _squeeze(fields[1] if len(fields) > 1 else "").split("/")
    host = host_field[1] if len(host_field) > 1 else ""
    path_field = _squeeze(":".join(fields[1:])).split("/")
    return host, "/".join(path_field[2:])


def ca_dirs(ca_home: str, url: str) -> List[str]:
    """
    Where acme.sh keeps the account for ``url``: the 3.x place, then the
    2.x one.
    """
    host, path = server_host_and_path(url)
    places = [os.path.join(ca_home, host, path)] if path else []
    places.append(os.path.join(ca_home, host))
    return [os.path.normpath(p) for p in places]


def _shell_settings(plan: Plan, path: str, name: str):
    """
    ``(data, lines, settings)`` of one shell-style file, or ``None`` (a
    problem) when it cannot be parsed.
    """
    try:
        data = read_small(path)
        lines = textlines.split_lines(data)
        return data, lines, textlines.find_shell(lines, name)
    except (OSError, ValueError) as error:
        plan.problem(path, f"cannot parse: {getattr(error, 'strerror', None) or error}")
        return None


def _plan_setting(plan: Plan, path: str, name: str, add: bool) -> List[str]:
    """
    Point every ``name=`` of the file at the gateway (adding one when
    ``add`` and there is none); the values it had.
    """
    parsed = _shell_settings(plan, path, name)
    if parsed is None:
        return []
    data, lines, settings = parsed
    changed = lines
    for setting in settings:
        if setting.value != plan.gateway:
            changed = textlines.with_value(changed, setting,
                                           textlines.shell_word(plan.gateway, setting.quote))
    if settings:
        summary = f"{name} {settings[-1].value} -> gateway"
    elif add:
        changed = textlines.with_line_after(lines, None, f"{name}='{plan.gateway}'")
        summary = f"{name} added: the file named no server"
    if changed is not lines:
        plan.changes.append(EditFile(path=path, old=data, new=textlines.join_lines(changed),
                                     summary=summary))
    return [s.value for s in settings]


def _domain_confs(home: str) -> List[str]:
    found = []
    for name in sorted(os.listdir(home)):
        directory = os.path.join(home, name)
        if name in NOT_DOMAINS or name.startswith(".") or not os.path.isdir(directory):
            continue
        domain = name[:-4] if name.endswith("_ecc") else name
        conf = os.path.join(directory, f"{domain}.conf")
        if os.path.isfile(conf):
            found.append(conf)
    return found


def _key_files(home: str, ca_home: str) -> List[str]:
    found = [os.path.join(home, "account.key")] if os.path.isfile(os.path.join(home, "account.key")) else []
    for directory, subdirectories, files in os.walk(ca_home):
        subdirectories.sort()
        if "account.key" in files:
            found.append(os.path.join(directory, "account.key"))
    return found


def _plan_copy(plan: Plan, ca_home: str, servers: List[str], keys: Dict[str, AccountKey]) -> None:
    """
    Copy the account key the certificates' servers used to the gateway's
    CA directory, in the layout it was found in.
    """
    sources: Dict[str, Tuple[str, bool]] = {}
    for server in servers:
        places = ca_dirs(ca_home, server)
        for place in places:
            key = keys.get(os.path.join(place, "account.key"))
            if key is not None:
                # Found in the 3.x place: the copy goes to the 3.x place too.
                sources.setdefault(key.thumbprint, (place, len(places) == 2 and place == places[0]))
                break
    gateway_places = ca_dirs(ca_home, plan.gateway)
    present = [key for key in (keys.get(os.path.join(p, "account.key")) for p in gateway_places)
               if key is not None]
    if present:
        if sources and present[0].thumbprint not in sources:
            plan.problem(gateway_places[0], "the gateway's CA directory holds another account key")
        return
    if not sources:
        plan.notes.append(f"no account key found for {', '.join(sorted(set(servers))) or 'any server'}: "
                          f"acme.sh will create a new key, which the gateway must hold")
        return
    if len(sources) > 1:
        plan.problem(ca_home, "the certificates use more than one account "
                              f"({', '.join(place for place, _ in sources.values())}); copy the one "
                              f"to use to {gateway_places[0]}/account.key yourself")
        return
    ((place, new_layout),) = sources.values()
    target = gateway_places[0] if new_layout else gateway_places[-1]
    source = os.path.join(place, "account.key")
    plan.changes.append(CreateFile(path=os.path.join(target, "account.key"), data=read_small(source),
                                   mode=stat.S_IMODE(os.stat(source).st_mode),
                                   summary=f"account key of {os.path.relpath(place, ca_home)}"))


def plan_acmesh(home: str, gateway: str, importer: KeyImporter) -> Plan:
    """
    The adoption of the acme.sh installation at ``home``.

    :raises AdoptError: when ``home`` is not an acme.sh home.
    """
    home = os.path.abspath(home)
    if not os.path.isdir(home):
        raise AdoptError(f"--home {home} is not a directory")
    account_conf = os.path.join(home, "account.conf")
    if not (os.path.isfile(account_conf) or os.path.isdir(os.path.join(home, "ca"))):
        raise AdoptError(f"--home {home} has neither account.conf nor ca/: not an acme.sh home")
    plan = Plan(client="acme.sh", root=home, gateway=gateway, keys_dir=importer.keys_dir)
    ca_home = os.path.join(home, "ca")
    servers: List[str] = []
    key_path_setting = None
    default_server: Optional[str] = None
    if os.path.isfile(account_conf):
        defaults = _plan_setting(plan, account_conf, "DEFAULT_ACME_SERVER", add=False)
        servers += defaults
        default_server = defaults[-1] if defaults else None
        for name in ("CA_HOME", "ACCOUNT_KEY_PATH"):
            parsed = _shell_settings(plan, account_conf, name)
            if parsed and parsed[2]:
                value = parsed[2][-1].value
                if name == "CA_HOME":
                    ca_home = value
                else:
                    key_path_setting = value
    confs: List[Tuple[str, Optional[str]]] = []
    for conf in _domain_confs(home):
        named = _plan_setting(plan, conf, "Le_API", add=True)
        servers += named
        confs.append((conf, named[-1] if named else default_server))
    keys: Dict[str, AccountKey] = {}
    paths = _key_files(home, ca_home) + ([key_path_setting] if key_path_setting else [])
    for path in paths:
        try:
            _, key = read_key(path)
        except (OSError, ValueError, KeyFileError):
            key = None
        if key is not None:
            keys[os.path.normpath(path)] = key
        relative = os.path.relpath(os.path.dirname(path), ca_home)
        where = "home" if relative.startswith("..") else relative.replace(os.sep, "_")
        suffix = f"-{key.thumbprint[:12]}" if key is not None else ""
        importer.plan_file(plan, path, "acme.sh", f"{where}{suffix}")

    def key_of_server(server: Optional[str]) -> Optional[AccountKey]:
        if key_path_setting:
            return keys.get(os.path.normpath(key_path_setting))
        places = ca_dirs(ca_home, server) if server else []
        for place in places + [home]:
            key = keys.get(os.path.normpath(os.path.join(place, "account.key")))
            if key is not None:
                return key
        return None

    plan.certificates += acmesh_certificates(plan, confs, key_of_server)
    if key_path_setting:
        plan.notes.append(f"account.conf sets ACCOUNT_KEY_PATH={key_path_setting}: acme.sh signs "
                          f"with that key for every server, so it was imported and nothing copied")
        return plan
    _plan_copy(plan, ca_home, [s for s in servers if s != gateway], keys)
    return plan
