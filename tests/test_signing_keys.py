"""
`gateway.translate.signing` and `gateway.translate.bindings`: which key
signs upstream for a client key (its own from the key store, else in
managed mode a gateway key bound to it, made on first use), the refusal of
a key the gateway does not hold (its words tell the operator what to do),
and which External Account Binding a new account gets.
"""

from __future__ import annotations

import shutil
import tempfile

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from gateway.keys.jose import AccountKey
from gateway.keys.keystore import KeyStore
from gateway.keys.managed import ManagedKeys
from gateway.translate.bindings import AccountBindings
from gateway.translate.errors import Unauthorized
from gateway.translate.signing import SigningKeys
from gateway.upstream.messages import ExternalAccountKey

HELD = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
STRANGER = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))


class SigningKeysTests(SynchronousTestCase):

    def setUp(self):
        self.store = KeyStore.from_keys([HELD])
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        self.managed = ManagedKeys(directory, {})

    def test_the_clients_own_key_signs(self):
        for keys in (SigningKeys(self.store), SigningKeys(self.store, self.managed)):
            self.assertIs(keys.get(HELD.thumbprint), HELD)
            self.assertIs(keys.client_key(HELD.thumbprint), HELD)
            self.assertTrue(keys.holds(HELD.thumbprint))
            self.assertFalse(keys.is_managed(HELD.thumbprint))
            self.assertIs(self.successResultOf(defer.ensureDeferred(keys.obtain(HELD.thumbprint))), HELD)
        self.assertEqual(len(self.managed), 0, "no managed key is made for a held key")

    def test_a_key_not_held_is_refused_saying_how_to_import_it(self):
        keys = SigningKeys(self.store)
        self.assertIsNone(keys.get(STRANGER.thumbprint))
        self.assertFalse(keys.holds(STRANGER.thumbprint))
        self.assertFalse(keys.is_managed(STRANGER.thumbprint))
        failure = self.failureResultOf(defer.ensureDeferred(keys.obtain(STRANGER.thumbprint)), Unauthorized)
        self.assertEqual(
            failure.value.detail,
            f"The account key with JWK thumbprint {STRANGER.thumbprint} is not in the gateway's key "
            f"store. The gateway signs upstream with the client's own account key, so it must hold it: "
            f"copy the client's account key file (certbot: accounts/.../private_key.json; "
            f"dehydrated: account_key.pem; acme.sh: account.key) into the --keys directory and "
            f"restart the gateway (`acme-gateway keys list --keys DIR` shows what it loads).")

    def test_in_managed_mode_a_gateway_key_is_made_once_and_bound(self):
        keys = SigningKeys(self.store, self.managed)
        self.assertTrue(keys.is_managed(STRANGER.thumbprint))
        self.assertIsNone(keys.get(STRANGER.thumbprint), "made only on first use")
        self.assertFalse(keys.holds(STRANGER.thumbprint))
        made = self.successResultOf(defer.ensureDeferred(keys.obtain(STRANGER.thumbprint)))
        self.assertNotEqual(made.thumbprint, STRANGER.thumbprint)
        self.assertIs(keys.get(STRANGER.thumbprint), made)
        self.assertTrue(keys.holds(STRANGER.thumbprint))
        self.assertIsNone(keys.client_key(STRANGER.thumbprint), "never the managed key")
        self.assertIs(self.successResultOf(defer.ensureDeferred(keys.obtain(STRANGER.thumbprint))), made)
        self.assertEqual(len(self.managed), 1)


class BindingTests(SynchronousTestCase):

    def test_the_keys_own_binding_wins_over_the_default(self):
        default = ExternalAccountKey("kid-default", b"\x01" * 32)
        own = ExternalAccountKey("kid-own", b"\x02" * 32)
        bindings = AccountBindings(default=default, by_thumbprint={HELD.thumbprint: own})
        self.assertIs(bindings.for_key(HELD.thumbprint), own)
        self.assertIs(bindings.for_key(STRANGER.thumbprint), default)
        self.assertIsNone(AccountBindings(by_thumbprint={HELD.thumbprint: own}).for_key(STRANGER.thumbprint))

    def test_configured_with_either_form(self):
        key = ExternalAccountKey("kid", b"\x01" * 32)
        self.assertFalse(AccountBindings().configured)
        self.assertTrue(AccountBindings(default=key).configured)
        self.assertTrue(AccountBindings(by_thumbprint={HELD.thumbprint: key}).configured)
        self.assertTrue(AccountBindings(default=key, by_thumbprint={HELD.thumbprint: key}).configured)
