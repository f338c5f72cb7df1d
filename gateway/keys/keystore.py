"""
The account key store: the private keys of the legacy clients' v1 accounts.

A migrating client keeps signing with the key it registered at the old v1 CA,
and the gateway must sign upstream v2 requests with that same key (the CA ties
key authorizations to its thumbprint).  The operator therefore mounts a
directory (``--keys DIR``) holding those keys, very often simply a client's
account directory as it is on disk: certbot's ``accounts/`` tree (JWK
``private_key.json``), dehydrated's ``account_key.pem``, acme.sh's
``account.key``, or a Kubernetes Secret (symlinks into ``..data/``).

Every file below the directory is examined once (by real path) and sorted into
one of three piles, because an operator must be able to see at a glance why a
key they expected is missing:

* *loaded*: a usable private key, indexed by RFC 7638 thumbprint;
* *problems*: something that looks like a key but cannot be used (encrypted,
  corrupt, too short, wrong curve, unreadable, or readable by group or
  others unless ``--allow-shared-key-files``) -- reported with a reason;
* *skipped*: files that hold no private key at all (registration JSON, public
  keys, certificates, configuration) -- noted, because they are expected in a
  client's account directory.

Nothing about a single file is fatal: one bad file must not keep the gateway
from serving every other account.  No message produced here ever contains key
material; reasons are fixed texts, never the text of a parser's exception
(josepy, for one, puts private members into some of its error messages).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
from typing import Dict, Iterable, List, Optional, Tuple, Union, cast

import attrs
import josepy
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ed448, ed25519

from gateway.keys.jose import AccountKey, UnsupportedKey

#: Permission bits that let a user other than the file's owner at a key: a
#: private key readable by a group or by everyone is as good as published
#: to every process and user on the machine (or in the pod) that has them.
SHARED_MODE_BITS = 0o077

#: Files larger than this cannot be a key (a 16384-bit RSA JWK is ~20 KiB);
#: refusing them keeps a stray archive from being read into memory.
MAX_KEY_FILE_SIZE = 1024 * 1024

#: The path under which `KeyStore.from_keys` files its keys.
MEMORY_PATH = "<memory>"

_SUPPORTED_HINT = "ACME account keys must be RSA (2048 bits or more) or EC P-256/P-384"

_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,40})-----")
_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]{1,40})-----\r?\n.*?-----END \1-----", re.DOTALL
)

#: PEM labels whose body ``cryptography`` loads without a password.
_PRIVATE_LABELS = {b"RSA PRIVATE KEY", b"PRIVATE KEY", b"EC PRIVATE KEY"}

#: Extensions that promise a key: such a file with unrecognizable content is a
#: problem (a broken key) rather than something to skip.
_KEY_EXTENSIONS = (".pem", ".key")

_JWK_CURVES = ("P-256", "P-384")


class KeyStoreError(ValueError):
    """
    The key store directory itself cannot be used (missing, not a directory,
    unreadable): the only condition that stops loading altogether.
    """


class KeyFileError(ValueError):
    """
    A file that looks like a private key but cannot be used.

    :ivar reason: a short human explanation, free of key material.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen(repr=False)
class LoadedKey:
    """
    A usable key and where it was found.

    :ivar key: the account key.
    :ivar path: the file it was first (in sorted order) loaded from.
    :ivar other_paths: further files holding the very same key, so that an
        operator tidying the store sees every copy.
    """

    key: AccountKey
    path: str
    other_paths: Tuple[str, ...] = ()

    def __repr__(self) -> str:
        # Written by hand so that the private key never reaches a repr.
        return (
            f"LoadedKey(thumbprint={self.key.thumbprint!r}, label={self.key.label!r}, "
            f"path={self.path!r}, other_paths={self.other_paths!r})"
        )


@attrs.frozen
class KeyFileProblem:
    """
    A file that looks like a key but cannot be used, and why.
    """

    path: str
    reason: str


@attrs.frozen
class SkippedFile:
    """
    A file that holds no private key, and what it is instead.
    """

    path: str
    reason: str


@attrs.frozen
class _Skip:
    """
    The verdict "not a key", with its reason; internal to the parsers.
    """

    reason: str


# --------------------------------------------------------------------------
# Parsing: bytes in, a key, a skip verdict, or KeyFileError out.  Pure.
# --------------------------------------------------------------------------


def _clean(text: str, limit: int = 60) -> str:
    """
    Make untrusted text (a JWK's ``crv``, a PEM label) safe to put in one line
    of a report: printable only, and short.
    """
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _account_key(private_key: object) -> AccountKey:
    """
    Wrap a parsed private key, turning every reason ACME cannot use it into a
    `KeyFileError` that names the key type plainly.
    """
    if isinstance(private_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        name = "Ed25519" if isinstance(private_key, ed25519.Ed25519PrivateKey) else "Ed448"
        raise KeyFileError(f"{name} keys are not supported; {_SUPPORTED_HINT}")
    if isinstance(private_key, dsa.DSAPrivateKey):
        raise KeyFileError(f"DSA keys are not supported; {_SUPPORTED_HINT}")
    try:
        return AccountKey.from_private_key(private_key)  # type: ignore[arg-type]
    except UnsupportedKey as e:
        raise KeyFileError(str(e))


def _parse_pem(data: bytes) -> Union[AccountKey, _Skip]:
    """
    Find the one private key among the PEM blocks of ``data``.  Other blocks
    (``EC PARAMETERS`` written by ``openssl ecparam -genkey``, certificates,
    public keys) are ignored, so a key with its parameters or a key bundled
    with its certificate still loads.
    """
    blocks = [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(data)]
    complete = {label for label, _ in blocks}
    for m in _PEM_BEGIN.finditer(data):
        label = m.group(1)
        if label not in complete and label.endswith(b"PRIVATE KEY"):
            raise KeyFileError(f"truncated PEM: {label.decode()} block has no END line")

    keys = [(label, block) for label, block in blocks if label.endswith(b"PRIVATE KEY")]
    if not keys:
        labels = sorted({label.decode() for label, _ in blocks})
        if not labels:
            raise KeyFileError("corrupt PEM: no complete BEGIN/END block")
        return _Skip(f"no private key (PEM: {', '.join(labels)})")
    if len(keys) > 1:
        raise KeyFileError(
            f"{len(keys)} private keys in one file; put each key in its own file"
        )

    label, block = keys[0]
    if label == b"ENCRYPTED PRIVATE KEY":
        raise KeyFileError("encrypted private key; the gateway needs it unencrypted")
    if label not in _PRIVATE_LABELS:
        raise KeyFileError(
            f"unsupported PEM block {_clean(label.decode())}; expected RSA PRIVATE KEY, "
            "PRIVATE KEY or EC PRIVATE KEY"
        )
    try:
        private_key = serialization.load_pem_private_key(block, password=None)
    except TypeError:
        # cryptography's way of saying "this needs a password".
        raise KeyFileError("encrypted private key; the gateway needs it unencrypted")
    except UnsupportedAlgorithm:
        raise KeyFileError(f"unsupported key algorithm; {_SUPPORTED_HINT}")
    except ValueError:
        raise KeyFileError(f"corrupt PEM: the {label.decode()} block cannot be decoded")
    return _account_key(private_key)


def _parse_jwk(obj: dict) -> Union[AccountKey, _Skip]:
    """
    Load a JWK with private members (certbot's ``private_key.json``).
    """
    kty = obj.get("kty")
    if "d" not in obj:
        return _Skip(f"public JWK ({_clean(str(kty))}), no private members")
    if kty == "EC":
        crv = obj.get("crv")
        if crv not in _JWK_CURVES:
            raise KeyFileError(
                f"EC curve {_clean(str(crv))} is not supported (P-256 or P-384)"
            )
    elif kty == "OKP":
        raise KeyFileError(
            f"OKP ({_clean(str(obj.get('crv')))}) keys are not supported; {_SUPPORTED_HINT}"
        )
    elif kty != "RSA":
        raise KeyFileError(
            f"JWK key type {_clean(str(kty))} is not supported; {_SUPPORTED_HINT}"
        )
    try:
        jwk = cast(josepy.JWK, josepy.JWK.from_json(obj))
    except Exception:
        # josepy and cryptography fail in many ways on bad members (missing,
        # mistyped, inconsistent numbers); the messages may quote private
        # members, so none of them is passed on.
        raise KeyFileError(f"corrupt JWK ({kty}): its members do not form a valid private key")
    # josepy wraps the cryptography key in a ComparableKey with no public
    # accessor for the key itself.
    return _account_key(getattr(jwk.key, "_wrapped", jwk.key))


def _looks_like_jwk_text(data: bytes) -> bool:
    """
    Whether broken JSON was probably meant as a JWK, so that its corruption is
    a problem to report rather than a file to skip.
    """
    return b'"kty"' in data or b'"d"' in data


def _classify(data: bytes, name: str) -> Union[AccountKey, _Skip]:
    """
    The verdict on one file's content: a key, a skip, or `KeyFileError`.
    """
    keyish_name = name.lower().endswith(_KEY_EXTENSIONS)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    stripped = data.strip()
    if not stripped:
        if keyish_name:
            raise KeyFileError("empty file")
        return _Skip("empty file")
    if b"-----BEGIN " in data:
        return _parse_pem(data)
    if stripped.startswith(b"{"):
        try:
            obj = json.loads(stripped)
        except (ValueError, UnicodeDecodeError):
            if keyish_name or _looks_like_jwk_text(stripped):
                raise KeyFileError("corrupt JWK: not valid JSON")
            return _Skip("not valid JSON")
        if isinstance(obj, dict) and "kty" in obj:
            return _parse_jwk(obj)
        if keyish_name:
            raise KeyFileError("JSON without a JWK in a key file")
        return _Skip("JSON without a private key")
    if keyish_name:
        raise KeyFileError("neither PEM nor JWK (DER keys are not supported)")
    return _Skip("not a key file")


def parse_key_bytes(data: bytes, name: str = "<bytes>") -> Optional[AccountKey]:
    """
    Read a private key from the content of a key file: PEM (PKCS#1, PKCS#8 or
    SEC1, other blocks such as ``EC PARAMETERS`` ignored) or a JWK JSON object
    with private members.

    :param name: the file's name; a ``.pem`` or ``.key`` name turns content
        that is no key at all into an error rather than a skip, because the
        operator clearly meant it to be one.
    :return: the key, or ``None`` if ``data`` holds no private key at all.
    :raises KeyFileError: if it looks like a key but cannot be used.
    """
    verdict = _classify(data, name)
    return None if isinstance(verdict, _Skip) else verdict


# --------------------------------------------------------------------------
# Files.
# --------------------------------------------------------------------------


def shared_mode_reason(path: str, mode: int) -> Optional[str]:
    """
    Why a private key file of permission ``mode`` is refused, with the
    command that fixes it, or ``None`` when only its owner has access.
    """
    mode = stat.S_IMODE(mode)
    if not mode & SHARED_MODE_BITS:
        return None
    return (
        f"mode {mode:04o} gives group or others access to this private key; "
        f"run `chmod 600 {shlex.quote(path)}`, or, where a "
        "secret mount sets group permissions on purpose (a Kubernetes Secret with "
        "defaultMode 0440), start the gateway with --allow-shared-key-files"
    )


def _examine_file(path: str, allow_shared: bool = False) -> Union[AccountKey, _Skip]:
    """
    Read and classify one file (following symlinks).

    :param allow_shared: accept a key file that its group or others may
        access (refused by default: see `shared_mode_reason`).
    :raises KeyFileError: for unreadable or unusable key files.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise KeyFileError("broken symbolic link")
        raise KeyFileError("file vanished while loading")
    except OSError as e:
        raise KeyFileError(f"cannot read: {e.strerror or type(e).__name__}")
    if not stat.S_ISREG(info.st_mode):
        # Opening a FIFO would block start-up forever.
        return _Skip("not a regular file")
    if info.st_size > MAX_KEY_FILE_SIZE:
        return _Skip(f"too large to be a key ({info.st_size} bytes)")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_SIZE + 1)
    except OSError as e:
        raise KeyFileError(f"cannot read: {e.strerror or type(e).__name__}")
    if len(data) > MAX_KEY_FILE_SIZE:
        return _Skip("too large to be a key")
    verdict = _classify(data, path)
    if isinstance(verdict, AccountKey) and not allow_shared:
        # A pure check of the file's permission bits, so that it holds for
        # root too (who can read anything).  Only files holding a private key
        # are judged: certbot's meta.json and regr.json are 0644 by design.
        reason = shared_mode_reason(path, info.st_mode)
        if reason is not None:
            raise KeyFileError(reason)
    return verdict


def load_key_file(path: str, allow_shared: bool = False) -> Optional[AccountKey]:
    """
    Load the private key in the file at ``path``.

    :param allow_shared: accept a key file its group or others may access.
    :return: the key, or ``None`` if the file holds no private key.
    :raises KeyFileError: if the file looks like a key but cannot be used,
        or cannot be read, or (unless ``allow_shared``) its mode lets its
        group or others at it.
    """
    verdict = _examine_file(path, allow_shared)
    return None if isinstance(verdict, _Skip) else verdict


def _is_hidden_mount_path(relpath: str) -> bool:
    """
    Whether ``relpath`` passes through a ``..``-named directory, as the
    timestamped directories of a Kubernetes Secret mount (``..data``,
    ``..2024_01_01_...``) do; such paths are the least friendly name of a file.
    """
    return any(part.startswith("..") and part != ".." for part in relpath.split(os.sep))


def _walk(directory: str) -> Tuple[List[str], List[KeyFileProblem]]:
    """
    Every file below ``directory``, each real file once, under its friendliest
    name: the symlink an operator sees rather than the ``..data`` target.
    Symlinked directories are followed, but no real directory is entered
    twice, which also ends symlink loops.
    """
    problems: List[KeyFileProblem] = []
    by_real: Dict[str, str] = {}
    visited = {os.path.realpath(directory)}

    def on_error(error: OSError) -> None:
        problems.append(
            KeyFileProblem(
                path=str(error.filename),
                reason=f"cannot read directory: {error.strerror or type(error).__name__}",
            )
        )

    def preference(path: str) -> Tuple[bool, int, str]:
        relpath = os.path.relpath(path, directory)
        return (_is_hidden_mount_path(relpath), len(relpath), path)

    for dirpath, dirnames, filenames in os.walk(directory, onerror=on_error, followlinks=True):
        kept = []
        for d in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real not in visited:
                visited.add(real)
                kept.append(d)
        dirnames[:] = kept
        for f in filenames:
            path = os.path.join(dirpath, f)
            real = os.path.realpath(path)
            current = by_real.get(real)
            if current is None or preference(path) < preference(current):
                by_real[real] = path
    return sorted(by_real.values()), problems


# --------------------------------------------------------------------------
# The store.
# --------------------------------------------------------------------------


@attrs.define(repr=False)
class KeyStore:
    """
    The account keys the gateway can sign with, by thumbprint, and the report
    of how they were loaded.

    :ivar directory: the directory loaded, or ``None`` for an in-memory store.
    """

    directory: Optional[str] = None
    _by_thumbprint: Dict[str, LoadedKey] = attrs.field(factory=dict)
    problems: Tuple[KeyFileProblem, ...] = ()
    skipped: Tuple[SkippedFile, ...] = ()

    @classmethod
    def load(cls, directory: str, allow_shared: bool = False) -> "KeyStore":
        """
        Load every key file below ``directory``.  Unusable or foreign files
        end up in `problems` and `skipped`; they never stop loading.

        :param allow_shared: accept key files that their group or others may
            access (``--allow-shared-key-files``); by default such a file is a
            problem whose reason says how to fix its mode.

        :raises KeyStoreError: if ``directory`` does not exist, is not a
            directory, or cannot be listed.
        """
        if not os.path.exists(directory):
            raise KeyStoreError(f"key directory {directory} does not exist")
        if not os.path.isdir(directory):
            raise KeyStoreError(f"key directory {directory} is not a directory")
        try:
            os.listdir(directory)
        except OSError as e:
            raise KeyStoreError(
                f"key directory {directory} cannot be read: {e.strerror or e}"
            )
        paths, problems = _walk(directory)
        store = cls(directory=directory)
        skipped: List[SkippedFile] = []
        for path in paths:
            try:
                verdict = _examine_file(path, allow_shared)
            except KeyFileError as e:
                problems.append(KeyFileProblem(path=path, reason=e.reason))
                continue
            if isinstance(verdict, _Skip):
                skipped.append(SkippedFile(path=path, reason=verdict.reason))
            else:
                store.add(verdict, path)
        store.problems = tuple(sorted(problems, key=lambda p: p.path))
        store.skipped = tuple(skipped)
        return store

    @classmethod
    def from_keys(cls, keys: Iterable[AccountKey]) -> "KeyStore":
        """
        An in-memory store of ``keys`` (for tests and embedding); every key's
        path is ``<memory>``.
        """
        store = cls(directory=None)
        for key in keys:
            store.add(key, MEMORY_PATH)
        return store

    @property
    def loaded(self) -> Tuple[LoadedKey, ...]:
        """
        The loaded keys, in path order so that listings are stable.
        """
        return tuple(
            sorted(self._by_thumbprint.values(), key=lambda k: (k.path, k.key.thumbprint))
        )

    def get(self, thumbprint: str) -> Optional[AccountKey]:
        """
        The key with RFC 7638 ``thumbprint``, if the store has it.
        """
        loaded = self._by_thumbprint.get(thumbprint)
        return None if loaded is None else loaded.key

    def __contains__(self, thumbprint: object) -> bool:
        return thumbprint in self._by_thumbprint

    def __len__(self) -> int:
        return len(self._by_thumbprint)

    def path_of(self, thumbprint: str) -> Optional[str]:
        """
        The primary file of the key with ``thumbprint``.
        """
        loaded = self._by_thumbprint.get(thumbprint)
        return None if loaded is None else loaded.path

    def add(self, key: AccountKey, path: str) -> None:
        """
        Add ``key`` found at ``path`` (also used when a key is imported while
        running).  A key already present keeps its primary path and just
        remembers ``path`` as another copy: the same account key in two files
        is normal, e.g. a Secret and the client's own directory.
        """
        existing = self._by_thumbprint.get(key.thumbprint)
        if existing is None:
            self._by_thumbprint[key.thumbprint] = LoadedKey(key=key, path=path)
        elif path != existing.path and path not in existing.other_paths:
            self._by_thumbprint[key.thumbprint] = attrs.evolve(
                existing, other_paths=existing.other_paths + (path,)
            )

    def __repr__(self) -> str:
        # Counts only: a repr must never carry key material, and paths can be
        # many.
        return (
            f"<KeyStore directory={self.directory!r} keys={len(self)} "
            f"problems={len(self.problems)} skipped={len(self.skipped)}>"
        )


def format_listing(store: KeyStore) -> str:
    """
    The text of ``acme-gateway keys list --keys DIR``: what an operator reads
    to check that every account they migrate has its key, and why any file was
    not used.  One line per key (thumbprint, type, path), then problems, then
    skipped files.
    """
    where = store.directory if store.directory is not None else MEMORY_PATH
    n = len(store)
    lines = [
        f"Account keys in {_clean(where, 200)}: {n} key{'' if n == 1 else 's'}, "
        f"{len(store.problems)} problem{'' if len(store.problems) == 1 else 's'}, "
        f"{len(store.skipped)} skipped"
    ]
    if not n:
        lines.append(
            "No usable account key found. Put the v1 account keys here: PEM files "
            "(PKCS#1, PKCS#8, SEC1) or JWK JSON with private members, such as "
            "certbot's accounts/ directory, dehydrated's account_key.pem or "
            "acme.sh's account.key."
        )
    for loaded in store.loaded:
        lines.append(
            f"{loaded.key.thumbprint}  {loaded.key.label:<9}  {_clean(loaded.path, 1000)}"
        )
        for other in loaded.other_paths:
            lines.append(f"{'':43}  {'':9}  also: {_clean(other, 1000)}")
    for problem in store.problems:
        lines.append(f"error: {_clean(problem.path, 1000)}: {_clean(problem.reason, 300)}")
    for skip in store.skipped:
        lines.append(f"skipped: {_clean(skip.path, 1000)}: {_clean(skip.reason, 300)}")
    return "\n".join(lines) + "\n"
