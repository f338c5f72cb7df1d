"""
certbot's account storage, as certbot 1.x keeps it (its
``certbot/_internal/account.py``)::

    <config-dir>/accounts/<host[:port]><path>/<id>/
        private_key.json   mode 0400, the JWK with its private members
        regr.json          {"body": {}, "uri": <registration URL>,
                            "new_authzr_uri": <new-authz URL>}
        meta.json          {"creation_dt": RFC 3339, "creation_host": ...}

where ``<id>`` is the MD5 hex digest of the public key's PEM
SubjectPublicKeyInfo.  Writing this lets a certbot find an existing account
under a new server URL (the gateway's), so it keeps its key instead of
registering a new one.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
from urllib.parse import urlsplit, urlunsplit

import josepy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def accounts_dir(config_dir: str, server_url: str) -> str:
    """
    ``accounts/<host:port><path>`` for ``server_url``, as certbot derives it.
    """
    parsed = urlsplit(server_url)
    return os.path.join(config_dir, "accounts", parsed.netloc + parsed.path)


def account_id(key) -> str:
    """
    certbot's account id for a private key.
    """
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.md5(public_pem).hexdigest()


def _jwk(key) -> josepy.JWK:
    if isinstance(key, rsa.RSAPrivateKey):
        return josepy.JWKRSA(key=key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return josepy.JWKEC(key=key)
    raise TypeError(f"unsupported account key {type(key).__name__}")


def write_account(config_dir: str, server_url: str, key, regr_uri: str,
                  new_authz_uri: str | None = None, creation_host: str | None = None) -> str:
    """
    Write (or rewrite) the account of ``key`` for ``server_url``.

    :param regr_uri: the registration URL recorded in ``regr.json``.
    :param new_authz_uri: the new-authz URL; Boulder's path beside the
        directory by default.
    :return: the account id.
    """
    if new_authz_uri is None:
        parsed = urlsplit(server_url)
        new_authz_uri = urlunsplit(parsed._replace(path="/acme/new-authz", query="", fragment=""))
    identifier = account_id(key)
    directory = os.path.join(accounts_dir(config_dir, server_url), identifier)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key_path = os.path.join(directory, "private_key.json")
    if os.path.exists(key_path):
        os.unlink(key_path)
    with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400), "w") as f:
        f.write(json.dumps(_jwk(key).to_json()))
    with open(os.path.join(directory, "regr.json"), "w") as f:
        json.dump({"body": {}, "uri": regr_uri, "new_authzr_uri": new_authz_uri}, f)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    with open(os.path.join(directory, "meta.json"), "w") as f:
        json.dump({"creation_dt": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "creation_host": creation_host or socket.gethostname()}, f)
    return identifier
