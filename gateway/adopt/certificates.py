"""
Finding the certificates a legacy client already holds, for the gateway's
renewal inventory.

The gateway plans a renewal as one order for a certificate's whole name
set, and names the certificate it renews in ARI ``replaces``; both need to
know the certificate.  Those issued through the gateway it knows; those a
client got from the old CA it learns here, from the client's own files:

* certbot: each ``renewal/<lineage>.conf`` names its ``cert`` and
  ``chain`` (by default ``live/<lineage>/cert.pem`` and ``chain.pem``) and,
  in ``[renewalparams]``, the ``account`` whose ``private_key.json`` is
  under ``accounts/``;
* dehydrated: each line of ``domains.txt`` is one certificate, kept in
  ``certs/<first name, or the alias after '>'>/cert.pem`` and
  ``chain.pem``, of the one account of its CA;
* acme.sh: each ``<domain>/<domain>.conf`` (``<domain>_ecc/``) is one
  certificate, ``<domain>.cer`` with ``ca.cer``, of the account key of the
  server its ``Le_API`` names.

A certificate is owned by an account key: that key's thumbprint is what the
gateway files it under.  Reading only; the process level writes what is
found into the state file.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.adopt import lines as textlines
from gateway.adopt.changes import Plan, read_small
from gateway.adopt.keyimport import read_key
from gateway.keys.jose import AccountKey
from gateway.keys.keystore import KeyFileError


@attrs.frozen
class HeldCertificate:
    """
    A certificate a client holds, with the account that got it.

    :ivar source: the file it was read from.
    :ivar leaf_der: the leaf certificate.
    :ivar chain_ders: its issuers, leaf side first (possibly none).
    :ivar thumbprint: the owning account key's RFC 7638 thumbprint.
    :ivar public_jwk: that key's public JWK, for a registration the
        gateway has not seen yet.
    """

    source: str
    leaf_der: bytes = attrs.field(repr=False)
    chain_ders: Tuple[bytes, ...] = attrs.field(repr=False)
    thumbprint: str
    public_jwk: Dict[str, object] = attrs.field(repr=False, hash=False)


def pem_certificates(data: bytes) -> List[bytes]:
    """
    The DER of every certificate of a PEM file, in file order.

    :raises ValueError: when a block does not parse.
    """
    marker = b"-----BEGIN CERTIFICATE-----"
    found = []
    for block in data.split(marker)[1:]:
        certificate = x509.load_pem_x509_certificate(marker + block.split(b"-----END CERTIFICATE-----")[0]
                                                     + b"-----END CERTIFICATE-----\n")
        found.append(certificate.public_bytes(serialization.Encoding.DER))
    return found


def _held(plan: Plan, cert_path: str, chain_path: Optional[str],
          key: Optional[AccountKey]) -> Optional[HeldCertificate]:
    """
    The certificate at ``cert_path`` (issuers from ``chain_path``, or after
    the leaf in the same file), owned by ``key``; a problem of ``plan`` when
    it cannot be read, a note when it has no known owner.
    """
    try:
        ders = pem_certificates(read_small(cert_path))
        chain = pem_certificates(read_small(chain_path)) if (
            chain_path and os.path.isfile(chain_path)) else []
    except (OSError, ValueError) as error:
        plan.problem(cert_path, f"certificate not adopted, cannot read: "
                                f"{getattr(error, 'strerror', None) or error}")
        return None
    if not ders:
        plan.problem(cert_path, "certificate not adopted: the file holds no certificate")
        return None
    if key is None:
        plan.notes.append(f"{cert_path}: no account key found for it; certificate not adopted")
        return None
    return HeldCertificate(source=cert_path, leaf_der=ders[0], chain_ders=tuple(chain or ders[1:]),
                           thumbprint=key.thumbprint, public_jwk=dict(key.jwk.to_json()))


def _key(path: str) -> Optional[AccountKey]:
    try:
        _, key = read_key(path)
    except (OSError, ValueError, KeyFileError):
        return None
    return key


# --------------------------------------------------------------------------
# certbot
# --------------------------------------------------------------------------

def _certbot_account_keys(config_dir: str) -> Dict[str, AccountKey]:
    """
    Each certbot account id below ``accounts/`` and its key.
    """
    keys: Dict[str, AccountKey] = {}
    root = os.path.join(config_dir, "accounts")
    for directory, subdirectories, files in os.walk(root, followlinks=True):
        subdirectories.sort()
        if "private_key.json" in files:
            subdirectories[:] = []
            key = _key(os.path.join(directory, "private_key.json"))
            if key is not None:
                keys.setdefault(os.path.basename(directory), key)
    return keys


def _configobj_value(lines, name: str, section: Optional[str]) -> Optional[str]:
    settings, _ = textlines.find_configobj(lines, name, section)
    return settings[0].value if settings else None


def certbot_certificates(plan: Plan, config_dir: str) -> List[HeldCertificate]:
    """
    Every certificate of a certbot ``--config-dir`` with a renewal file.
    """
    keys = _certbot_account_keys(config_dir)
    renewal = os.path.join(config_dir, "renewal")
    found = []
    for name in sorted(os.listdir(renewal)) if os.path.isdir(renewal) else []:
        path = os.path.join(renewal, name)
        if not name.endswith(".conf") or not os.path.isfile(path):
            continue
        lineage = name[:-len(".conf")]
        try:
            lines = textlines.split_lines(read_small(path))
            cert = _configobj_value(lines, "cert", None)
            chain = _configobj_value(lines, "chain", None)
            account = _configobj_value(lines, "account", "renewalparams")
        except (OSError, ValueError):
            continue  # the server-line planning already named it a problem
        live = os.path.join(config_dir, "live", lineage)
        cert = cert if cert and os.path.isfile(cert) else os.path.join(live, "cert.pem")
        chain = chain if chain and os.path.isfile(chain) else os.path.join(live, "chain.pem")
        if not os.path.isfile(cert):
            plan.notes.append(f"renewal/{name}: no certificate at {cert}; nothing to adopt")
            continue
        held = _held(plan, cert, chain, keys.get(account or ""))
        if held is not None:
            found.append(held)
    return found


# --------------------------------------------------------------------------
# dehydrated
# --------------------------------------------------------------------------

def dehydrated_certificate_dirs(domains_txt: str) -> List[str]:
    """
    The certificate directory name of each line of a ``domains.txt``: the
    alias after ``>`` when there is one, else the first name (comments and
    blank lines skipped).
    """
    names = []
    for raw in read_small(domains_txt).decode("utf-8", "replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if ">" in line:
            alias = line.split(">", 1)[1].split()
            if alias:
                names.append(alias[0])
                continue
        names.append(line.split()[0])
    return names


def dehydrated_certificates(plan: Plan, basedir: str, domains_txt: Optional[str],
                            certdir: Optional[str], account_key: Optional[str]) -> List[HeldCertificate]:
    """
    Every certificate of a dehydrated installation's ``domains.txt``,
    owned by the account whose key is at ``account_key``.
    """
    domains_txt = domains_txt or os.path.join(basedir, "domains.txt")
    certdir = certdir or os.path.join(basedir, "certs")
    if not os.path.isfile(domains_txt):
        plan.notes.append(f"no {domains_txt}: no certificate to adopt")
        return []
    key = _key(account_key) if account_key else None
    found = []
    for directory in dehydrated_certificate_dirs(domains_txt):
        cert = os.path.join(certdir, directory, "cert.pem")
        if not os.path.isfile(cert):
            plan.notes.append(f"domains.txt names {directory}, which has no {cert} yet")
            continue
        held = _held(plan, cert, os.path.join(certdir, directory, "chain.pem"), key)
        if held is not None:
            found.append(held)
    return found


# --------------------------------------------------------------------------
# acme.sh
# --------------------------------------------------------------------------

def acmesh_certificates(plan: Plan, confs: List[Tuple[str, Optional[str]]],
                        key_of_server) -> List[HeldCertificate]:
    """
    The certificate of each acme.sh domain conf.

    :param confs: each ``<domain>.conf`` and the ``Le_API`` it named.
    :param key_of_server: the account key of a server URL (or of `None`:
        the default), or `None`.
    """
    found = []
    for conf, server in confs:
        directory = os.path.dirname(conf)
        domain = os.path.basename(conf)[:-len(".conf")]
        cert = os.path.join(directory, f"{domain}.cer")
        if not os.path.isfile(cert):
            plan.notes.append(f"{conf}: no {cert} yet; nothing to adopt")
            continue
        held = _held(plan, cert, os.path.join(directory, "ca.cer"), key_of_server(server))
        if held is not None:
            found.append(held)
    return found
