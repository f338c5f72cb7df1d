"""
Putting account keys into the gateway's key store.

Imported keys are written exactly as the client kept them (certbot's JWK
JSON, dehydrated's and acme.sh's PEM), so an operator can compare them with
the source, and with mode 0600: they are private keys, and the gateway
refuses key files others can read.  Their names say where they came from,
``<client>-<host>-<account>``, because after a migration the key store is
the one place holding every machine's account, and an admin must be able to
tell which one a key belongs to.

A key whose thumbprint is already in the store (under any name) is not
imported again, which keeps adoption idempotent.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Dict, List, Optional, Tuple

import attrs

from gateway.adopt.changes import ImportKey, Plan, read_small
from gateway.keys.jose import AccountKey
from gateway.keys.keystore import KeyFileError, KeyStore, KeyStoreError, parse_key_bytes


def host_label(host: Optional[str] = None) -> str:
    """
    The label naming this machine in imported key files: ``host`` (default:
    this machine's short host name), reduced to characters safe in a file
    name.
    """
    host = host or socket.gethostname().split(".")[0] or "host"
    return re.sub(r"[^A-Za-z0-9.-]+", "_", host).strip("._-")[:63] or "host"


def _safe(text: str, limit: int = 64) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:limit] or "key"


def read_key(path: str) -> Tuple[bytes, Optional[AccountKey]]:
    """
    A key file's bytes and its key (``None`` when it holds no private key).

    :raises KeyFileError: when it looks like a key but cannot be used.
    :raises OSError, ValueError: when it cannot be read.
    """
    data = read_small(path)
    return data, parse_key_bytes(data, path)


@attrs.define
class KeyImporter:
    """
    Plans the import of keys into one key store, remembering what the store
    already holds and what this run already planned.

    :ivar keys_dir: the key store directory (it may not exist yet).
    """

    keys_dir: str
    host: str
    _present: Dict[str, str] = attrs.field(factory=dict)
    _names: set = attrs.field(factory=set)

    @classmethod
    def for_store(cls, keys_dir: str, host: Optional[str] = None) -> "KeyImporter":
        """
        An importer for ``keys_dir``, which is read once for the thumbprints
        it already holds.
        """
        importer = cls(keys_dir=os.path.abspath(keys_dir), host=host_label(host))
        if os.path.isdir(keys_dir):
            try:
                store = KeyStore.load(keys_dir, allow_shared=True)
            except KeyStoreError:
                store = None
            if store is not None:
                for loaded in store.loaded:
                    importer._present[loaded.key.thumbprint] = loaded.path
            importer._names.update(os.listdir(keys_dir))
        return importer

    def where(self, thumbprint: str) -> Optional[str]:
        """
        The file holding ``thumbprint`` in the store, or planned for it.
        """
        return self._present.get(thumbprint)

    def _name(self, stem: str, extension: str) -> str:
        name, n = f"{stem}{extension}", 2
        while name in self._names:
            name, n = f"{stem}-{n}{extension}", n + 1
        self._names.add(name)
        return name

    def plan(self, plan: Plan, source: str, data: bytes, key: AccountKey,
             client: str, account: str) -> Optional[ImportKey]:
        """
        Add the import of ``key`` (read from ``source`` as ``data``) to
        ``plan``, named ``<client>-<host>-<account>``, unless the store
        already has it.
        """
        if key.thumbprint in self._present:
            return None
        extension = ".json" if data.lstrip().startswith(b"{") else ".pem"
        name = self._name(f"{_safe(client)}-{self.host}-{_safe(account)}", extension)
        change = ImportKey(path=os.path.join(self.keys_dir, name), data=data,
                           thumbprint=key.thumbprint, label=key.label, source=source)
        self._present[key.thumbprint] = change.path
        plan.changes.append(change)
        return change

    def plan_file(self, plan: Plan, source: str, client: str, account: str) -> Optional[AccountKey]:
        """
        Read the key file ``source`` and plan its import; a file that cannot
        be used is a problem of ``plan``.

        :return: the key, or ``None`` when it could not be read.
        """
        try:
            data, key = read_key(source)
        except KeyFileError as error:
            plan.problem(source, f"unusable key: {error.reason}")
            return None
        except (OSError, ValueError) as error:
            plan.problem(source, f"cannot read: {getattr(error, 'strerror', None) or error}")
            return None
        if key is None:
            plan.problem(source, "holds no private key")
            return None
        self.plan(plan, source, data, key, client, account)
        return key


def _files_below(path: str) -> List[str]:
    if os.path.isfile(path):
        return [path]
    found: List[str] = []
    for directory, subdirectories, files in os.walk(path):
        subdirectories.sort()
        found.extend(os.path.join(directory, name) for name in sorted(files))
    return found


def plan_key_import(paths: List[str], keys_dir: str, host: Optional[str] = None) -> Plan:
    """
    ``acme-gateway keys import PATH…``: every private key in the files (and
    below the directories) ``paths``, named ``imported-<host>-<file>-<first
    12 characters of the thumbprint>``.  Files without a private key below a
    directory are passed over silently; a named file without one is a
    problem.
    """
    plan = Plan(client="keys import", root=os.getcwd(), gateway="(key store only)",
                keys_dir=os.path.abspath(keys_dir))
    importer = KeyImporter.for_store(keys_dir, host)
    for path in paths:
        if not os.path.exists(path):
            plan.problem(path, "does not exist")
            continue
        named = os.path.isfile(path)
        for source in _files_below(path):
            try:
                data, key = read_key(source)
            except KeyFileError as error:
                plan.problem(source, f"unusable key: {error.reason}")
                continue
            except (OSError, ValueError) as error:
                if named:
                    plan.problem(source, f"cannot read: {getattr(error, 'strerror', None) or error}")
                continue
            if key is None:
                if named:
                    plan.problem(source, "holds no private key")
                continue
            existing = importer.where(key.thumbprint)
            if existing is not None:
                plan.notes.append(f"{source}: key {key.thumbprint} is already in the store as {existing}")
                continue
            stem = os.path.splitext(os.path.basename(source))[0]
            importer.plan(plan, os.path.abspath(source), data, key, "imported",
                          f"{_safe(stem, 40)}-{key.thumbprint[:12]}")
    return plan
