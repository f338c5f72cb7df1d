"""
What an adoption changes, and doing or undoing it without loss.

An adoption is planned in full before anything is touched, so that
``--dry-run`` prints exactly what a real run would do and a file that cannot
be parsed stops only its own change.  Applying

* backs every edited file up beside itself (``<file>.acme-gateway-backup``,
  a copy with the original's bytes, mode and times) before replacing it
  atomically; a file edited again by a later run keeps its first backup,
  which is the original;
* records every edited and created file in a manifest at the installation's
  root (``.acme-gateway-adopt.json``), so that ``--undo`` can put the
  backups back and remove what adoption created: the installation returns
  byte for byte to what it was.  Paths below the root are recorded relative
  to it, so that undoing a copied or moved installation touches that copy
  and nothing else; a file outside the root (dehydrated's ``--config`` in
  ``/etc``) is recorded by its absolute path and undone only where the
  installation was adopted.  What an undo could not do stays in the
  manifest, so that it can be run again;
* writes imported keys into the gateway's key store with mode 0600.  Undo
  leaves them there: a key in the store changes nothing by itself, and the
  gateway may already be serving the account with it.

A second run plans nothing that is already done, so it changes nothing.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
from typing import Dict, List, Optional, Union

import attrs

#: The suffix of a backup beside the file it saves.
BACKUP_SUFFIX = ".acme-gateway-backup"

#: The manifest at an installation's root.
MANIFEST_NAME = ".acme-gateway-adopt.json"

#: Configuration files are small; anything larger is not one.
MAX_FILE_SIZE = 1024 * 1024


class AdoptError(Exception):
    """
    The installation cannot be adopted at all (its directory is missing, the
    gateway URL is unusable); nothing was changed.
    """


@attrs.frozen
class EditFile:
    """
    Replace the content of an existing file.

    :ivar summary: one line saying what changes, for the report.
    """

    path: str
    old: bytes = attrs.field(repr=False)
    new: bytes = attrs.field(repr=False)
    summary: str


@attrs.frozen
class CreateFile:
    """
    Create a file (and any missing parent directory) that did not exist.
    """

    path: str
    data: bytes = attrs.field(repr=False)
    mode: int
    summary: str


@attrs.frozen
class ImportKey:
    """
    Write an account key into the gateway's key store (never undone).

    :ivar source: the file the key was read from.
    """

    path: str
    data: bytes = attrs.field(repr=False)
    thumbprint: str
    label: str
    source: str


Change = Union[EditFile, CreateFile, ImportKey]


@attrs.frozen
class Problem:
    """
    A file adoption could not use, left untouched, and why.
    """

    path: str
    reason: str


@attrs.define
class Plan:
    """
    Everything one adoption would do to one installation.

    :ivar root: the installation's root directory (where the manifest goes).
    :ivar notes: things the operator should know that change nothing.
    :ivar certificates: the certificates the client holds
        (`gateway.adopt.certificates.HeldCertificate`), for the gateway's
        renewal inventory; recorded only when the command is given the
        gateway's ``--state``.
    """

    client: str
    root: str
    gateway: str
    keys_dir: Optional[str]
    changes: List[Change] = attrs.field(factory=list)
    problems: List[Problem] = attrs.field(factory=list)
    notes: List[str] = attrs.field(factory=list)
    certificates: list = attrs.field(factory=list)

    def problem(self, path: str, reason: str) -> None:
        self.problems.append(Problem(path=path, reason=reason))

    @property
    def imports(self) -> List[ImportKey]:
        return [c for c in self.changes if isinstance(c, ImportKey)]


def read_small(path: str) -> bytes:
    """
    The bytes of a configuration or key file.

    :raises OSError: when it cannot be read.
    :raises ValueError: when it is too large to be one.
    """
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_SIZE + 1)
    if len(data) > MAX_FILE_SIZE:
        raise ValueError(f"larger than {MAX_FILE_SIZE} bytes, not a configuration file")
    return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------


def _shown(path: str, root: str) -> str:
    """
    ``path`` relative to the installation root when it lies below it.
    """
    relative = os.path.relpath(path, root)
    return path if relative.startswith("..") else relative


def _diff(change: EditFile) -> List[str]:
    old = change.old.decode("utf-8", "replace").splitlines()
    new = change.new.decode("utf-8", "replace").splitlines()
    lines = []
    for line in difflib.unified_diff(old, new, lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        lines.append(f"      {line}")
    return lines


def describe(plan: Plan, dry_run: bool) -> str:
    """
    The report of a plan: every change (edits with their diff), every problem
    and note, and what to do next.
    """
    would = "would " if dry_run else ""
    only_keys = plan.client == "keys import"
    if only_keys:
        lines = [f"key store {plan.keys_dir}"]
    else:
        lines = [f"{plan.client} installation {plan.root} -> gateway {plan.gateway}"]
    for change in plan.changes:
        if isinstance(change, ImportKey):
            lines.append(f"  {would}import key {change.thumbprint} ({change.label}) "
                         f"from {_shown(change.source, plan.root)} as {change.path}")
        elif isinstance(change, CreateFile):
            lines.append(f"  {would}create {_shown(change.path, plan.root)} ({change.summary})")
        else:
            lines.append(f"  {would}edit {_shown(change.path, plan.root)} ({change.summary}); "
                         f"backup {os.path.basename(change.path)}{BACKUP_SUFFIX}")
            lines.extend(_diff(change))
    for note in plan.notes:
        lines.append(f"  note: {note}")
    for problem in plan.problems:
        lines.append(f"  problem: {_shown(problem.path, plan.root)}: {problem.reason}; left untouched")
    count = len(plan.changes)
    if not count and plan.problems:
        lines.append("nothing imported" if only_keys else "nothing changed")
    elif not count:
        lines.append("nothing to import: every key is in the store already" if only_keys
                     else "nothing to change: the installation already uses the gateway")
    elif dry_run:
        lines.append(f"dry run: {count} change(s) planned, nothing was changed")
    elif only_keys:
        lines.append(f"{count} key(s) imported")
    else:
        lines.append(f"{count} change(s) made; undo with the same command and --undo")
    if plan.imports and not dry_run:
        lines.append("restart the gateway so that it loads the imported key(s) "
                     "(the key store is read at start-up)")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Applying.
# --------------------------------------------------------------------------


def _stored(path: str, root: str) -> str:
    """
    How the manifest records ``path``: relative to ``root`` when it lies
    below it, else absolute.
    """
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return os.path.abspath(path) if relative.split(os.sep)[0] == os.pardir else relative


@attrs.define
class Manifest:
    """
    The record of what adoption did to one installation, for ``--undo``.

    Entries name files as `_stored` does (relative to the root, or absolute
    outside it).

    :ivar root: the installation's root, where the manifest is now.
    :ivar adopted_root: where the installation was when it was adopted
        (``None`` in a manifest of format 1, which recorded absolute paths).
    """

    path: str
    root: str
    client: str
    adopted_root: Optional[str] = None
    format: int = 2
    edited: List[dict] = attrs.field(factory=list)
    created: List[dict] = attrs.field(factory=list)
    created_dirs: List[str] = attrs.field(factory=list)

    @classmethod
    def load(cls, root: str, client: str) -> "Manifest":
        root = os.path.abspath(root)
        path = os.path.join(root, MANIFEST_NAME)
        if not os.path.exists(path):
            return cls(path=path, root=root, client=client, adopted_root=root)
        with open(path) as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return cls(path=path, root=root, client=data.get("client", client),
                   adopted_root=data.get("root"), format=data.get("format", 1),
                   edited=data.get("edited", []), created=data.get("created", []),
                   created_dirs=data.get("created_dirs", []))

    def resolve(self, stored: str) -> str:
        """
        The path an entry names, for this installation where it is now.
        """
        return os.path.normpath(os.path.join(self.root, stored))

    def store(self, path: str) -> str:
        return _stored(path, self.root)

    def backup_of(self, path: str) -> Optional[str]:
        for entry in self.edited:
            if self.resolve(entry["path"]) == os.path.normpath(path):
                return self.resolve(entry["backup"])
        return None

    def empty(self) -> bool:
        return not (self.edited or self.created or self.created_dirs)

    def save(self) -> None:
        data = {"format": self.format, "client": self.client, "root": self.adopted_root,
                "edited": self.edited, "created": self.created, "created_dirs": self.created_dirs}
        temporary = self.path + ".tmp"
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(temporary, self.path)


def _make_dirs(directory: str, mode: int, created: Optional[List[str]]) -> None:
    """
    ``os.makedirs`` that remembers, outermost first, each directory it made.
    """
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for path in reversed(missing):
        os.mkdir(path, mode)
        os.chmod(path, mode)  # whatever the umask
        if created is not None:
            created.append(path)


def _write_new(path: str, data: bytes, mode: int) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _backup_name(path: str) -> str:
    candidate, n = path + BACKUP_SUFFIX, 2
    while os.path.lexists(candidate):
        candidate, n = f"{path}{BACKUP_SUFFIX}-{n}", n + 1
    return candidate


def _replace(path: str, data: bytes) -> None:
    """
    Replace the content of ``path`` atomically, keeping its mode and, where
    permitted, its owner.
    """
    info = os.stat(path)
    temporary = path + ".acme-gateway-tmp"
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)
    os.chmod(temporary, info.st_mode & 0o7777)
    try:
        os.chown(temporary, info.st_uid, info.st_gid)
    except OSError:
        pass
    os.replace(temporary, path)


def apply(plan: Plan) -> None:
    """
    Carry out ``plan``: keys first (so that a later failure still leaves the
    gateway able to serve the account), then new files, then edits, each
    recorded in the manifest as soon as it is done.

    :raises OSError: when a file cannot be written; what was done so far is
        in the manifest, so ``--undo`` still works.
    """
    undoable = [c for c in plan.changes if not isinstance(c, ImportKey)]
    for key in plan.imports:
        _make_dirs(os.path.dirname(key.path), 0o700, None)
        _write_new(key.path, key.data, 0o600)
    if not undoable:
        return
    manifest = Manifest.load(plan.root, plan.client)
    for change in undoable:
        if isinstance(change, CreateFile):
            made: List[str] = []
            _make_dirs(os.path.dirname(change.path), 0o700, made)
            manifest.created_dirs.extend(manifest.store(d) for d in made)
            _write_new(change.path, change.data, change.mode)
            manifest.created.append({"path": manifest.store(change.path),
                                     "sha256": sha256(change.data)})
        else:
            stored = manifest.store(change.path)
            backup = manifest.backup_of(change.path)
            if backup is None or not os.path.exists(backup):
                if backup is not None:
                    manifest.edited = [e for e in manifest.edited
                                       if manifest.resolve(e["path"]) != manifest.resolve(stored)]
                backup = _backup_name(change.path)
                shutil.copy2(change.path, backup)
                manifest.edited.append({"path": stored, "backup": manifest.store(backup),
                                        "sha256": sha256(change.new)})
            else:
                for entry in manifest.edited:
                    if manifest.resolve(entry["path"]) == manifest.resolve(stored):
                        entry["sha256"] = sha256(change.new)
            _replace(change.path, change.new)
        manifest.save()


def _same_place(one: str, other: str) -> bool:
    try:
        return os.path.samefile(one, other)
    except OSError:
        return os.path.realpath(one) == os.path.realpath(other)


def _where(manifest: Manifest, stored: str):
    """
    The file an entry names, or ``(None, why)`` when undo must not touch it:
    an absolute path (outside the root) in an installation that is no
    longer where it was adopted, or in a manifest of format 1 (absolute
    paths only), where a copy cannot be told from the original.
    """
    if not os.path.isabs(stored):
        path = manifest.resolve(stored)
        if _stored(path, manifest.root) != os.path.normpath(stored):
            return None, f"{stored} points outside {manifest.root}; left as it is"
        return path, None
    if manifest.format < 2:
        if _stored(stored, manifest.root) != stored:
            return stored, None
        return None, (f"{stored} lies outside {manifest.root} (a manifest of an earlier "
                      f"acme-gateway, with absolute paths: if this installation was copied or "
                      f"moved, undo it where it was adopted); left as it is")
    if manifest.adopted_root is not None and not _same_place(manifest.adopted_root, manifest.root):
        return None, (f"{stored} lies outside the installation, which was adopted at "
                      f"{manifest.adopted_root}: left as it is (undo it there, or put its "
                      f"backup back by hand)")
    return stored, None


def undo(root: str, client: str) -> List[str]:
    """
    Restore every backup the manifest at ``root`` names and remove every file
    and directory adoption created.  The manifest goes when everything was
    undone; otherwise it keeps what was not, so that undo can run again once
    the problem is fixed.

    :return: report lines; a line with ``problem:`` means something was not
        undone.
    :raises AdoptError: when there is no manifest (nothing to undo).
    """
    path = os.path.join(root, MANIFEST_NAME)
    if not os.path.exists(path):
        raise AdoptError(f"{root} has no {MANIFEST_NAME}: nothing was adopted there, "
                         f"or it was undone already")
    try:
        manifest = Manifest.load(root, client)
    except (OSError, ValueError) as error:
        raise AdoptError(f"cannot read {path}: {error}")
    lines: List[str] = []
    kept_edited: List[Dict[str, str]] = []
    kept_created: List[Dict[str, str]] = []
    for entry in reversed(manifest.edited):
        target, why = _where(manifest, entry["path"])
        backup, backup_why = _where(manifest, entry["backup"])
        if target is None or backup is None:
            lines.append(f"  problem: {why or backup_why}")
            kept_edited.insert(0, entry)
            continue
        if not os.path.exists(backup):
            lines.append(f"  problem: backup {backup} is missing; {target} left as it is")
            kept_edited.insert(0, entry)
            continue
        if os.path.exists(target) and sha256(read_small(target)) != entry.get("sha256"):
            lines.append(f"  note: {target} changed since adoption (the client rewrote it?); "
                         f"restoring the backup anyway")
        os.replace(backup, target)
        lines.append(f"  restored {target}")
    for entry in reversed(manifest.created):
        target, why = _where(manifest, entry["path"])
        if target is None:
            lines.append(f"  problem: {why}")
            kept_created.insert(0, entry)
            continue
        if os.path.lexists(target):
            os.unlink(target)
            lines.append(f"  removed {target}")
    kept_dirs: List[str] = []
    for stored in reversed(manifest.created_dirs):
        directory, why = _where(manifest, stored)
        if directory is None:
            lines.append(f"  problem: {why}")
            kept_dirs.insert(0, stored)
            continue
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass
        except OSError:
            lines.append(f"  note: {directory} is not empty (files were added since); kept")
    manifest.edited, manifest.created, manifest.created_dirs = kept_edited, kept_created, kept_dirs
    if manifest.empty():
        os.unlink(path)
        lines.append("undone; keys imported into the key store were left there")
    else:
        manifest.save()
        lines.append(f"not everything was undone: {MANIFEST_NAME} keeps what is left; fix the "
                     f"problems above and run --undo again")
    return lines
