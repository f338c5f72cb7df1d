"""Write a schema-3 state with the gateway at commit cb5e8cb (before issue 17); see README.md."""
import sys

from twisted.internet import defer
from twisted.internet.task import react

from gateway.store import *  # noqa: F403 (the records of that commit)
from gateway.store.sqlite import SQLiteStore

CA = "https://ca-a.test/dir"
path = sys.argv[1]

async def main(reactor):
    store = await SQLiteStore.open(path, reactor, upstream=CA)
    a = await store.create_account("tp-old", {"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ"},
                                   contact=("mailto:old@example.test",), initial_ip="127.0.0.1",
                                   upstream_url="https://ca-a.test/acct/1")
    o = Order(id="order-1", account_id=a.id, upstream_url="https://ca-a.test/order/1",
              identifiers=("old.example",), status="valid", finalize_url="https://ca-a.test/finalize/1",
              expires="2026-12-05T17:00:00Z", certificate_url="https://ca-a.test/cert/1",
              created_at="2026-11-28T17:00:00Z", authorization_urls=("https://ca-a.test/authz/1",))
    z = Authorization(id="authz-1", account_id=a.id, order_id="order-1", upstream_url="https://ca-a.test/authz/1",
                      identifier="old.example", wildcard=False, status="valid", expires="2026-12-05T17:00:00Z",
                      created_at="2026-11-28T17:00:00Z", updated_at="2026-11-28T17:01:00Z")
    c = Challenge(id="chall-1", authorization_id="authz-1", account_id=a.id,
                  upstream_url="https://ca-a.test/chall/1", type="http-01", token="tok", status="valid")
    intermediate, root = b"intermediate DER", b"root DER"
    cert = Certificate(id="cert-1", account_id=a.id, order_id="order-1", serial="1f",
                       leaf_der=b"leaf DER", issuer_ids=(issuer_id(intermediate), issuer_id(root)),
                       upstream_url="https://ca-a.test/cert/1", issued_at="2026-11-28T17:02:00Z")
    await store.write([Insert(o), Insert(z), Insert(c), Insert(Issuer(issuer_id(intermediate), intermediate)),
                       Insert(Issuer(issuer_id(root), root)), Insert(cert),
                       Insert(OrderAttempt(id="attempt-1", account_id=a.id, identifiers=("lost.example",),
                                           created_at="2026-11-28T17:03:00Z"))])
    await store.record_client(ClientVisit("certbot/1.32.0", "127.0.0.1", "2026-11-28T17:02:00Z", "tp-old",
                                          ("old.example",), certificate=True))
    await store.check_writable()
    await store.close()

react(lambda r: defer.ensureDeferred(main(r)))
