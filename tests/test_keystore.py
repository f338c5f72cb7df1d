"""
Tests for `gateway.keys.keystore`: loading the v1 account keys an operator mounts.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import josepy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.keys import keystore
from gateway.keys.jose import AccountKey, thumbprint
from gateway.keys.keystore import (
    KeyFileError,
    KeyFileProblem,
    KeyStore,
    KeyStoreError,
    LoadedKey,
    SkippedFile,
    format_listing,
    load_key_file,
    parse_key_bytes,
)

PEM = serialization.Encoding.PEM
NO_ENCRYPTION = serialization.NoEncryption()


# --------------------------------------------------------------------------
# Keys, generated once per session: RSA generation is slow.
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def keys():
    """
    One private key of each kind the tests need.
    """
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa_other": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa_third": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa1024": rsa.generate_private_key(public_exponent=65537, key_size=1024),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
        "k256": ec.generate_private_key(ec.SECP256K1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }


def expected_thumbprint(private_key) -> str:
    """
    The RFC 7638 thumbprint computed from the public key alone, through josepy,
    so that the store's own computation is checked independently.
    """
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return thumbprint(josepy.JWKRSA(key=public))
    return thumbprint(josepy.JWKEC(key=public))


def pkcs1(key) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.TraditionalOpenSSL, NO_ENCRYPTION)


def pkcs8(key) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, NO_ENCRYPTION)


def sec1(key) -> bytes:
    # For EC keys, "TraditionalOpenSSL" is SEC1: BEGIN EC PRIVATE KEY.
    return key.private_bytes(PEM, serialization.PrivateFormat.TraditionalOpenSSL, NO_ENCRYPTION)


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_jwk_json(key) -> str:
    """
    A JWK with private members, exactly as certbot writes ``private_key.json``.
    """
    if isinstance(key, rsa.RSAPrivateKey):
        return josepy.JWKRSA(key=key).json_dumps()
    return josepy.JWKEC(key=key).json_dumps()


def self_signed_cert_pem(key) -> bytes:
    """
    A certificate PEM, one of the files that must be skipped.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a.example.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(PEM)


def write(path: Path, data, mode: int = 0o600) -> Path:
    """
    Write a file as clients write key files: readable by its owner only
    (the key store refuses private keys that group or others may read).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    path.chmod(mode)
    return path


def secrets_of(key) -> list:
    """
    Strings that would reveal ``key`` if they appeared in output: the base64
    lines of its PEM body and its JWK private members.
    """
    body = [
        line
        for line in pkcs8(key).decode().splitlines()
        if line and not line.startswith("-----")
    ]
    jwk = json.loads(private_jwk_json(key))
    members = [jwk[m] for m in ("d", "p", "q", "dp", "dq", "qi") if m in jwk]
    return body + members


# --------------------------------------------------------------------------
# parse_key_bytes: formats.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, encode, label",
    [
        ("rsa", pkcs1, "RSA-2048"),
        ("rsa", pkcs8, "RSA-2048"),
        ("p256", sec1, "EC-P256"),
        ("p256", pkcs8, "EC-P256"),
        ("p384", sec1, "EC-P384"),
        ("p384", pkcs8, "EC-P384"),
        ("rsa", private_jwk_json, "RSA-2048"),
        ("p256", private_jwk_json, "EC-P256"),
        ("p384", private_jwk_json, "EC-P384"),
    ],
)
def test_parse_supported_formats(keys, kind, encode, label):
    """
    Every supported encoding (PKCS#1, PKCS#8, SEC1 PEM and private JWK) of
    every supported key type yields the key, under its true thumbprint.
    """
    data = encode(keys[kind])
    if isinstance(data, str):
        data = data.encode()
    key = parse_key_bytes(data, "account.key")
    assert isinstance(key, AccountKey)
    assert key.thumbprint == expected_thumbprint(keys[kind])
    assert key.label == label


def test_parse_openssl_ecparam_genkey_output(tmp_path):
    """
    ``openssl ecparam -genkey`` writes an ``EC PARAMETERS`` block before the
    key; that block is ignored and the key loads.  The thumbprint is checked
    against the public key openssl itself derives.
    """
    key_file = tmp_path / "ec.pem"
    subprocess.run(
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-out", str(key_file)],
        check=True,
    )
    data = key_file.read_bytes()
    assert b"BEGIN EC PARAMETERS" in data
    public = subprocess.run(
        ["openssl", "ec", "-in", str(key_file), "-pubout"],
        check=True,
        capture_output=True,
    ).stdout
    expected = thumbprint(josepy.JWKEC(key=serialization.load_pem_public_key(public)))

    key = parse_key_bytes(data, "ec.pem")
    assert key is not None and key.thumbprint == expected
    assert key.label == "EC-P256"


def test_parse_rsa_jwk_without_crt_members(keys):
    """
    A JWK with only ``n``, ``e`` and ``d`` (the other private members are
    optional in RFC 7518) still loads.
    """
    full = json.loads(private_jwk_json(keys["rsa"]))
    minimal = {m: full[m] for m in ("kty", "n", "e", "d")}
    key = parse_key_bytes(json.dumps(minimal).encode())
    assert key is not None and key.thumbprint == expected_thumbprint(keys["rsa"])


def test_parse_pem_with_certificate_bundle(keys):
    """
    A key bundled with its certificate (as some tools write them) loads: only
    the private key block counts.
    """
    data = self_signed_cert_pem(keys["rsa"]) + pkcs8(keys["rsa"])
    key = parse_key_bytes(data, "bundle.pem")
    assert key is not None and key.thumbprint == expected_thumbprint(keys["rsa"])


def test_parse_tolerates_bom_and_crlf(keys):
    """
    Keys that went through a Windows editor (UTF-8 BOM, CRLF line ends) still
    load: operators copy account keys around by hand.
    """
    data = b"\xef\xbb\xbf" + pkcs1(keys["rsa"]).replace(b"\n", b"\r\n")
    key = parse_key_bytes(data, "account_key.pem")
    assert key is not None and key.thumbprint == expected_thumbprint(keys["rsa"])


# --------------------------------------------------------------------------
# parse_key_bytes: files that are not keys, and keys that cannot be used.
# --------------------------------------------------------------------------


def _not_keys(keys):
    jwk = json.loads(private_jwk_json(keys["rsa"]))
    public_jwk = {m: jwk[m] for m in ("kty", "n", "e")}
    return {
        "public PEM": ("pub.pem", public_pem(keys["rsa"]), "PUBLIC KEY"),
        "certificate": ("cert.pem", self_signed_cert_pem(keys["rsa"]), "CERTIFICATE"),
        "public JWK": ("public_key.json", json.dumps(public_jwk).encode(), "public JWK"),
        "regr.json": (
            "regr.json",
            json.dumps({"body": {"key": public_jwk}, "uri": "http://x/acme/reg/1"}).encode(),
            "JSON without a private key",
        ),
        "meta.json": (
            "meta.json",
            b'{"creation_dt": "2020-01-01T00:00:00Z", "creation_host": "h"}',
            "JSON without a private key",
        ),
        "ca.conf": ("ca.conf", b"CA_KEY_HASH='x'\nACCOUNT_URL='y'\n", "not a key file"),
        "README": ("README", b"This directory holds account keys.\n", "not a key file"),
        "empty": ("notes.txt", b"", "empty"),
        "broken other JSON": ("meta.json", b'{"creation_dt": ', "not valid JSON"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "public PEM",
        "certificate",
        "public JWK",
        "regr.json",
        "meta.json",
        "ca.conf",
        "README",
        "empty",
        "broken other JSON",
    ],
)
def test_parse_files_without_private_key(keys, case):
    """
    Files that hold no private key at all -- the company every key keeps in a
    client's account directory -- are not keys (``None``), and not errors.
    """
    name, data, _ = _not_keys(keys)[case]
    assert parse_key_bytes(data, name) is None


def _encrypted_pkcs1(key) -> bytes:
    return key.private_bytes(
        PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"secret"),
    )


def _encrypted_pkcs8(key) -> bytes:
    return key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"secret")
    )


def _corrupt_pem(key) -> bytes:
    lines = pkcs1(key).splitlines()
    lines[3] = b"!!!!" + lines[3][4:]
    return b"\n".join(lines) + b"\n"


def _bad_jwk_missing_member(key) -> bytes:
    jwk = json.loads(private_jwk_json(key))
    del jwk["qi"]
    return json.dumps(jwk).encode()


def _bad_jwk_wrong_d(keys) -> bytes:
    jwk = json.loads(private_jwk_json(keys["rsa"]))
    jwk["d"] = json.loads(private_jwk_json(keys["rsa_other"]))["d"]
    return json.dumps(jwk).encode()


def _jwk_with_curve(key, crv) -> bytes:
    jwk = json.loads(private_jwk_json(key))
    jwk["crv"] = crv
    return json.dumps(jwk).encode()


def _ed25519_jwk(key) -> bytes:
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, NO_ENCRYPTION
    )
    return json.dumps(
        {"kty": "OKP", "crv": "Ed25519", "d": base64.urlsafe_b64encode(raw).decode(), "x": "AA"}
    ).encode()


BAD_KEYS = {
    "RSA 1024": (lambda k: pkcs1(k["rsa1024"]), "account.key", "1024 bits"),
    "RSA 1024 JWK": (lambda k: private_jwk_json(k["rsa1024"]), "private_key.json", "1024 bits"),
    "P-521": (lambda k: sec1(k["p521"]), "p521.pem", "secp521r1"),
    "P-521 JWK": (lambda k: private_jwk_json(k["p521"]), "private_key.json", "P-521"),
    "secp256k1": (lambda k: sec1(k["k256"]), "k256.pem", "secp256k1"),
    "secp256k1 JWK": (
        lambda k: _jwk_with_curve(k["p256"], "secp256k1"),
        "private_key.json",
        "secp256k1",
    ),
    "Ed25519": (lambda k: pkcs8(k["ed25519"]), "ed.pem", "Ed25519"),
    "Ed25519 JWK": (lambda k: _ed25519_jwk(k["ed25519"]), "private_key.json", "OKP"),
    "encrypted PKCS#8": (lambda k: _encrypted_pkcs8(k["rsa"]), "enc.pem", "encrypted"),
    "encrypted PKCS#1": (lambda k: _encrypted_pkcs1(k["rsa"]), "enc.pem", "encrypted"),
    "garbage .pem": (lambda k: b"\x00\x01 not a key at all", "garbage.pem", "neither PEM nor JWK"),
    "empty .key": (lambda k: b"", "account.key", "empty"),
    "corrupt PEM": (lambda k: _corrupt_pem(k["rsa"]), "account_key.pem", "corrupt PEM"),
    "truncated PEM": (lambda k: pkcs1(k["rsa"])[:200], "account_key.pem", "truncated PEM"),
    "two keys": (
        lambda k: pkcs8(k["rsa"]) + pkcs8(k["p256"]),
        "both.pem",
        "2 private keys",
    ),
    "OpenSSH key": (
        lambda k: k["ed25519"].private_bytes(
            PEM, serialization.PrivateFormat.OpenSSH, NO_ENCRYPTION
        ),
        "id_ed25519",
        "OPENSSH PRIVATE KEY",
    ),
    "corrupt JWK JSON": (lambda k: b'{"kty": "RSA", "n": ', "private_key.json", "corrupt JWK"),
    "JWK missing member": (
        lambda k: _bad_jwk_missing_member(k["rsa"]),
        "private_key.json",
        "corrupt JWK",
    ),
    "JWK inconsistent": (lambda k: _bad_jwk_wrong_d(k), "private_key.json", "corrupt JWK"),
}


@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_parse_unusable_keys(keys, case):
    """
    Files that are meant as keys but cannot serve as ACME account keys raise
    `KeyFileError` with a reason an operator can act on.
    """
    make, name, reason = BAD_KEYS[case]
    data = make(keys)
    if isinstance(data, str):
        data = data.encode()
    with pytest.raises(KeyFileError) as raised:
        parse_key_bytes(data, name)
    assert reason in raised.value.reason
    assert str(raised.value) == raised.value.reason


def test_parse_error_never_quotes_private_members(keys):
    """
    josepy's own message for a JWK missing a CRT member lists the private
    members; our reason must not pass it on.
    """
    with pytest.raises(KeyFileError) as raised:
        parse_key_bytes(_bad_jwk_missing_member(keys["rsa"]), "private_key.json")
    text = raised.value.reason + repr(raised.value)
    for secret in secrets_of(keys["rsa"]):
        assert secret not in text


# --------------------------------------------------------------------------
# load_key_file.
# --------------------------------------------------------------------------


def test_load_key_file(tmp_path, keys):
    """
    `load_key_file` returns the key, ``None`` for a non-key, and raises for an
    unusable key, just as `parse_key_bytes` does for the file's content.
    """
    good = write(tmp_path / "a.pem", pkcs1(keys["rsa"]))
    other = write(tmp_path / "regr.json", b'{"uri": "x"}')
    bad = write(tmp_path / "b.pem", pkcs1(keys["rsa1024"]))
    key = load_key_file(str(good))
    assert key is not None and key.thumbprint == expected_thumbprint(keys["rsa"])
    assert load_key_file(str(other)) is None
    with pytest.raises(KeyFileError, match="1024 bits"):
        load_key_file(str(bad))


def test_load_key_file_too_large(tmp_path, keys):
    """
    A file above 1 MiB is not read as a key, however it starts.
    """
    big = write(tmp_path / "big.pem", pkcs1(keys["rsa"]) + b"\n" * (1024 * 1024))
    assert load_key_file(str(big)) is None


# --------------------------------------------------------------------------
# KeyStore.load: client account directories as they are on disk.
# --------------------------------------------------------------------------


def certbot_tree(root: Path, key) -> Path:
    """
    certbot's account layout: ``accounts/<server>/directory/<id>/`` with the
    JWK ``private_key.json`` beside ``regr.json`` and ``meta.json``.
    """
    jwk = json.loads(private_jwk_json(key))
    public = {m: v for m, v in jwk.items() if m in ("kty", "n", "e", "crv", "x", "y")}
    account_id = "0123456789abcdef0123456789abcdef"
    account = root / "accounts" / "127.0.0.1:4000" / "directory" / account_id
    write(account / "private_key.json", private_jwk_json(key))
    write(
        account / "regr.json",
        json.dumps(
            {"body": {"key": public, "contact": []}, "uri": "http://127.0.0.1:4000/acme/reg/1"}
        ),
    )
    write(
        account / "meta.json",
        json.dumps({"creation_dt": "2019-05-01T10:00:00Z", "creation_host": "host"}),
    )
    return account / "private_key.json"


def dehydrated_tree(root: Path, key) -> Path:
    """
    dehydrated's layout: ``accounts/<b64 CA URL>/account_key.pem`` with
    ``registration_info.json`` and ``account_id.json``.
    """
    ca = base64.urlsafe_b64encode(b"http://127.0.0.1:4000/directory").decode().rstrip("=")
    account = root / "accounts" / ca
    write(account / "account_key.pem", pkcs1(key))
    write(account / "registration_info.json", json.dumps({"id": 7, "status": "valid"}))
    write(account / "account_id.json", json.dumps({"id": 7}))
    return account / "account_key.pem"


def acme_sh_tree(root: Path, key) -> Path:
    """
    acme.sh's layout: ``ca/<server>/account.key`` with ``account.json`` and
    ``ca.conf``.
    """
    account = root / "ca" / "127.0.0.1" / "directory"
    write(account / "account.key", sec1(key))
    write(account / "account.json", json.dumps({"id": 9, "key": {"kty": "EC"}}))
    write(account / "ca.conf", "ACCOUNT_URL='http://127.0.0.1:4000/acme/reg/9'\n")
    return account / "account.key"


def test_load_client_account_directories(tmp_path, keys):
    """
    A store made of whole client account directories (certbot, dehydrated,
    acme.sh) loads each account key and notes every other file as skipped,
    with no problem reported.
    """
    paths = {
        "rsa": certbot_tree(tmp_path / "certbot", keys["rsa"]),
        "rsa_other": dehydrated_tree(tmp_path / "dehydrated", keys["rsa_other"]),
        "p256": acme_sh_tree(tmp_path / "acme.sh", keys["p256"]),
    }
    store = KeyStore.load(str(tmp_path))

    assert store.directory == str(tmp_path)
    assert store.problems == ()
    assert len(store) == 3
    for kind, path in paths.items():
        tp = expected_thumbprint(keys[kind])
        assert tp in store
        assert store.get(tp).thumbprint == tp
        assert store.path_of(tp) == str(path)
    skipped = {os.path.basename(s.path) for s in store.skipped}
    assert skipped == {
        "regr.json",
        "meta.json",
        "registration_info.json",
        "account_id.json",
        "account.json",
        "ca.conf",
    }
    assert all(s.reason for s in store.skipped)
    assert [k.path for k in store.loaded] == sorted(str(p) for p in paths.values())


def test_load_reports_unusable_keys_without_failing(tmp_path, keys):
    """
    Every unusable key file is reported as a problem by name and reason, and
    none of them keeps the good key beside them from loading.
    """
    write(tmp_path / "good.pem", pkcs8(keys["rsa"]))
    expected = {}
    for i, case in enumerate(sorted(BAD_KEYS)):
        make, name, reason = BAD_KEYS[case]
        path = write(tmp_path / f"case{i:02d}" / name, make(keys))
        expected[str(path)] = reason

    store = KeyStore.load(str(tmp_path))

    assert len(store) == 1 and expected_thumbprint(keys["rsa"]) in store
    reported = {p.path: p.reason for p in store.problems}
    assert set(reported) == set(expected)
    for path, reason in expected.items():
        assert reason in reported[path]
    assert [p.path for p in store.problems] == sorted(reported)


def test_load_unreadable_file(tmp_path, keys, monkeypatch):
    """
    A key file that cannot be opened is a problem ("Permission denied"), not a
    crash.  The tests run as root, which reads through mode 000, so the
    denial is simulated at ``open`` for that one path.
    """
    write(tmp_path / "good.pem", pkcs8(keys["rsa"]))
    locked = write(tmp_path / "locked.pem", pkcs8(keys["p256"]))
    real_open = open

    def guarded_open(path, *args, **kwargs):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(keystore, "open", guarded_open, raising=False)
    store = KeyStore.load(str(tmp_path))

    assert len(store) == 1
    assert store.problems == (
        KeyFileProblem(path=str(locked), reason="cannot read: Permission denied"),
    )


def test_load_unreadable_subdirectory(tmp_path, keys, monkeypatch):
    """
    A subdirectory that cannot be listed is a problem ("cannot read
    directory"), and the keys elsewhere still load.  Denial is simulated at
    ``os.scandir`` (which ``os.walk`` uses) because the tests run as root.
    """
    write(tmp_path / "good.pem", pkcs8(keys["rsa"]))
    closed = tmp_path / "closed"
    write(closed / "k.pem", pkcs8(keys["p256"]))
    real_scandir = os.scandir

    def guarded_scandir(path="."):
        if os.fspath(path) == str(closed):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", guarded_scandir)
    store = KeyStore.load(str(tmp_path))

    assert len(store) == 1
    assert store.problems == (
        KeyFileProblem(path=str(closed), reason="cannot read directory: Permission denied"),
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files and directories of mode 000")
def test_load_unreadable_file_and_directory_by_mode(tmp_path, keys):
    """
    Real permission denials, on a file and on a subdirectory, are problems.
    """
    locked = write(tmp_path / "locked.pem", pkcs8(keys["p256"]))
    locked.chmod(0)
    closed = tmp_path / "closed"
    write(closed / "k.pem", pkcs8(keys["rsa"]))
    closed.chmod(0)
    try:
        store = KeyStore.load(str(tmp_path))
    finally:
        closed.chmod(0o755)
        locked.chmod(0o600)
    reasons = {p.path: p.reason for p in store.problems}
    assert "Permission denied" in reasons[str(locked)]
    assert "cannot read directory" in reasons[str(closed)]


def test_load_same_key_in_two_files(tmp_path, keys):
    """
    The same key in two files (here PEM and JWK) is indexed once; the first
    path in sorted order is primary and the other is remembered.
    """
    a = write(tmp_path / "a" / "account.key", pkcs1(keys["rsa"]))
    b = write(tmp_path / "b" / "private_key.json", private_jwk_json(keys["rsa"]))
    store = KeyStore.load(str(tmp_path))

    assert len(store) == 1 and store.problems == ()
    (loaded,) = store.loaded
    assert loaded.path == str(a)
    assert loaded.other_paths == (str(b),)
    listing = format_listing(store)
    assert f"also: {b}" in listing


def test_load_kubernetes_secret_mount(tmp_path, keys):
    """
    A Kubernetes Secret volume (files symlinked through ``..data`` into a
    timestamped ``..`` directory) yields each key once, under the name the
    operator sees, with nothing skipped or reported twice.
    """
    stamp = tmp_path / "..2024_05_01_10_00_00.123456789"
    write(stamp / "account.key", pkcs8(keys["rsa"]))
    write(stamp / "ec.pem", sec1(keys["p256"]))
    write(stamp / "README", "not a key")
    (tmp_path / "..data").symlink_to(stamp.name)
    for name in ("account.key", "ec.pem", "README"):
        (tmp_path / name).symlink_to(Path("..data") / name)

    store = KeyStore.load(str(tmp_path))

    assert store.problems == ()
    assert [k.path for k in store.loaded] == [
        str(tmp_path / "account.key"),
        str(tmp_path / "ec.pem"),
    ]
    assert all(k.other_paths == () for k in store.loaded)
    assert store.skipped == (SkippedFile(path=str(tmp_path / "README"), reason="not a key file"),)


def test_load_follows_symlinks_safely(tmp_path, keys):
    """
    Symlinked files and directories outside the store are followed; a symlink
    loop ends; a dangling symlink is a problem.
    """
    outside = tmp_path / "outside"
    write(outside / "file.pem", pkcs1(keys["rsa"]))
    write(outside / "dir" / "private_key.json", private_jwk_json(keys["p384"]))
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    (store_dir / "linked.pem").symlink_to(outside / "file.pem")
    (store_dir / "linked_dir").symlink_to(outside / "dir")
    (store_dir / "loop").symlink_to(store_dir)
    (store_dir / "dangling.pem").symlink_to(tmp_path / "missing.pem")

    store = KeyStore.load(str(store_dir))

    assert store.path_of(expected_thumbprint(keys["rsa"])) == str(store_dir / "linked.pem")
    assert store.path_of(expected_thumbprint(keys["p384"])) == str(
        store_dir / "linked_dir" / "private_key.json"
    )
    assert store.problems == (
        KeyFileProblem(path=str(store_dir / "dangling.pem"), reason="broken symbolic link"),
    )


def test_load_skips_special_and_large_files(tmp_path, keys):
    """
    A FIFO is skipped without being opened (that would block start-up), and a
    file above 1 MiB is skipped as too large.
    """
    os.mkfifo(tmp_path / "pipe.pem")
    write(tmp_path / "big.pem", b"x" * (1024 * 1024 + 1))
    store = KeyStore.load(str(tmp_path))
    reasons = {os.path.basename(s.path): s.reason for s in store.skipped}
    assert reasons["pipe.pem"] == "not a regular file"
    assert reasons["big.pem"].startswith("too large to be a key")
    assert store.problems == ()


def test_load_rejects_missing_or_non_directory(tmp_path):
    """
    Only a key directory that is missing or not a directory stops loading,
    with `KeyStoreError` (a `ValueError`).
    """
    with pytest.raises(KeyStoreError, match="does not exist"):
        KeyStore.load(str(tmp_path / "nope"))
    write(tmp_path / "file", "x")
    with pytest.raises(KeyStoreError, match="not a directory"):
        KeyStore.load(str(tmp_path / "file"))
    assert issubclass(KeyStoreError, ValueError)


def test_load_empty_directory(tmp_path):
    """
    An empty key directory is a valid, empty store; the listing says plainly
    that no key was found.
    """
    store = KeyStore.load(str(tmp_path))
    assert len(store) == 0 and store.loaded == () and store.skipped == ()
    assert "No usable account key found" in format_listing(store)


# --------------------------------------------------------------------------
# In-memory stores and run-time additions.
# --------------------------------------------------------------------------


def test_from_keys_and_add(keys):
    """
    `KeyStore.from_keys` indexes keys by thumbprint in memory; `KeyStore.add`
    adds new keys and records a second path for a key already present.
    """
    rsa_key = AccountKey.from_private_key(keys["rsa"])
    ec_key = AccountKey.from_private_key(keys["p256"])
    store = KeyStore.from_keys([rsa_key, ec_key, rsa_key])

    assert store.directory is None
    assert len(store) == 2
    assert store.get(rsa_key.thumbprint) is rsa_key
    assert store.get("unknown") is None and "unknown" not in store
    assert store.path_of(ec_key.thumbprint) == "<memory>"
    assert store.path_of("unknown") is None

    third = AccountKey.from_private_key(keys["rsa_third"])
    store.add(third, "/keys/imported.pem")
    store.add(rsa_key, "/keys/copy.pem")
    store.add(rsa_key, "/keys/copy.pem")
    assert third.thumbprint in store and len(store) == 3
    loaded = {k.key.thumbprint: k for k in store.loaded}
    assert loaded[rsa_key.thumbprint].path == "<memory>"
    assert loaded[rsa_key.thumbprint].other_paths == ("/keys/copy.pem",)
    assert loaded[third.thumbprint].path == "/keys/imported.pem"


# --------------------------------------------------------------------------
# format_listing, and keeping secrets out of all output.
# --------------------------------------------------------------------------


def test_format_listing(tmp_path, keys):
    """
    The listing has a header, one line per key with thumbprint, type label
    and path, then ``error:`` and ``skipped:`` lines.
    """
    certbot = certbot_tree(tmp_path, keys["rsa"])
    ec_file = write(tmp_path / "ec384.pem", sec1(keys["p384"]))
    bad = write(tmp_path / "short.pem", pkcs1(keys["rsa1024"]))
    store = KeyStore.load(str(tmp_path))

    lines = format_listing(store).splitlines()
    assert lines[0] == f"Account keys in {tmp_path}: 2 keys, 1 problem, 2 skipped"
    key_lines = {line.split()[0]: line.split() for line in lines[1:3]}
    assert key_lines[expected_thumbprint(keys["rsa"])][1:] == ["RSA-2048", str(certbot)]
    assert key_lines[expected_thumbprint(keys["p384"])][1:] == ["EC-P384", str(ec_file)]
    assert lines[3].startswith(f"error: {bad}: RSA key of 1024 bits")
    assert sorted(lines[4:]) == sorted(
        f"skipped: {certbot.parent / name}: JSON without a private key"
        for name in ("meta.json", "regr.json")
    )


def test_format_listing_escapes_control_characters(tmp_path, keys):
    """
    A file name with a newline cannot forge extra lines in the listing.
    """
    write(tmp_path / "evil\nerror: fake.pem", "hello")
    listing = format_listing(KeyStore.load(str(tmp_path)))
    assert "\nerror: fake.pem" not in listing
    assert "evil?error: fake.pem" in listing


def test_no_private_material_in_output(tmp_path, keys):
    """
    Neither the listing nor any repr (store, loaded keys, problems) contains
    PEM key text or JWK private members, for good and unusable keys alike.
    """
    write(tmp_path / "a.pem", pkcs1(keys["rsa"]))
    write(tmp_path / "b" / "private_key.json", private_jwk_json(keys["p256"]))
    write(tmp_path / "c.pem", pkcs1(keys["rsa1024"]))
    write(tmp_path / "d" / "private_key.json", _bad_jwk_missing_member(keys["rsa_other"]))
    store = KeyStore.load(str(tmp_path))
    assert len(store) == 2 and len(store.problems) == 2

    output = "\n".join(
        [
            format_listing(store),
            repr(store),
            str(store),
            *(repr(k) for k in store.loaded),
            *(repr(p) for p in store.problems),
        ]
    )
    assert "PRIVATE KEY" not in output
    assert '"d"' not in output
    for kind in ("rsa", "p256", "rsa1024", "rsa_other"):
        for secret in secrets_of(keys[kind]):
            assert secret not in output
    assert isinstance(store.loaded[0], LoadedKey)
