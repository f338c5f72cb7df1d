"""
`gateway.translate.requests`, the v1 (and draft-era v2) payloads the
gateway acts on, checked before any account is bound: each field's
refusal and its words (what the client reads, Boulder's where Boulder had
them), the values kept for checks that wait for ownership, revocation by
the certificate's own key (only a key a JWS can be signed with), and both
forms of a key change.
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from gateway.keys.jose import AccountKey, b64url, public_jwk, thumbprint
from gateway.status import Status
from gateway.translate import requests
from gateway.translate.errors import CSRRejected, IdentifierRejected, InvalidContact, Malformed
from gateway.translate.requests import ABSENT, Signer
from tests.test_v1_face import make_csr

EC_PRIVATE = ec.generate_private_key(ec.SECP256R1())
KEY = AccountKey.from_private_key(EC_PRIVATE)
NEW_PRIVATE = ec.generate_private_key(ec.SECP256R1())
NEW = AccountKey.from_private_key(NEW_PRIVATE)
SIGNER = Signer(KEY.jwk, KEY.thumbprint, "192.0.2.1", "certbot/0.31")


def certificate_for(private_key, sign_with=None, serial=0x1A2B):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cert.example.test")])
    issuer_key = sign_with or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(private_key.public_key()).serial_number(serial)
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=90))
                   .sign(issuer_key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.DER)


# -- registrations --------------------------------------------------------------


def test_new_reg_keeps_contact_and_agreement():
    reg = requests.new_reg(SIGNER, {"resource": "new-reg", "contact": ["mailto:a@example.test"],
                                    "agreement": "https://ca.test/terms"})
    assert reg == requests.NewReg(SIGNER, ("mailto:a@example.test",), "https://ca.test/terms")
    assert requests.new_reg(SIGNER, {"resource": "new-reg"}) == requests.NewReg(SIGNER, (), None)
    assert requests.new_reg(SIGNER, {"contact": None, "agreement": ""}) == requests.NewReg(SIGNER, (), None)
    # what Boulder's registration objects carry is accepted and ignored
    requests.new_reg(SIGNER, {"resource": "new-reg", "key": {}, "status": "valid", "id": 1,
                              "initialIp": "x", "createdAt": "y", "authorizations": "z",
                              "certificates": "w"})


@pytest.mark.parametrize("payload, error, detail", [
    ({"resource": "new-reg", "colour": 1, "age": 2}, Malformed, "Unknown registration field(s): age, colour"),
    ({"contact": "mailto:a@example.test"}, Malformed,
     "Request payload did not parse as JSON: contact must be a list of strings"),
    ({"contact": ["mailto:a@example.test", 7]}, Malformed,
     "Request payload did not parse as JSON: contact must be a list of strings"),
    ({"contact": ["tel:+15555550100"]}, InvalidContact,
     "Contact method 'tel:+15555550100' is not supported: use mailto: addresses"),
    ({"contact": ["mailto:nobody"]}, InvalidContact,
     "Contact method 'mailto:nobody' is not supported: use mailto: addresses"),
    ({"contact": ["admin@example.test"]}, InvalidContact,
     "Contact method 'admin@example.test' is not supported: use mailto: addresses"),
    ({"contact": ["mailto:" + "a" * 301 + "@example.test"]}, InvalidContact, None),
    ({"agreement": 5}, Malformed, "agreement must be a string"),
])
def test_new_reg_refusals(payload, error, detail):
    with pytest.raises(error) as raised:
        requests.new_reg(SIGNER, payload)
    assert type(raised.value) is error
    if detail is not None:
        assert raised.value.detail == detail


def test_a_contact_of_320_characters_is_the_longest():
    longest = "mailto:" + "a" * (320 - len("mailto:") - len("@example.test")) + "@example.test"
    assert len(longest) == 320
    assert requests.new_reg(SIGNER, {"contact": [longest]}).contact == (longest,)
    with pytest.raises(InvalidContact):
        requests.new_reg(SIGNER, {"contact": ["mailto:a" + longest[len("mailto:"):]]})


def test_reg_update_changes_only_what_it_names():
    assert requests.reg_update(SIGNER, "7", {"resource": "reg"}) == requests.RegUpdate(
        SIGNER, "7", None, None, None)
    update = requests.reg_update(SIGNER, "7", {"resource": "reg", "contact": [],
                                               "agreement": "https://ca.test/terms",
                                               "status": "deactivated"})
    assert update == requests.RegUpdate(SIGNER, "7", (), "https://ca.test/terms", Status.DEACTIVATED)
    assert requests.reg_update(SIGNER, "7", {"status": "valid"}).status is Status.VALID
    with pytest.raises(Malformed) as raised:
        requests.reg_update(SIGNER, "7", {"status": "revoked"})
    assert raised.value.detail == "Invalid value provided for status field"
    with pytest.raises(Malformed):
        requests.reg_update(SIGNER, "7", {"colour": "red"})
    with pytest.raises(InvalidContact):
        requests.reg_update(SIGNER, "7", {"contact": ["tel:1"]})


# -- authorizations and challenges --------------------------------------------------


def test_new_authz_checks_the_name():
    authz = requests.new_authz(SIGNER, {"identifier": {"type": "dns", "value": "WWW.Example.test"}})
    assert authz.name.spelled == "www.example.test"
    assert requests.new_authz(SIGNER, {"identifier": {"type": "dns", "value": "*.example.test"}}).name.wildcard
    with pytest.raises(IdentifierRejected):
        requests.new_authz(SIGNER, {})


def test_challenge_and_authorization_posts_keep_the_payload_unjudged():
    answer = requests.answer_challenge(SIGNER, "a1", "c1", {"type": "http-01", "keyAuthorization": "k"})
    assert answer == requests.AnswerChallenge(SIGNER, "a1", "c1", "http-01", "k")
    bare = requests.answer_challenge(SIGNER, "a1", "c1", {})
    assert bare.type is ABSENT and bare.key_authorization is ABSENT
    assert repr(ABSENT) == "ABSENT"
    assert requests.deactivate_authz(SIGNER, "a1", {"status": "deactivated"}).deactivate is True
    assert requests.deactivate_authz(SIGNER, "a1", {"status": "valid"}).deactivate is False
    assert requests.deactivate_authz(SIGNER, "a1", {}) == requests.DeactivateAuthz(SIGNER, "a1", False)


# -- certificates ---------------------------------------------------------------


def test_new_cert_parses_the_csr_once():
    der = make_csr(["b.example.test", "A.example.test"])
    cert = requests.new_cert(SIGNER, {"csr": b64url(der)})
    assert cert.csr.der == der
    assert cert.names == ("a.example.test", "b.example.test")


@pytest.mark.parametrize("csr, detail", [
    (None, "Error unmarshaling certificate request: csr must be a base64url string"),
    ("", "Error unmarshaling certificate request: csr must be a base64url string"),
    (42, "Error unmarshaling certificate request: csr must be a base64url string"),
    ("!!not base64!!", "Error unmarshaling certificate request: csr is not base64url"),
])
def test_new_cert_refuses_a_csr_that_is_no_base64url(csr, detail):
    with pytest.raises(CSRRejected) as raised:
        requests.new_cert(SIGNER, {} if csr is None else {"csr": csr})
    assert raised.value.detail == detail


def test_a_csr_for_the_account_key_is_refused():
    with pytest.raises(CSRRejected) as raised:
        requests.new_cert(SIGNER, {"csr": b64url(make_csr(["a.example.test"], key=EC_PRIVATE))})
    assert raised.value.detail == "Certificate public key must be different than account key"
    rsa_private = rsa.generate_private_key(65537, 2048)
    rsa_signer = Signer(public_jwk(rsa_private), thumbprint(public_jwk(rsa_private)))
    with pytest.raises(CSRRejected):
        requests.new_cert(rsa_signer, {"csr": b64url(make_csr(["a.example.test"], key=rsa_private))})
    finalize = requests.finalize_order(SIGNER, "o1", {"csr": b64url(make_csr(["a.example.test"]))})
    assert (finalize.order_id, [n.spelled for n in finalize.csr.names]) == ("o1", ["a.example.test"])
    with pytest.raises(CSRRejected):
        requests.finalize_order(SIGNER, "o1", {"csr": b64url(make_csr(["a.example.test"], key=EC_PRIVATE))})


def test_spki_of_jwk():
    assert requests.spki_of_jwk(KEY.jwk) == EC_PRIVATE.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    class NoNumbers:
        key = object()

    assert requests.spki_of_jwk(NoNumbers()) is None


def test_revoke_by_the_account_or_by_the_certificates_key():
    other = requests.revoke(SIGNER, {"certificate": b64url(certificate_for(NEW_PRIVATE)), "reason": 4})
    assert (other.serial, other.reason, other.by_certificate_key) == ("1a2b", 4, False)
    own_der = certificate_for(EC_PRIVATE)
    own = requests.revoke(SIGNER, {"certificate": b64url(own_der)})
    assert (own.reason, own.by_certificate_key, own.certificate_der) == (None, True, own_der)
    for reason in requests.ALLOWED_REASONS:
        assert requests.revoke(SIGNER, {"certificate": b64url(certificate_for(NEW_PRIVATE)),
                                        "reason": reason}).reason == reason
    assert requests.ALLOWED_REASONS == (0, 1, 3, 4, 5)


@pytest.mark.parametrize("private_key", [
    ed25519.Ed25519PrivateKey.generate(),
    ec.generate_private_key(ec.SECP521R1()),
])
def test_a_certificate_whose_key_signs_no_jws_was_not_signed_by_it(private_key):
    der = certificate_for(private_key)
    assert requests.revoke(SIGNER, {"certificate": b64url(der)}).by_certificate_key is False


@pytest.mark.parametrize("payload, detail", [
    ({}, "Unable to decode certificate: certificate must be base64url DER"),
    ({"certificate": ""}, "Unable to decode certificate: certificate must be base64url DER"),
    ({"certificate": 3}, "Unable to decode certificate: certificate must be base64url DER"),
    ({"certificate": "!!"}, "Unable to decode certificate"),
    ({"certificate": b64url(b"not DER")}, "Unable to decode certificate"),
])
def test_revoke_refuses_what_is_no_certificate(payload, detail):
    with pytest.raises(Malformed) as raised:
        requests.revoke(SIGNER, payload)
    assert raised.value.detail == detail


@pytest.mark.parametrize("reason", [2, 6, 9, -1, True, "1", 1.0])
def test_revoke_refuses_reasons_boulder_did_not_accept(reason):
    with pytest.raises(Malformed) as raised:
        requests.revoke(SIGNER, {"certificate": b64url(certificate_for(NEW_PRIVATE)), "reason": reason})
    assert raised.value.detail == "unsupported revocation reason code provided"


# -- key change -------------------------------------------------------------------


def test_v1_key_change():
    change = requests.key_change(SIGNER, NEW.jwk, {"newKey": NEW.public_jwk_json, "account": "acct-url"},
                                 lambda i: f"/reg/{i}")
    assert (change.account, change.new_thumbprint, change.new_jwk) == ("acct-url", NEW.thumbprint, NEW.jwk)
    assert change.registration_url(3) == "/reg/3"
    with pytest.raises(Malformed) as raised:
        requests.key_change(SIGNER, NEW.jwk, {"newKey": KEY.public_jwk_json}, str)
    assert raised.value.detail == "New JWK in inner payload doesn't match key used to sign inner JWS"
    with pytest.raises(Malformed) as raised:
        requests.key_change(SIGNER, KEY.jwk, {"newKey": KEY.public_jwk_json}, str)
    assert raised.value.detail == "New key is the same as the old key"


def test_v2_key_change_in_both_forms():
    kid = "https://gw.test/acct/1"
    rfc = requests.key_change_v2(SIGNER, NEW.jwk, {"account": kid, "oldKey": KEY.public_jwk_json}, kid)
    draft = requests.key_change_v2(SIGNER, NEW.jwk, {"account": kid, "newKey": NEW.public_jwk_json}, kid)
    for change in (rfc, draft):
        assert (change.account, change.new_thumbprint) == (kid, NEW.thumbprint)
        assert change.registration_url(99) == kid


@pytest.mark.parametrize("inner, new_key, detail", [
    ({"account": "https://gw.test/acct/2", "oldKey": "K"}, "NEW",
     "Inner key-change payload's account does not match the outer JWS's key ID"),
    ({"account": "KID", "oldKey": "NEW"}, "NEW", "Inner JWS payload's oldKey does not match the outer JWS's key"),
    ({"account": "KID", "oldKey": {"kty": "EC"}}, "NEW",
     "Inner JWS payload's oldKey does not match the outer JWS's key"),
    ({"account": "KID", "oldKey": None}, "NEW", "Inner JWS payload's oldKey does not match the outer JWS's key"),
    ({"account": "KID", "newKey": "K"}, "NEW",
     "Inner key-change payload has neither oldKey nor the new key as newKey"),
    ({"account": "KID"}, "NEW", "Inner key-change payload has neither oldKey nor the new key as newKey"),
    ({"account": "KID", "oldKey": "K"}, "K", "New key is the same as the old key"),
])
def test_v2_key_change_refusals(inner, new_key, detail):
    kid = "https://gw.test/acct/1"
    keys = {"K": KEY.public_jwk_json, "NEW": NEW.public_jwk_json}
    inner = {k: (kid if v == "KID" else keys.get(v, v) if isinstance(v, str) else v) for k, v in inner.items()}
    jwk = {"K": KEY.jwk, "NEW": NEW.jwk}[new_key]
    with pytest.raises(Malformed) as raised:
        requests.key_change_v2(SIGNER, jwk, inner, kid)
    assert raised.value.detail == detail


# -- draft-era v2 -----------------------------------------------------------------


def test_new_account():
    account = requests.new_account(SIGNER, {"contact": ["mailto:a@example.test"],
                                            "termsOfServiceAgreed": True, "onlyReturnExisting": True})
    assert account == requests.NewAccount(SIGNER, ("mailto:a@example.test",), True, True)
    assert requests.new_account(SIGNER, {"termsOfServiceAgreed": "yes", "onlyReturnExisting": 1}) == \
        requests.NewAccount(SIGNER, (), False, False)


def test_account_update():
    assert requests.account_update(SIGNER, "1", {"resource": "reg", "termsOfServiceAgreed": True}) == \
        requests.RegUpdate(SIGNER, "1", None, None, None)
    assert requests.account_update(SIGNER, "1", {"status": "deactivated", "contact": []}) == \
        requests.RegUpdate(SIGNER, "1", (), None, Status.DEACTIVATED)
    assert requests.account_update(SIGNER, "1", {"status": "valid"}).status is None
    with pytest.raises(Malformed) as raised:
        requests.account_update(SIGNER, "1", {"status": "revoked"})
    assert raised.value.detail == "Invalid value provided for status field"


def test_new_order():
    order = requests.new_order(SIGNER, {"identifiers": [{"type": "dns", "value": "b.example.test"},
                                                        {"type": "dns", "value": "a.example.test"}]})
    assert order.spellings == ("a.example.test", "b.example.test")
    for payload in ({}, {"identifiers": []}, {"identifiers": {"type": "dns"}}):
        with pytest.raises(Malformed) as raised:
            requests.new_order(SIGNER, payload)
        assert raised.value.detail == "NewOrder request did not specify any identifiers"
