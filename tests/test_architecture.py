"""
The architecture the README's Architecture section states, enforced:

- the import rules of the layers (parsed with `ast`, from every module of
  the package): what each layer may import of the gateway, that nothing
  imports the process level, and that the pure modules load nothing of
  ``twisted.internet``, ``twisted.web``, treq or sqlite3, even indirectly;
- one entry per request: a walk of ``new-cert`` and of ``new-authz``, from
  the resource to the upstream call, enters the translation layer once for
  the request value and once for the flow, never calls back up, enters each
  module of the walk once, and parses each input once;
- the type checker's configuration: strict on the layers the README names,
  and run by ``scripts/test`` before the tests.
"""

from __future__ import annotations

import ast
import collections
import configparser
import dis
import functools
import inspect
import os
import subprocess
import sys
from typing import Dict, Iterator, List, Tuple

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer

import gateway
from gateway.keys.jose import AccountKey, b64url
from gateway.process.testing import build_test_gateway
from tests.support.v1_client import V1TestClient
from tests.test_v1_face import make_csr

PACKAGE = os.path.dirname(os.path.abspath(gateway.__file__))
REPO_ROOT = os.path.dirname(PACKAGE)

#: Each layer (a package, or a module of the top level) and the layers of
#: the gateway it may import, besides itself — the README's table.
MAY_IMPORT = {
    "gateway.status": set(),
    "gateway.crashpoints": set(),
    "gateway.web": set(),
    "gateway.keys": set(),
    "gateway.clients": {"gateway.keys"},
    "gateway.adopt": {"gateway.clients", "gateway.keys"},
    "gateway.store": {"gateway.status", "gateway.crashpoints"},
    "gateway.upstream": {"gateway", "gateway.keys", "gateway.status", "gateway.crashpoints"},
    "gateway.validation": {"gateway.keys"},
    "gateway.translate": {"gateway.store", "gateway.upstream", "gateway.validation",
                          "gateway.keys", "gateway.status"},
    "gateway.operations": {"gateway", "gateway.store", "gateway.keys", "gateway.status",
                           "gateway.web"},
    "gateway.v1": {"gateway.translate", "gateway.store", "gateway.operations", "gateway.keys",
                   "gateway.status", "gateway.web"},
    "gateway.v2": {"gateway.translate", "gateway.store", "gateway.operations", "gateway.keys",
                   "gateway.status", "gateway.web", "gateway.v1"},
    "gateway.process": None,  # anything: it is where the layers are put together
    "gateway.__main__": {"gateway.process"},
}

#: What the v1 and v2 faces may use of the store: its records, never an engine.
V1_STORE_MODULES = {"gateway.store", "gateway.store.records"}

#: What the v2 face may use of the v1 face: the JWS checks, nonces and body
#: limit they share, and the problem type those raise -- never its tree,
#: its wrapper or its messages.
V2_V1_MODULES = {"gateway.v1.jws", "gateway.v1.nonces", "gateway.v1.problems",
                 "gateway.v1.limits"}

#: The one store call the v1 face makes itself: recording a redeemed v1
#: nonce (`gateway.v1.nonces`), the face's own replay protection, shared by
#: every process of the state; everything else reaches the store through
#: the translation layer.
V1_STORE_CALLS = {("gateway.store.sql", "use_nonce")}

#: Modules that are pure protocol or domain code: no reactor, no HTTP, no
#: database, even through what they import.
PURE_MODULES = (
    "gateway.status",
    "gateway.keys.jose",
    "gateway.store",
    "gateway.store.records",
    "gateway.upstream.errors",
    "gateway.upstream.messages",
    "gateway.translate.errors",
    "gateway.translate.policy",
    "gateway.translate.csr",
    "gateway.translate.requests",
    "gateway.v1.jws",
    "gateway.v1.messages",
    "gateway.v1.nonces",
    "gateway.v1.problems",
    "gateway.v2.jws",
    "gateway.v2.messages",
    "gateway.v2.problems",
)
IMPURE = ("twisted.internet", "twisted.web", "treq", "sqlite3")


def _modules() -> Iterator[Tuple[str, str]]:
    """
    ``(module name, path)`` of every module of the package.
    """
    for directory, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                relative = os.path.relpath(path, REPO_ROOT)[:-3].replace(os.sep, ".")
                yield relative.removesuffix(".__init__"), path


def _imports(path: str) -> List[str]:
    """
    Every module ``path`` imports, as written (relative imports resolved
    only as far as the package needs: it has none).
    """
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            assert node.module is not None
            if node.module == "gateway":
                found += [f"gateway.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
    return found


def layer_of(module: str) -> str:
    """
    The layer a module belongs to: its package under ``gateway``, or the
    top-level module itself.
    """
    parts = module.split(".")
    if parts == ["gateway", "__version__"] or parts == ["gateway"]:
        return "gateway"
    return ".".join(parts[:2])


def test_every_layer_imports_only_what_the_readme_allows():
    """
    Each module imports, of the gateway, only its own layer and the layers
    its layer may use (README, Architecture).
    """
    broken = []
    for module, path in _modules():
        own = layer_of(module)
        if module == "gateway" or own == "gateway.process":
            continue
        allowed = MAY_IMPORT.get(own)
        assert allowed is not None or own == "gateway.process", f"{module}: no rule for {own}"
        for imported in _imports(path):
            if not imported.startswith("gateway"):
                continue
            target = layer_of(imported)
            if target != own and target not in allowed:
                broken.append(f"{module} imports {imported}")
            if (own in ("gateway.v1", "gateway.v2") and target == "gateway.store"
                    and imported not in V1_STORE_MODULES):
                broken.append(f"{module} imports {imported} (a face may use the store's records only)")
            if own == "gateway.v2" and target == "gateway.v1" and imported not in V2_V1_MODULES:
                broken.append(f"{module} imports {imported} (v2 may share v1's JWS checks only)")
    assert broken == []


def test_nothing_imports_the_process_level():
    """
    The process level (command line, configuration, wiring, demo, test
    doubles) is imported by nothing of the package but itself.
    """
    importers = [f"{module} imports {imported}" for module, path in _modules()
                 if layer_of(module) not in ("gateway.process", "gateway.__main__")
                 for imported in _imports(path) if imported.startswith("gateway.process")]
    assert importers == []


def test_v1_does_not_import_upstream_and_translate_does_not_import_v1():
    """
    The two rules of the walk spelled out: a face reaches the CA only
    through the translation layer, which knows nothing of either wire; and
    the v1 face knows nothing of the v2 face it hands ``/v2/`` to.
    """
    for module, path in _modules():
        imported = [layer_of(i) for i in _imports(path) if i.startswith("gateway")]
        if layer_of(module) in ("gateway.v1", "gateway.v2"):
            assert "gateway.upstream" not in imported, module
        if layer_of(module) == "gateway.v1":
            assert "gateway.v2" not in imported, module
        if layer_of(module) == "gateway.translate":
            assert "gateway.v1" not in imported and "gateway.v2" not in imported, module


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_load_no_reactor_http_or_database(module):
    """
    A pure module imports nothing of ``twisted.internet``, ``twisted.web``,
    treq or sqlite3 — checked in a fresh interpreter, so indirect imports
    count too.
    """
    probe = (f"import importlib, sys; importlib.import_module({module!r}); "
             f"print(sorted(n for n in sys.modules if n.split('.')[0] in ('treq', 'sqlite3') "
             f"or n.startswith(('twisted.internet', 'twisted.web'))))")
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    loaded = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                            text=True, check=True).stdout.strip()
    assert loaded == "[]", f"{module} loads {loaded}"


# -- one entry per request --------------------------------------------------------------------

#: The layers of the walk from the resource to the upstream call.
WALK_LAYERS = ("gateway.v1", "gateway.translate", "gateway.upstream")

Call = Tuple[str, str]  # (module, function)


def _module_of(code) -> str:
    path = code.co_filename
    if not path.startswith(PACKAGE + os.sep):
        return ""
    return os.path.relpath(path, REPO_ROOT)[:-3].replace(os.sep, ".")


_SUSPENDABLE = inspect.CO_COROUTINE | inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR


@functools.lru_cache(maxsize=None)
def _start_offset(code) -> int:
    """
    Where a frame of ``code`` starts running (its first ``RESUME``): a
    coroutine resumed after an ``await`` is past it.
    """
    return next(i.offset for i in dis.get_instructions(code) if i.opname == "RESUME")


def walk(send) -> List[List[Call]]:
    """
    The gateway's calls while ``send()`` (a coroutine of one v1 request)
    runs to its end: for each function of the package entered (a call, not
    the resumption of a coroutine), the chain of the gateway's named
    functions active at that moment, outermost first.  The fake CA's own
    frames (the process level) are left out: they stand for the network.
    """
    chains: List[List[Call]] = []

    def profile(frame, event, arg):
        code = frame.f_code
        module = _module_of(code)
        if (event != "call" or not module or module.startswith("gateway.process")
                or code.co_name.startswith("<")):
            return  # not the gateway's, the fake CA's, or a comprehension
        if code.co_flags & _SUSPENDABLE and frame.f_lasti > _start_offset(code):
            return  # resumed, not entered
        chain = []
        current = frame
        while current is not None:
            module, name = _module_of(current.f_code), current.f_code.co_name
            if module and not module.startswith("gateway.process") and not name.startswith("<"):
                chain.append((module, name))
            current = current.f_back
        if chain:
            chains.append(list(reversed(chain)))

    done: list = []
    sys.setprofile(profile)
    try:
        defer.Deferred.fromCoroutine(send()).addBoth(done.append)
    finally:
        sys.setprofile(None)
    assert done and not isinstance(done[0], Exception), done
    return chains


def entered(chains: List[List[Call]], function: Call) -> int:
    """
    How many times ``function`` was entered.
    """
    return sum(1 for chain in chains if chain[-1] == function)


def crossings(chains: List[List[Call]]) -> Dict[Tuple[str, str], List[Call]]:
    """
    The calls from one layer into another: ``(from layer, to layer)`` → the
    functions entered.
    """
    found: Dict[Tuple[str, str], List[Call]] = collections.defaultdict(list)
    for chain in chains:
        if len(chain) >= 2:
            caller, callee = layer_of(chain[-2][0]), layer_of(chain[-1][0])
            if caller != callee:
                found[(caller, callee)].append(chain[-1])
    return found


def reentered_modules(chains: List[List[Call]]) -> List[List[Call]]:
    """
    The chains in which a module of the walk's layers is entered again
    while a function it called (in another module) is still running: a
    call back into a module the request already left.
    """
    back = []
    for chain in chains:
        modules = [m for m, _ in chain if layer_of(m) in WALK_LAYERS]
        runs = [m for i, m in enumerate(modules) if i == 0 or modules[i - 1] != m]
        if len(set(runs)) != len(runs):
            back.append(chain)
    return back


class OneEntryTests:
    """
    A certificate obtained as a legacy client does: new-authz, the
    challenge, then new-cert; the walks of the last two requests.
    """

    key = AccountKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))

    def setup_method(self):
        self.gateway = build_test_gateway([self.key])
        self.client = V1TestClient(self.gateway.base_url, self.key, http=self.gateway.client)

    def resolve(self, coroutine):
        done: list = []
        defer.Deferred.fromCoroutine(coroutine).addBoth(done.append)
        return done[0]

    def new_authz_payload(self, name: str) -> dict:
        return {"resource": "new-authz", "identifier": {"type": "dns", "value": name}}

    def authorize(self, name: str) -> None:
        reply = self.resolve(self.client.post(self.gateway.url("/acme/new-authz"),
                                              self.new_authz_payload(name)))
        assert reply.status == 201, reply.body
        challenge = next(c for c in reply.json()["challenges"] if c["type"] == "http-01")
        answered = self.resolve(self.client.post(challenge["uri"], {
            "resource": "challenge", "type": "http-01",
            "keyAuthorization": self.key.key_authorization(challenge["token"])}))
        assert answered.status == 202, answered.body

    def assert_one_entry(self, chains: List[List[Call]], value: Call, flow: Call) -> None:
        layers = crossings(chains)
        into_translation = collections.Counter(layers[("gateway.v1", "gateway.translate")])
        # The request value once, the flow once (through its upstream-error
        # boundary); reading the value's fields is no second entry.
        assert into_translation[value] == 1
        assert into_translation[("gateway.translate.errors", "refused")] == 1
        assert entered(chains, flow) == 1
        assert set(into_translation) <= {value, ("gateway.translate.errors", "refused"),
                                         ("gateway.translate.requests", "names")}
        # Nothing calls back up, and the face never reaches past translation.
        for caller, callee in layers:
            assert (caller, callee) not in {
                ("gateway.translate", "gateway.v1"), ("gateway.upstream", "gateway.v1"),
                ("gateway.upstream", "gateway.translate"), ("gateway.store", "gateway.translate"),
                ("gateway.v1", "gateway.upstream"),
            }, (caller, callee, layers[(caller, callee)])
        assert not [c for (caller, _), calls in layers.items() if caller == "gateway.v1"
                    for c in calls if layer_of(c[0]) == "gateway.store"
                    and c[0] not in V1_STORE_MODULES and c not in V1_STORE_CALLS]
        assert reentered_modules(chains) == []
        # The JWS is verified once, and the account bound once.
        assert entered(chains, ("gateway.v1.jws", "verify_v1_request")) == 1
        assert entered(chains, ("gateway.translate.accounts", "bind")) == 1


class TestNewCertWalk(OneEntryTests):
    def test_new_cert_enters_each_module_once_and_parses_the_csr_once(self):
        """
        new-cert for an authorized name: the face builds `NewCert` (the CSR
        parsed and its signature checked once), calls the issuance flow
        once, which binds the account and finalizes upstream; nothing is
        entered twice, nothing calls back.
        """
        self.authorize("www.example.test")
        payload = {"resource": "new-cert", "csr": b64url(make_csr(["www.example.test"]))}
        reply: list = []

        async def send():
            reply.append(await self.client.post(self.gateway.url("/acme/new-cert"), payload))

        chains = walk(send)
        assert reply[0].status == 201, reply[0].body
        self.assert_one_entry(chains, ("gateway.translate.requests", "new_cert"),
                              ("gateway.translate.issuance", "new_certificate"))
        assert entered(chains, ("gateway.translate.csr", "parse_csr")) == 1
        assert entered(chains, ("gateway.upstream.client", "submit_finalize")) == 1


class TestNewAuthzWalk(OneEntryTests):
    def test_new_authz_enters_each_module_once_and_parses_the_name_once(self):
        """
        new-authz for a new name: the face builds `NewAuthz` (the
        identifier checked once), calls the authorization flow once, which
        binds the account and creates one order upstream.
        """
        self.authorize("first.example.test")  # the account exists, as it would
        reply: list = []

        async def send():
            reply.append(await self.client.post(self.gateway.url("/acme/new-authz"),
                                                self.new_authz_payload("www.example.test")))

        chains = walk(send)
        assert reply[0].status == 201, reply[0].body
        self.assert_one_entry(chains, ("gateway.translate.requests", "new_authz"),
                              ("gateway.translate.authorizations", "new_authorization"))
        assert entered(chains, ("gateway.translate.policy", "parse_v1_identifier")) == 1
        assert entered(chains, ("gateway.upstream.client", "new_order")) == 1


# -- the type checker -------------------------------------------------------------------------

STRICT_LAYERS = ("gateway.translate.*", "gateway.v1.*", "gateway.v2.*", "gateway.upstream.*",
                 "gateway.store.*")

#: What ``mypy --strict`` turns on that can be set per module.
STRICT_FLAGS = ("disallow_any_generics", "disallow_subclassing_any", "disallow_untyped_calls",
                "disallow_untyped_defs", "disallow_incomplete_defs", "check_untyped_defs",
                "disallow_untyped_decorators", "warn_unused_ignores", "warn_return_any",
                "strict_equality", "extra_checks")


def test_the_type_checker_is_strict_on_the_named_layers():
    """
    setup.cfg runs mypy (with the zope plugin) over the whole package, with
    every per-module flag of ``--strict`` on translate, v1, v2, upstream
    and store.
    """
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO_ROOT, "setup.cfg"))
    assert config["mypy"]["files"] == "gateway"
    assert "mypy_zope:plugin" in config["mypy"]["plugins"]
    strict = [s for s in config.sections() if s.startswith("mypy-")
              and all(layer in s for layer in STRICT_LAYERS)]
    assert len(strict) == 1, config.sections()
    section = config[strict[0]]
    assert all(section.getboolean(flag) for flag in STRICT_FLAGS)
    assert section.getboolean("implicit_reexport") is False


def test_scripts_test_type_checks_before_the_tests():
    """
    ``scripts/test`` (what ``.ci/run`` runs) runs mypy, failing the run on
    a type error, before pytest.
    """
    script = open(os.path.join(REPO_ROOT, "scripts", "test")).read()
    assert "set -euo pipefail" in script
    lines = [line.strip() for line in script.splitlines() if not line.strip().startswith("#")]
    mypy = next(i for i, line in enumerate(lines) if line.startswith(".venv/bin/mypy"))
    pytest_line = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert mypy < pytest_line
    assert "scripts/test" in open(os.path.join(REPO_ROOT, ".ci", "run")).read()
