"""
``acme-gateway adopt … --state FILE`` adds the certificates a client
already holds to the gateway's renewal inventory (issue 14): certbot's
``renewal/*.conf`` with their ``live/`` files, dehydrated's ``domains.txt``
with ``certs/``, acme.sh's domain confs with ``<domain>.cer``.  The first
renewal of an adopted certificate through the gateway is then one order
for its whole name set, carrying ARI ``replaces``.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from gateway.clients.certbot import write_account
from gateway.keys.jose import b64url
from gateway.process.cli import main
from gateway.process.testing import build_test_gateway
from gateway.store.leaf import serial_der_bytes
from gateway.store.sqlite import SQLiteStore
from gateway.adopt.dehydrated import account_dir_name
from tests.test_adopt import GATEWAY, V1, pem, write
from tests.test_renewals import NAMES, RenewalTestCase
from tests.test_v1_face import KEY, OTHER

LIVE_RENEWAL = """\
version = 1.32.0
archive_dir = {root}/archive/{name}
cert = {root}/live/{name}/cert.pem
privkey = {root}/live/{name}/privkey.pem
chain = {root}/live/{name}/chain.pem
fullchain = {root}/live/{name}/fullchain.pem

[renewalparams]
authenticator = standalone
account = {account}
server = {server}
"""


def pem_of(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def der_of(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def certbot_with_certificate(root: str, key, leaf: x509.Certificate, chain) -> str:
    """
    A certbot installation whose one lineage holds ``leaf`` (and ``chain``),
    got by the account of ``key`` from the v1 CA.
    """
    account = write_account(root, V1, key.private_key, "https://acme-v01.example/acme/reg/1")
    name = sorted(leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))[0]
    write(os.path.join(root, "renewal", f"{name}.conf"),
          LIVE_RENEWAL.format(root=root, name=name, account=account, server=V1))
    live = os.path.join(root, "live", name)
    write(os.path.join(live, "cert.pem"), pem_of(leaf))
    write(os.path.join(live, "chain.pem"), b"".join(pem_of(c) for c in chain))
    return name


def run(capsys, *args) -> tuple:
    code = main(["adopt", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _fired(deferred):
    outcome = []
    deferred.addBoth(outcome.append)
    (result,) = outcome
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


class AdoptedCertificateTests(RenewalTestCase):
    """
    A certificate the client got before the gateway knew it (here: from the
    same CA through another gateway, whose state is then thrown away, as
    from the v1 API of a CA that also serves v2): adopted from the client's
    files into a fresh state file, it is renewed at one order that replaces
    it.
    """

    def setUp(self):
        super().setUp()
        self.root = tempfile.mkdtemp(prefix="adopted-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.state = os.path.join(self.root, "state.sqlite3")

    def old_certificate(self):
        self.register()
        old = self.first_certificate()
        return old, [self.ca.intermediate]

    def gateway_on_state(self):
        store = SQLiteStore.inline(self.state, clock=self.ca.clock, upstream=self.ca.directory_url)
        self.gateway = build_test_gateway(self.keys, ca=self.ca, store=store)
        self.base = self.gateway.base_url
        self.clients = {}
        self.addCleanup(lambda: _fired(store.close()))
        return store

    def test_certbot_certificate_adopted_then_renewed_at_one_order_replacing_it(self):
        old, chain = self.old_certificate()
        config_dir = os.path.join(self.root, "letsencrypt")
        certbot_with_certificate(config_dir, KEY, old, chain)
        code = main(["adopt", "certbot", "--config-dir", config_dir, "--gateway", GATEWAY,
                     "--keys", os.path.join(self.root, "keys"), "--state", self.state])
        self.assertEqual(code, 0)

        store = self.gateway_on_state()
        (held,) = _fired(store.current_certificates())
        self.assertEqual(held.names, NAMES)
        self.assertEqual(held.serial, format(old.serial_number, "x"))
        self.assertEqual(held.adopted_from, os.path.join(config_dir, "live", NAMES[0], "cert.pem"))
        account = _fired(store.account_by_id(held.account_id))
        self.assertEqual(account.thumbprint, KEY.thumbprint)
        self.assertEqual(account.upstream_url, None, "no upstream account before the first request")
        (issuer_id,) = held.issuer_ids
        self.assertEqual(_fired(store.issuer_by_id(issuer_id)).der, der_of(self.ca.intermediate))

        orders = self.ca.counts["newOrder"]
        _, issued = self.renew()
        self.assertEqual(issued.status, 201, issued.body)
        self.assertEqual(self.ca.counts["newOrder"] - orders, 1, "one order for the renewal")
        order = self.ca.orders[-1]
        self.assertEqual(sorted(order.names), list(NAMES))
        aki = old.extensions.get_extension_for_oid(
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value.key_identifier
        self.assertEqual(order.replaces, f"{b64url(aki)}.{b64url(serial_der_bytes(old.serial_number))}")

    def test_without_adoption_the_same_renewal_is_not_planned(self):
        """
        The control: the same fresh state file without ``adopt`` knows no
        certificate, so the renewal's first new-authz orders its name alone
        and no order replaces anything.
        """
        self.old_certificate()
        self.gateway_on_state()
        orders = self.ca.counts["newOrder"]
        self.renew()
        self.assertGreater(self.ca.counts["newOrder"] - orders, 1)
        self.assertTrue(all(o.replaces is None for o in self.ca.orders[-(len(NAMES)):]))

    def test_adopting_twice_adds_nothing_and_dry_run_nothing_at_all(self):
        old, chain = self.old_certificate()
        config_dir = os.path.join(self.root, "letsencrypt")
        certbot_with_certificate(config_dir, KEY, old, chain)
        args = ["adopt", "certbot", "--config-dir", config_dir, "--gateway", GATEWAY,
                "--keys", os.path.join(self.root, "keys"), "--state", self.state]
        self.assertEqual(main(args + ["--dry-run"]), 0)
        self.assertFalse(os.path.exists(self.state))
        self.assertEqual(main(args), 0)
        self.assertEqual(main(args), 0)
        store = self.gateway_on_state()
        self.assertEqual(len(_fired(store.current_certificates())), 1)
        self.assertEqual(len(_fired(store.list_accounts())), 1)


# --------------------------------------------------------------------------
# Each client's files, without a CA: a certificate made here
# --------------------------------------------------------------------------

def make_chain(names):
    """
    A leaf for ``names`` with its issuer and root (three certificates, AKI
    set), leaf first.
    """
    import datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    now = datetime.datetime.now(datetime.timezone.utc)

    def make(subject, issuer_name, key, signer, ca, san=None):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=89))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       signer.public_key()), critical=False))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in san]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    root_name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Old Root")])
    mid_name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Old Intermediate")])
    leaf_name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, names[0])])
    root = make(root_name, root_name, keys[0], keys[0], True)
    intermediate = make(mid_name, root_name, keys[1], keys[0], True)
    leaf = make(leaf_name, mid_name, keys[2], keys[1], False, names)
    return leaf, intermediate, root


def stored(state: str) -> list:
    store = SQLiteStore.inline(state)
    try:
        certificates = _fired(store.current_certificates())
        return [(c, _fired(store.account_by_id(c.account_id)).thumbprint,
                 [_fired(store.issuer_by_id(i)) for i in c.issuer_ids]) for c in certificates]
    finally:
        _fired(store.close())


def test_certbot_chain_is_stored_with_its_up_links(tmp_path, capsys):
    leaf, intermediate, root = make_chain(["www.example.com", "example.com"])
    config_dir = str(tmp_path / "letsencrypt")
    certbot_with_certificate(config_dir, KEY, leaf, [intermediate, root])
    state = str(tmp_path / "state.sqlite3")
    code, output = run(capsys, "certbot", "--config-dir", config_dir, "--gateway", GATEWAY,
                       "--keys", str(tmp_path / "keys"), "--state", state)
    assert code == 0, output
    assert "added to the renewal inventory" in output
    ((held, thumbprint, issuers),) = stored(state)
    assert (held.names, thumbprint) == (("example.com", "www.example.com"), KEY.thumbprint)
    assert [i.der for i in issuers] == [der_of(intermediate), der_of(root)]
    assert issuers[0].parent_id == issuers[1].id and issuers[1].parent_id is None
    assert held.authority_key_id == leaf.extensions.get_extension_for_oid(
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value.key_identifier.hex()


def test_without_state_certificates_are_only_listed(tmp_path, capsys):
    leaf, intermediate, _ = make_chain(["example.com"])
    config_dir = str(tmp_path / "letsencrypt")
    certbot_with_certificate(config_dir, KEY, leaf, [intermediate])
    code, output = run(capsys, "certbot", "--config-dir", config_dir, "--gateway", GATEWAY,
                       "--keys", str(tmp_path / "keys"))
    assert code == 0, output
    assert "not added to the renewal inventory (no --state FILE given)" in output


def test_an_unreadable_certificate_is_a_problem_and_the_rest_is_adopted(tmp_path, capsys):
    good, intermediate, _ = make_chain(["good.example.com"])
    config_dir = str(tmp_path / "letsencrypt")
    certbot_with_certificate(config_dir, KEY, good, [intermediate])
    bad, _, _ = make_chain(["bad.example.com"])
    certbot_with_certificate(config_dir, KEY, bad, [])
    write(os.path.join(config_dir, "live", "bad.example.com", "cert.pem"),
          b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    state = str(tmp_path / "state.sqlite3")
    code, output = run(capsys, "certbot", "--config-dir", config_dir, "--gateway", GATEWAY,
                       "--keys", str(tmp_path / "keys"), "--state", state)
    assert code == 1, output
    assert "bad.example.com/cert.pem" in output and "certificate not adopted" in output
    assert [held.names for held, _, _ in stored(state)] == [("good.example.com",)]


def test_dehydrated_domains_txt_with_an_alias(tmp_path, capsys):
    basedir = str(tmp_path / "dehydrated")
    write(os.path.join(basedir, "config"), f'BASEDIR={basedir}\nCA="{V1}"\n')
    write(os.path.join(basedir, "accounts", account_dir_name(V1), "account_key.pem"),
          pem(OTHER.private_key), 0o600)
    write(os.path.join(basedir, "domains.txt"),
          "# certificates\nexample.org www.example.org\nmail.example.org > mail  # alias\n")
    first, first_issuer, _ = make_chain(["example.org", "www.example.org"])
    aliased, aliased_issuer, _ = make_chain(["mail.example.org"])
    for directory, leaf, issuer in (("example.org", first, first_issuer),
                                    ("mail", aliased, aliased_issuer)):
        write(os.path.join(basedir, "certs", directory, "cert.pem"), pem_of(leaf))
        write(os.path.join(basedir, "certs", directory, "chain.pem"), pem_of(issuer))
    state = str(tmp_path / "state.sqlite3")
    code, output = run(capsys, "dehydrated", "--basedir", basedir, "--gateway", GATEWAY,
                       "--keys", str(tmp_path / "keys"), "--state", state)
    assert code == 0, output
    found = {held.names: (thumbprint, len(issuers)) for held, thumbprint, issuers in stored(state)}
    assert found == {("example.org", "www.example.org"): (OTHER.thumbprint, 1),
                     ("mail.example.org",): (OTHER.thumbprint, 1)}


def test_acmesh_domain_confs_owned_by_their_servers_key(tmp_path, capsys):
    home = str(tmp_path / "acme.sh")
    write(os.path.join(home, "ca", "acme-v01.api.letsencrypt.org", "account.key"),
          pem(KEY.private_key), 0o600)
    write(os.path.join(home, "account.conf"), "ACCOUNT_EMAIL='admin@example.com'\n")
    leaf, issuer, _ = make_chain(["example.net", "www.example.net"])
    ecc, ecc_issuer, _ = make_chain(["example.io"])
    for directory, domain, certificate, chain in (
            ("example.net", "example.net", leaf, issuer),
            ("example.io_ecc", "example.io", ecc, ecc_issuer)):
        write(os.path.join(home, directory, f"{domain}.conf"),
              f"Le_Domain='{domain}'\nLe_API='{V1}'\n")
        write(os.path.join(home, directory, f"{domain}.cer"), pem_of(certificate))
        write(os.path.join(home, directory, "ca.cer"), pem_of(chain))
    state = str(tmp_path / "state.sqlite3")
    code, output = run(capsys, "acme.sh", "--home", home, "--gateway", GATEWAY,
                       "--keys", str(tmp_path / "keys"), "--state", state)
    assert code == 0, output
    found = {held.names: (thumbprint, held.adopted_from) for held, thumbprint, _ in stored(state)}
    assert found == {
        ("example.net", "www.example.net"): (KEY.thumbprint,
                                             os.path.join(home, "example.net", "example.net.cer")),
        ("example.io",): (KEY.thumbprint, os.path.join(home, "example.io_ecc", "example.io.cer")),
    }


def test_an_unusable_state_file_is_a_problem_naming_it(tmp_path, capsys):
    leaf, intermediate, _ = make_chain(["example.com"])
    config_dir = str(tmp_path / "letsencrypt")
    certbot_with_certificate(config_dir, KEY, leaf, [intermediate])
    state = str(tmp_path / "no-such-dir" / "state.sqlite3")
    code, output = run(capsys, "certbot", "--config-dir", config_dir, "--gateway", GATEWAY,
                       "--keys", str(tmp_path / "keys"), "--state", state)
    assert code == 1, output
    assert f"problem: --state {state}:" in output
    assert "no certificate added to the renewal inventory" in output
    assert "Traceback" not in output
