"""
Unit tests of ``acme-gateway adopt`` and ``acme-gateway keys import`` on
hand-built client installations (the layouts of certbot 1.x, dehydrated
0.7 and acme.sh 2.x/3.x, written here file by file; no client runs).  The
real certbot and dehydrated are adopted in ``tests/e2e/test_migration.py``;
acme.sh is not installed, so its adoption is tested only here.

Commands run in process through `gateway.process.cli.main`, as an operator types
them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.adopt.acmesh import ca_dirs, server_host_and_path
from gateway.adopt.dehydrated import account_dir_name
from gateway.process.cli import main
from gateway.clients.certbot import account_id, write_account
from gateway.keys.jose import AccountKey
from gateway.keys.keystore import KeyStore
from tests.support.trees import differences, snapshot

V1 = "https://acme-v01.api.letsencrypt.org/directory"
GATEWAY = "http://127.0.0.1:4000/directory"
GATEWAY_NETLOC_PATH = os.path.join("127.0.0.1:4000", "directory")

RSA_KEY = rsa.generate_private_key(65537, 2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def thumbprint(key) -> str:
    return AccountKey.from_private_key(key).thumbprint


def write(path, data, mode=0o644) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(path, mode)
    return path


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def adopt(capsys, *args) -> tuple:
    """``acme-gateway adopt …``: the exit status and what it printed."""
    code = main(["adopt", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


RENEWAL = """\
# renew_before_expiry = 30 days
version = 0.31.0
archive_dir = /etc/letsencrypt/archive/{name}
cert = /etc/letsencrypt/live/{name}/cert.pem
privkey = /etc/letsencrypt/live/{name}/privkey.pem

# Options used in the renewal process
[renewalparams]
authenticator = webroot
account = {account}
server = {server}
rsa_key_size = 2048
[[webroot_map]]
{name} = /var/www/html
"""


def certbot_tree(root, key=RSA_KEY, names=("example.com", "www.example.org")) -> str:
    """
    A certbot 0.31 installation made against Let's Encrypt's v1: one account,
    a renewal file per name.  Returns the account id.
    """
    identifier = write_account(root, V1, key, "https://acme-v01.api.letsencrypt.org/acme/reg/4711",
                               new_authz_uri="https://acme-v01.api.letsencrypt.org/acme/new-authz",
                               creation_host="web1.example.com")
    for name in names:
        write(os.path.join(root, "renewal", f"{name}.conf"),
              RENEWAL.format(name=name, account=identifier, server=V1))
    return identifier


def dehydrated_tree(basedir, key=RSA_KEY, ca=V1, config_line=None) -> str:
    """
    A dehydrated installation whose config sets ``CA`` to ``ca`` and whose
    account for it is registered.  Returns the config path.
    """
    config = write(os.path.join(basedir, "config"), (
        "# dehydrated config\n"
        f"BASEDIR={basedir}\n"
        + (config_line if config_line is not None else f'CA="{ca}"\n')
        + 'CHALLENGETYPE="http-01"\nWELLKNOWN="/var/www/dehydrated"\nCONTACT_EMAIL=admin@example.com\n'))
    account = os.path.join(basedir, "accounts", account_dir_name(ca))
    write(os.path.join(account, "account_key.pem"), pem(key), 0o600)
    write(os.path.join(account, "registration_info.json"),
          '{"id": 4242, "key": {}, "contact": ["mailto:admin@example.com"], "status": "valid"}\n')
    return config


def acmesh_tree(home, key=EC_KEY, layout="2.x") -> None:
    """
    An acme.sh home from the v1 era (2.x: ``ca/<host>/account.key``) or a
    3.x one (``ca/<host>/<path>/``) whose domains still name the v1 URL.
    """
    ca = os.path.join(home, "ca", "acme-v01.api.letsencrypt.org")
    if layout == "3.x":
        ca = os.path.join(ca, "directory")
    write(os.path.join(ca, "account.key"), pem(key), 0o600)
    write(os.path.join(ca, "account.json"), '{"contact": ["mailto:admin@example.com"]}')
    write(os.path.join(ca, "ca.conf"), "CA_KEY_HASH='abc'\nACCOUNT_URL='https://acme-v01.api."
                                       "letsencrypt.org/acme/reg/99'\n")
    write(os.path.join(home, "account.conf"), "#LOG_FILE=\"/root/.acme.sh/acme.sh.log\"\n"
                                              "ACCOUNT_EMAIL='admin@example.com'\nAUTO_UPGRADE='1'\n")
    write(os.path.join(home, "example.com", "example.com.conf"),
          f"Le_Domain='example.com'\nLe_Alt='www.example.com'\nLe_Webroot='/var/www/html'\n"
          f"Le_API='{V1}'\nLe_Keylength=''\nLe_NextRenewTime='1561000000'\n")
    write(os.path.join(home, "example.org_ecc", "example.org.conf"),
          f'Le_Domain="example.org"\nLe_Keylength="ec-256"\nLe_API="{V1}"\n')
    write(os.path.join(home, "dnsapi", "dns_cf.sh"), "#!/usr/bin/env sh\n")


def _adopt_args(client, root, keys):
    location = {"certbot": ["--config-dir", root], "dehydrated": ["--basedir", root],
                "acme.sh": ["--home", root]}[client]
    return [client, *location, "--gateway", GATEWAY, "--keys", keys, "--host", "web1"]


def _build(client, root):
    {"certbot": certbot_tree, "dehydrated": dehydrated_tree, "acme.sh": acmesh_tree}[client](root)


CLIENTS = ("certbot", "dehydrated", "acme.sh")


# --------------------------------------------------------------------------
# certbot
# --------------------------------------------------------------------------

def test_certbot_adoption(tmp_path, capsys):
    """
    Every renewal file's ``server`` line, and nothing else, now names the
    gateway; the account is copied under the gateway's URL with the same
    key and metadata (certbot's own account id); the key is in the store
    as ``certbot-<host>-<id>.json``, mode 0600, byte for byte certbot's.
    """
    root, keys = str(tmp_path / "letsencrypt"), str(tmp_path / "keys")
    identifier = certbot_tree(root)
    code, out = adopt(capsys, *_adopt_args("certbot", root, keys))
    assert code == 0, out

    for name in ("example.com", "www.example.org"):
        conf = read(os.path.join(root, "renewal", f"{name}.conf")).decode()
        assert conf == RENEWAL.format(name=name, account=identifier, server=GATEWAY)
        backup = read(os.path.join(root, "renewal", f"{name}.conf.acme-gateway-backup")).decode()
        assert backup == RENEWAL.format(name=name, account=identifier, server=V1)
    old = os.path.join(root, "accounts", "acme-v01.api.letsencrypt.org", "directory", identifier)
    new = os.path.join(root, "accounts", GATEWAY_NETLOC_PATH, identifier)
    assert read(os.path.join(new, "private_key.json")) == read(os.path.join(old, "private_key.json"))
    assert read(os.path.join(new, "meta.json")) == read(os.path.join(old, "meta.json"))
    assert stat.S_IMODE(os.stat(os.path.join(new, "private_key.json")).st_mode) == 0o400
    regr = json.loads(read(os.path.join(new, "regr.json")))
    assert regr["uri"] == f"http://127.0.0.1:4000/acme/reg/{thumbprint(RSA_KEY)}"
    assert regr["body"] == json.loads(read(os.path.join(old, "regr.json")))["body"]
    assert regr["new_authzr_uri"] == "http://127.0.0.1:4000/acme/new-authz"

    imported = os.path.join(keys, f"certbot-web1-{identifier}.json")
    assert read(imported) == read(os.path.join(old, "private_key.json"))
    assert stat.S_IMODE(os.stat(imported).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o700
    assert thumbprint(RSA_KEY) in KeyStore.load(keys)
    assert "restart the gateway" in out


def test_certbot_quoting_comments_and_line_endings_survive(tmp_path, capsys):
    """
    A quoted ``server`` with a trailing comment, CRLF line endings, and a
    ``cli.ini`` naming the v1 server: only the URL changes, quotes, comment
    and line endings stay.  A renewal file without ``server`` (certbot's
    default CA) gets one line after ``[renewalparams]``.
    """
    root, keys = str(tmp_path / "le"), str(tmp_path / "keys")
    identifier = certbot_tree(root, names=())
    quoted = (f"version = 1.0.0\r\n[renewalparams]\r\naccount = {identifier}\r\n"
              f"  server = \"{V1}\"   # the v1 CA\r\n")
    write(os.path.join(root, "renewal", "quoted.conf"), quoted)
    write(os.path.join(root, "renewal", "none.conf"), f"[renewalparams]\naccount = {identifier}\n")
    write(os.path.join(root, "cli.ini"), f"# defaults\nserver = {V1}\nemail = a@example.com\n")
    code, out = adopt(capsys, *_adopt_args("certbot", root, keys))
    assert code == 0, out
    assert read(os.path.join(root, "renewal", "quoted.conf")).decode() == quoted.replace(V1, GATEWAY)
    assert read(os.path.join(root, "renewal", "none.conf")).decode() == (
        f"[renewalparams]\nserver = {GATEWAY}\naccount = {identifier}\n")
    assert read(os.path.join(root, "cli.ini")).decode() == (
        f"# defaults\nserver = {GATEWAY}\nemail = a@example.com\n")


def test_certbot_unparsable_files_are_reported_and_left_alone(tmp_path, capsys):
    """
    A renewal file with two ``server`` lines, one in Latin-1, one without
    ``[renewalparams]``, and an account whose key is corrupt are each
    reported by name and left byte for byte; the rest is adopted, and the
    exit status (1) says something was left.
    """
    root, keys = str(tmp_path / "le"), str(tmp_path / "keys")
    certbot_tree(root, names=("good.example",))
    broken = {
        "twice.conf": f"[renewalparams]\nserver = {V1}\nserver = {V1}\n".encode(),
        "latin1.conf": f"# caf\xe9\n[renewalparams]\nserver = {V1}\n".encode("latin-1"),
        "nosection.conf": f"server = {V1}\n".encode(),
    }
    for name, data in broken.items():
        write(os.path.join(root, "renewal", name), data)
    corrupt = os.path.join(root, "accounts", "acme-v01.api.letsencrypt.org", "directory", "0" * 32)
    write(os.path.join(corrupt, "private_key.json"), '{"kty": "RSA", "n": "broken", "d": ', 0o400)
    code, out = adopt(capsys, *_adopt_args("certbot", root, keys))
    assert code == 1, out
    for name, data in broken.items():
        assert read(os.path.join(root, "renewal", name)) == data
        assert f"problem: renewal/{name}: cannot parse" in out
    assert "private_key.json: unusable key" in out
    assert f"server = {GATEWAY}" in read(os.path.join(root, "renewal", "good.example.conf")).decode()
    assert not os.path.exists(os.path.join(root, "accounts", GATEWAY_NETLOC_PATH, "0" * 32))


def test_certbot_account_already_under_the_gateway_is_kept(tmp_path, capsys):
    """
    An account certbot already has under the gateway's URL (registered
    through it) is neither copied over nor rewritten, and its key is still
    imported when the store lacks it.
    """
    root, keys = str(tmp_path / "le"), str(tmp_path / "keys")
    identifier = write_account(root, GATEWAY, EC_KEY, "http://127.0.0.1:4000/acme/reg/7")
    before = snapshot(root)
    code, out = adopt(capsys, *_adopt_args("certbot", root, keys))
    assert code == 0, out
    assert snapshot(root) == before
    assert os.listdir(keys) == [f"certbot-web1-{identifier}.json"]


# --------------------------------------------------------------------------
# dehydrated
# --------------------------------------------------------------------------

def test_dehydrated_adoption(tmp_path, capsys):
    """
    ``CA=`` names the gateway (quotes kept, every other line unchanged); the
    v1 account directory is copied, file by file with its modes, to the one
    named after the gateway's URL (newline included, as dehydrated encodes
    ``echo "$CA"``); the key is in the store named after the old CA.
    """
    basedir, keys = str(tmp_path / "dehydrated"), str(tmp_path / "keys")
    config = dehydrated_tree(basedir)
    original = read(config).decode()
    code, out = adopt(capsys, *_adopt_args("dehydrated", basedir, keys), "--config", config)
    assert code == 0, out
    assert read(config).decode() == original.replace(f'CA="{V1}"', f'CA="{GATEWAY}"')
    assert account_dir_name(GATEWAY) == base64.urlsafe_b64encode(
        (GATEWAY + "\n").encode()).decode().rstrip("=")
    old = os.path.join(basedir, "accounts", account_dir_name(V1))
    new = os.path.join(basedir, "accounts", account_dir_name(GATEWAY))
    assert sorted(os.listdir(new)) == ["account_key.pem", "registration_info.json"]
    for name in os.listdir(new):
        assert read(os.path.join(new, name)) == read(os.path.join(old, name))
        assert os.stat(os.path.join(new, name)).st_mode == os.stat(os.path.join(old, name)).st_mode
    (imported,) = os.listdir(keys)
    assert imported == f"dehydrated-web1-acme-v01.api.letsencrypt.org-{thumbprint(RSA_KEY)[:12].rstrip('_-')}.pem"
    assert read(os.path.join(keys, imported)) == pem(RSA_KEY)


def test_dehydrated_without_ca_line_and_with_short_name(tmp_path, capsys):
    """
    A config naming no CA uses dehydrated's default (Let's Encrypt v02):
    adoption appends ``CA=<gateway>`` and moves that account.  A short name
    (``CA=letsencrypt``) is resolved the same way.
    """
    v02 = "https://acme-v02.api.letsencrypt.org/directory"
    for line, name in (("", "none"), ("CA=letsencrypt\n", "short")):
        basedir, keys = str(tmp_path / name), str(tmp_path / f"keys-{name}")
        config = dehydrated_tree(basedir, ca=v02, config_line=line)
        original = read(config).decode()
        code, out = adopt(capsys, *_adopt_args("dehydrated", basedir, keys))
        assert code == 0, out
        expected = (original + f"CA={GATEWAY}\n" if not line
                    else original.replace("CA=letsencrypt", f"CA={GATEWAY}"))
        assert read(config).decode() == expected
        assert os.path.isfile(os.path.join(basedir, "accounts", account_dir_name(GATEWAY), "account_key.pem"))


def test_dehydrated_ca_in_config_d(tmp_path, capsys):
    """
    Debian keeps settings in ``CONFIG_D`` (``/etc/dehydrated/conf.d/*.sh``,
    sourced after the config): a ``CA=`` there is the one rewritten, and
    the config itself, which sets none, is left as it was.
    """
    basedir, keys = str(tmp_path / "d"), str(tmp_path / "keys")
    conf_d = str(tmp_path / "etc" / "conf.d")
    config = dehydrated_tree(basedir, config_line=f"CONFIG_D={conf_d}\n")
    config_bytes = read(config)
    ca_sh = write(os.path.join(conf_d, "ca.sh"), f"# the CA\nCA='{V1}'\n")
    write(os.path.join(conf_d, "contact.sh"), "CONTACT_EMAIL=ops@example.com\n")
    code, out = adopt(capsys, *_adopt_args("dehydrated", basedir, keys))
    assert code == 0, out
    assert read(config) == config_bytes
    assert read(ca_sh).decode() == f"# the CA\nCA='{GATEWAY}'\n"
    assert os.path.isfile(os.path.join(basedir, "accounts", account_dir_name(GATEWAY), "account_key.pem"))


def test_dehydrated_unparsable_ca_is_left_alone(tmp_path, capsys):
    """
    ``CA`` set from a variable cannot be rewritten safely: reported, the
    config untouched; the key is still imported.
    """
    basedir, keys = str(tmp_path / "d"), str(tmp_path / "keys")
    config = dehydrated_tree(basedir, config_line='CA="${MY_CA}"\n')
    before = read(config)
    code, out = adopt(capsys, *_adopt_args("dehydrated", basedir, keys))
    assert code == 1, out
    assert read(config) == before
    assert "CA= is not set to a plain literal value" in out
    assert len(os.listdir(keys)) == 1


# --------------------------------------------------------------------------
# acme.sh (hand-built trees: no acme.sh is installed)
# --------------------------------------------------------------------------

def test_acmesh_server_dirs():
    """
    acme.sh's CA directory for a URL: host without port, path without its
    leading slash (3.x), or the host alone (2.x).
    """
    assert server_host_and_path(GATEWAY) == ("127.0.0.1", "directory")
    assert server_host_and_path(V1) == ("acme-v01.api.letsencrypt.org", "directory")
    assert server_host_and_path("https://acme-v01.api.letsencrypt.org") == ("acme-v01.api.letsencrypt.org", "")
    assert ca_dirs("/h/ca", "https://x.test:8443/acme//dir") == ["/h/ca/x.test/acme/dir", "/h/ca/x.test"]


def test_acmesh_v1_era_adoption(tmp_path, capsys):
    """
    acme.sh 2.x: every domain's ``Le_API`` (ECC domains too, either
    quoting) names the gateway; the account key is copied, in the 2.x
    layout it was found in, to the gateway's CA directory; ``ca.conf`` with
    the dead v1 account URL is not; the key is in the store.
    """
    home, keys = str(tmp_path / ".acme.sh"), str(tmp_path / "keys")
    acmesh_tree(home)
    rsa_conf = read(os.path.join(home, "example.com", "example.com.conf")).decode()
    ecc_conf = read(os.path.join(home, "example.org_ecc", "example.org.conf")).decode()
    code, out = adopt(capsys, *_adopt_args("acme.sh", home, keys))
    assert code == 0, out
    assert read(os.path.join(home, "example.com", "example.com.conf")).decode() == \
        rsa_conf.replace(f"Le_API='{V1}'", f"Le_API='{GATEWAY}'")
    assert read(os.path.join(home, "example.org_ecc", "example.org.conf")).decode() == \
        ecc_conf.replace(f'Le_API="{V1}"', f'Le_API="{GATEWAY}"')
    assert sorted(os.listdir(os.path.join(home, "ca", "127.0.0.1"))) == ["account.key"]
    assert read(os.path.join(home, "ca", "127.0.0.1", "account.key")) == pem(EC_KEY)
    (imported,) = os.listdir(keys)
    assert imported.startswith("acme.sh-web1-acme-v01.api.letsencrypt.org-")
    assert thumbprint(EC_KEY) in KeyStore.load(keys)


def test_acmesh_3x_layout_and_default_server(tmp_path, capsys):
    """
    acme.sh 3.x: ``DEFAULT_ACME_SERVER`` in account.conf is rewritten too,
    and the account key goes to the gateway's 3.x place
    (``ca/<host>/<path>/``); a domain conf without ``Le_API`` gets one.
    """
    home, keys = str(tmp_path / ".acme.sh"), str(tmp_path / "keys")
    acmesh_tree(home, layout="3.x")
    write(os.path.join(home, "account.conf"), f"DEFAULT_ACME_SERVER='{V1}'\n")
    write(os.path.join(home, "bare.example", "bare.example.conf"), "Le_Domain='bare.example'")
    code, out = adopt(capsys, *_adopt_args("acme.sh", home, keys))
    assert code == 0, out
    assert read(os.path.join(home, "account.conf")).decode() == f"DEFAULT_ACME_SERVER='{GATEWAY}'\n"
    assert read(os.path.join(home, "bare.example", "bare.example.conf")).decode() == \
        f"Le_Domain='bare.example'\nLe_API='{GATEWAY}'\n"
    assert read(os.path.join(home, "ca", "127.0.0.1", "directory", "account.key")) == pem(EC_KEY)


# --------------------------------------------------------------------------
# Every client: dry run, idempotence, undo
# --------------------------------------------------------------------------

@pytest.mark.parametrize("client", CLIENTS)
def test_dry_run_changes_no_file(tmp_path, capsys, client):
    """
    ``--dry-run`` prints every change (with the edited lines) and touches
    nothing: not the installation, not the key store.
    """
    root, keys = str(tmp_path / "install"), str(tmp_path / "keys")
    _build(client, root)
    before = snapshot(str(tmp_path))
    code, out = adopt(capsys, *_adopt_args(client, root, keys), "--dry-run")
    assert code == 0, out
    assert snapshot(str(tmp_path)) == before
    assert "would import key" in out and "would create" in out and "would edit" in out
    assert f"+Le_API='{GATEWAY}'" in out or f'+CA="{GATEWAY}"' in out or f"+server = {GATEWAY}" in out
    assert "dry run:" in out


@pytest.mark.parametrize("client", CLIENTS)
def test_adopting_twice_changes_nothing_more(tmp_path, capsys, client):
    """
    A second adoption finds nothing to do and leaves every file, backups,
    manifest and key store included, exactly as the first left them.
    """
    root, keys = str(tmp_path / "install"), str(tmp_path / "keys")
    _build(client, root)
    code, out = adopt(capsys, *_adopt_args(client, root, keys))
    assert code == 0, out
    after_first = snapshot(str(tmp_path))
    code, out = adopt(capsys, *_adopt_args(client, root, keys))
    assert code == 0, out
    assert "nothing to change" in out
    assert differences(after_first, snapshot(str(tmp_path))) == []


@pytest.mark.parametrize("client", CLIENTS)
def test_undo_restores_byte_for_byte(tmp_path, capsys, client):
    """
    ``--undo`` puts every backup back and removes what adoption created:
    the installation is byte for byte (and mode for mode) what it was; the
    imported keys stay in the key store.  A second undo has nothing to do.
    """
    root, keys = str(tmp_path / "install"), str(tmp_path / "keys")
    _build(client, root)
    before = snapshot(root)
    assert adopt(capsys, *_adopt_args(client, root, keys))[0] == 0
    assert snapshot(root) != before
    location = _adopt_args(client, root, keys)[:3]
    code, out = adopt(capsys, *location, "--undo")
    assert code == 0, out
    assert differences(before, snapshot(root)) == []
    assert os.listdir(keys)
    code, out = adopt(capsys, *location, "--undo")
    assert code == 2 and "nothing was adopted there" in out


def test_undo_after_the_client_rewrote_a_file(tmp_path, capsys):
    """
    When the client rewrote an adopted file since (certbot updates its
    renewal files on every renewal), undo says so and still restores the
    original.
    """
    root, keys = str(tmp_path / "le"), str(tmp_path / "keys")
    certbot_tree(root, names=("example.com",))
    conf = os.path.join(root, "renewal", "example.com.conf")
    original = read(conf)
    assert adopt(capsys, *_adopt_args("certbot", root, keys))[0] == 0
    write(conf, read(conf) + b"# certbot was here\n")
    code, out = adopt(capsys, "certbot", "--config-dir", root, "--undo")
    assert code == 0, out
    assert "changed since adoption" in out
    assert read(conf) == original


def test_manifest_paths_are_relative_to_the_installation(tmp_path, capsys):
    """
    The manifest names what adoption edited and created relative to the
    installation's root, and records where that root was.
    """
    root, keys = str(tmp_path / "le"), str(tmp_path / "keys")
    certbot_tree(root)
    assert adopt(capsys, *_adopt_args("certbot", root, keys))[0] == 0
    with open(os.path.join(root, ".acme-gateway-adopt.json")) as f:
        manifest = json.load(f)
    assert manifest["format"] == 2 and manifest["root"] == root
    paths = ([e["path"] for e in manifest["edited"]] + [e["backup"] for e in manifest["edited"]]
             + [e["path"] for e in manifest["created"]] + manifest["created_dirs"])
    assert paths and not any(os.path.isabs(p) for p in paths), paths
    assert "renewal/example.com.conf" in paths


def test_undo_of_a_copy_touches_only_the_copy(tmp_path, capsys):
    """
    Undoing a copy of an adopted installation restores the copy byte for
    byte and leaves the original — still adopted, its manifest included —
    as it was; the original can then be undone too.
    """
    root, keys = str(tmp_path / "le"), str(tmp_path / "keys")
    certbot_tree(root)
    before = snapshot(root)
    assert adopt(capsys, *_adopt_args("certbot", root, keys))[0] == 0
    adopted = snapshot(root)
    copy = str(tmp_path / "le-copy")
    shutil.copytree(root, copy, symlinks=True)
    code, out = adopt(capsys, "certbot", "--config-dir", copy, "--undo")
    assert code == 0, out
    assert differences(before, snapshot(copy)) == []
    assert differences(adopted, snapshot(root)) == []
    code, out = adopt(capsys, "certbot", "--config-dir", root, "--undo")
    assert code == 0, out
    assert differences(before, snapshot(root)) == []


def test_undo_of_a_moved_installation(tmp_path, capsys):
    """
    An installation moved after adoption is undone where it is now.
    """
    root, keys = str(tmp_path / "le"), str(tmp_path / "keys")
    certbot_tree(root)
    before = snapshot(root)
    assert adopt(capsys, *_adopt_args("certbot", root, keys))[0] == 0
    moved = str(tmp_path / "elsewhere")
    os.rename(root, moved)
    code, out = adopt(capsys, "certbot", "--config-dir", moved, "--undo")
    assert code == 0, out
    assert differences(before, snapshot(moved)) == []


def test_a_failed_undo_keeps_the_manifest(tmp_path, capsys):
    """
    A backup that is missing stops only its own file: undo restores the
    rest, exits 1, and keeps a manifest naming what is left, so that once
    the backup is back a second undo finishes the job.
    """
    root, keys = str(tmp_path / "le"), str(tmp_path / "keys")
    certbot_tree(root, names=("example.com", "www.example.org"))
    before = snapshot(root)
    assert adopt(capsys, *_adopt_args("certbot", root, keys))[0] == 0
    backup = os.path.join(root, "renewal", "example.com.conf.acme-gateway-backup")
    saved = str(tmp_path / "saved-backup")
    os.rename(backup, saved)
    code, out = adopt(capsys, "certbot", "--config-dir", root, "--undo")
    assert code == 1, out
    assert f"problem: backup {backup} is missing" in out
    assert ".acme-gateway-adopt.json keeps what is left" in out
    with open(os.path.join(root, ".acme-gateway-adopt.json")) as f:
        left = json.load(f)
    assert [e["path"] for e in left["edited"]] == ["renewal/example.com.conf"]
    assert left["created"] == [] and left["created_dirs"] == []
    assert read(os.path.join(root, "renewal", "www.example.org.conf")) == \
        before["renewal/www.example.org.conf"][1]
    os.rename(saved, backup)
    code, out = adopt(capsys, "certbot", "--config-dir", root, "--undo")
    assert code == 0, out
    assert differences(before, snapshot(root)) == []


def _outside_config(tmp_path, basedir) -> str:
    """
    A dehydrated config outside its BASEDIR (Debian: /etc/dehydrated/config).
    """
    dehydrated_tree(basedir)
    os.unlink(os.path.join(basedir, "config"))
    return write(str(tmp_path / "etc" / "dehydrated" / "config"),
                 f"# Debian's dehydrated config\nBASEDIR={basedir}\nCA=\"{V1}\"\nAPI=1\n")


def test_a_file_outside_the_installation_is_undone_only_where_adopted(tmp_path, capsys):
    """
    A config file outside the installation's root (recorded by its absolute
    path) is undone by the installation where it was adopted, never by a
    copy: the copy's undo restores its own files, says why it left the
    config alone, exits 1 and keeps that entry.
    """
    basedir, keys = str(tmp_path / "dehydrated"), str(tmp_path / "keys")
    config = _outside_config(tmp_path, basedir)
    original_config, before = read(config), snapshot(basedir)
    code, out = adopt(capsys, "dehydrated", "--basedir", basedir, "--config", config,
                      "--gateway", GATEWAY, "--keys", keys, "--host", "web1")
    assert code == 0, out
    adopted_config = read(config)
    copy = str(tmp_path / "dehydrated-copy")
    shutil.copytree(basedir, copy)
    code, out = adopt(capsys, "dehydrated", "--basedir", copy, "--undo")
    assert code == 1, out
    assert f"{config} lies outside the installation, which was adopted at {basedir}" in out
    assert read(config) == adopted_config
    assert differences(before, {k: v for k, v in snapshot(copy).items()
                                if k != ".acme-gateway-adopt.json"}) == []
    code, out = adopt(capsys, "dehydrated", "--basedir", basedir, "--config", config, "--undo")
    assert code == 0, out
    assert read(config) == original_config
    assert differences(before, snapshot(basedir)) == []


def test_dehydrated_config_alone_undoes_with_the_printed_command(tmp_path, capsys):
    """
    Adopted with ``--config FILE`` alone (``--basedir`` from the config's
    BASEDIR), the command adoption prints to undo — the same one with
    ``--undo`` — works.
    """
    basedir, keys = str(tmp_path / "var" / "lib" / "dehydrated"), str(tmp_path / "keys")
    config = _outside_config(tmp_path, basedir)
    original_config, before = read(config), snapshot(basedir)
    argv = ["dehydrated", "--config", config, "--gateway", GATEWAY, "--keys", keys, "--host", "web1"]
    code, out = adopt(capsys, *argv)
    assert code == 0, out
    assert "undo with the same command and --undo" in out
    assert read(config) != original_config
    code, out = adopt(capsys, *argv, "--undo")
    assert code == 0, out
    assert read(config) == original_config
    assert differences(before, snapshot(basedir)) == []


def test_gateway_url_is_checked(tmp_path, capsys):
    """
    A gateway URL that is not http(s), or holds characters that would need
    escaping in a shell file, is refused (exit 2) before anything happens;
    a bare base URL gets ``/directory``.
    """
    root, keys = str(tmp_path / "le"), str(tmp_path / "keys")
    certbot_tree(root, names=("example.com",))
    before = snapshot(str(tmp_path))
    for bad in ("ftp://127.0.0.1/directory", "http://127.0.0.1:4000/dir$(id)", "127.0.0.1:4000"):
        code, out = adopt(capsys, "certbot", "--config-dir", root, "--gateway", bad, "--keys", keys)
        assert code == 2, (bad, out)
    assert snapshot(str(tmp_path)) == before
    code, out = adopt(capsys, "certbot", "--config-dir", root, "--gateway", "http://127.0.0.1:4000",
                      "--keys", keys, "--host", "web1")
    assert code == 0, out
    assert f"server = {GATEWAY}" in read(os.path.join(root, "renewal", "example.com.conf")).decode()


def test_keys_come_from_the_environment(tmp_path, capsys, monkeypatch):
    """
    ``ACME_GATEWAY_KEYS`` names the key store when ``--keys`` is not given.
    """
    root, keys = str(tmp_path / "le"), str(tmp_path / "keys")
    identifier = certbot_tree(root, names=())
    monkeypatch.setenv("ACME_GATEWAY_KEYS", keys)
    code, out = adopt(capsys, "certbot", "--config-dir", root, "--gateway", GATEWAY, "--host", "h")
    assert code == 0, out
    assert os.listdir(keys) == [f"certbot-h-{identifier}.json"]


# --------------------------------------------------------------------------
# keys import
# --------------------------------------------------------------------------

def test_keys_import(tmp_path, capsys):
    """
    ``keys import`` copies every private key of the named files and of the
    directories below (others passed over) into the store, mode 0600,
    named after host, file and thumbprint; a key already there is not
    copied again; a broken key file is reported (exit 1).
    """
    keys = str(tmp_path / "keys")
    source = tmp_path / "from"
    rsa_path = write(str(source / "web1" / "account_key.pem"), pem(RSA_KEY), 0o644)
    write(str(source / "web1" / "registration_info.json"), "{}")
    write(str(source / "web1" / "cert.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    ec_path = write(str(tmp_path / "ec.key"), pem(EC_KEY), 0o600)
    code = main(["keys", "import", str(source), ec_path, "--keys", keys, "--host", "ops"])
    out = capsys.readouterr().out
    assert code == 0, out
    # A file name never ends in "_" or "-": nor does a thumbprint's part of it.
    rsa_name = f"imported-ops-account_key-{thumbprint(RSA_KEY)[:12].rstrip('_-')}.pem"
    assert sorted(os.listdir(keys)) == sorted([
        rsa_name, f"imported-ops-ec-{thumbprint(EC_KEY)[:12].rstrip('_-')}.pem"])
    for name in os.listdir(keys):
        assert stat.S_IMODE(os.stat(os.path.join(keys, name)).st_mode) == 0o600
    assert read(os.path.join(keys, rsa_name)) == read(rsa_path)
    assert "2 key(s) imported" in out

    broken = write(str(tmp_path / "broken.pem"), "-----BEGIN RSA PRIVATE KEY-----\nnope\n-----END RSA PRIVATE KEY-----\n")
    code = main(["keys", "import", rsa_path, broken, "--keys", keys])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "already in the store" in out and "broken.pem: unusable key" in out
    assert len(os.listdir(keys)) == 2


def test_keys_import_dry_run(tmp_path, capsys):
    """
    ``keys import --dry-run`` names what it would import and creates
    nothing, not even the store directory.
    """
    keys = str(tmp_path / "keys")
    path = write(str(tmp_path / "a.pem"), pem(RSA_KEY), 0o600)
    assert main(["keys", "import", path, "--keys", keys, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would import key " + thumbprint(RSA_KEY) in out
    assert not os.path.exists(keys)


def test_account_id_matches_certbot(tmp_path):
    """
    The account id adoption relies on is certbot's (MD5 of the public key's
    PEM), so the copy under the gateway keeps the id renewal files name.
    """
    identifier = write_account(str(tmp_path), V1, EC_KEY, "https://x/acme/reg/1")
    assert identifier == account_id(EC_KEY)
