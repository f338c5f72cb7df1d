"""
``./scripts/mutation``'s own logic (scripts/mutation_report.py), without
running mutmut: which modules a command line names, the checked-in
equivalents file (every entry with a reason), how an entry recognises its
mutant — and goes stale when the mutant changes — and the score.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "mutation_report", os.path.join(ROOT, "scripts", "mutation_report.py"))
mutation = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("mutation_report", mutation)
_spec.loader.exec_module(mutation)


def test_modules_are_named_by_path_file_name_or_folder():
    assert mutation.resolve(["csr"]) == ["gateway/translate/csr.py"]
    assert mutation.resolve(["translate/csr"]) == ["gateway/translate/csr.py"]
    assert mutation.resolve(["gateway/v1/jws.py"]) == ["gateway/v1/jws.py"]
    assert mutation.resolve(["gateway.v1.nonces"]) == ["gateway/v1/nonces.py"]
    v1 = mutation.resolve(["v1/"])
    assert "gateway/v1/jws.py" in v1 and all(m.startswith("gateway/v1/") for m in v1)
    assert "gateway/v1/__init__.py" not in v1
    assert mutation.resolve(["csr", "translate/csr"]) == ["gateway/translate/csr.py"]
    everything = mutation.all_modules()
    assert {m.split("/")[1] for m in everything} == {"translate", "v1", "upstream"}


@pytest.mark.parametrize("name", ["nothing", "store/sql", "keys/jose", "errors", "messages"])
def test_a_name_outside_the_mutated_packages_is_refused(name):
    with pytest.raises(SystemExit) as raised:
        mutation.resolve([name])
    assert name in str(raised.value)


def test_mutant_names_of_a_module():
    assert mutation.mutant_glob("gateway/translate/csr.py") == "gateway.translate.csr.*"


def test_only_names_the_mutants_of_some_functions():
    names = ["gateway.translate.authz.x_new_authorization__mutmut_1",
             "gateway.translate.authz.x_new_authorization_of__mutmut_2",
             "gateway.translate.authz.x__view__mutmut_3",
             "gateway.translate.authz.xǁViewǁchallenge__mutmut_4",
             "gateway.translate.other.x_new_authorization__mutmut_5"]
    glob = mutation.mutant_glob("gateway/translate/authz.py", "new_authorization")
    assert mutation.matching(names, [glob]) == names[:1]
    globs = [mutation.mutant_glob("gateway/translate/authz.py", f) for f in ("_view", "View*")]
    assert mutation.matching(names, globs) == names[2:4]


def test_a_module_run_in_parts_keeps_each_parts_results(tmp_path, monkeypatch):
    """
    ``--only`` runs part of a module's mutants: mutmut is asked for those
    alone, and their results are added to the earlier parts' (a mutant no
    part ran yet stays unchecked, so it counts as surviving).
    """
    monkeypatch.setattr(mutation, "ROOT", tmp_path)
    module = "gateway/translate/authz.py"
    stem = "gateway.translate.authz."
    exit_codes = {stem + "x_a__mutmut_1": 1, stem + "x_a__mutmut_2": 0,
                  stem + "x_b__mutmut_1": 1, stem + "xǁViewǁc__mutmut_1": 1}
    asked = []

    def fake_mutmut(argv, **kwargs):
        globs = argv[argv.index("--max-children") + 2:]
        asked.append(globs)
        meta = tmp_path / "mutants" / (module + ".meta")
        meta.parent.mkdir(parents=True, exist_ok=True)
        # mutmut keeps every mutant of the module, with no code for those not run
        known = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        known.update({name: code for name, code in exit_codes.items()
                      if mutation.matching([name], globs)})
        meta.write_text(json.dumps({"exit_code_by_key": {
            name: known.get(name) for name in exit_codes}}))
        return mutation.subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(mutation.subprocess, "run", fake_mutmut)
    mutation.run_mutmut(module, 1, again=False, all_tests=False, only=["a"])
    assert asked[-1] == [stem + "x[_ǁ]a__mutmut_*"]
    assert mutation.saved_results(module) == {
        stem + "x_a__mutmut_1": 1, stem + "x_a__mutmut_2": 0,
        stem + "x_b__mutmut_1": None, stem + "xǁViewǁc__mutmut_1": None}
    mutation.run_mutmut(module, 1, again=False, all_tests=False, only=["b", "View*"])
    assert mutation.saved_results(module) == exit_codes
    # --again with --only: the undetected mutants of those functions alone
    mutation.run_mutmut(module, 1, again=True, all_tests=False, only=["a"])
    assert asked[-1] == [stem + "x_a__mutmut_2"]


def test_the_checked_in_equivalents_all_give_reasons():
    equivalents = mutation.load_equivalents()
    assert equivalents.by_name and equivalents.by_line
    modules = set(mutation.all_modules())
    for entry in equivalents.by_name.values():
        assert len(entry.reason.split()) >= 5, entry
        assert entry.mutated
        assert entry.mutant.split(".x")[0].replace(".", "/") + ".py" in modules, entry
    for rule in equivalents.by_line:
        assert rule.module in modules and len(rule.reason.split()) >= 5, rule


def test_an_entry_without_a_reason_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "equivalents.toml"
    path.write_text('[[equivalent]]\nmutant = "m"\nmutated = "x"\nreason = "  "\n')
    monkeypatch.setattr(mutation, "EQUIVALENTS", path)
    with pytest.raises(SystemExit):
        mutation.load_equivalents()


DIFF = """--- gateway/x.py
+++ gateway/x.py
@@ -1,3 +1,3 @@
 def f():
-    raise Error("the words")
+    raise Error("XXthe wordsXX")
"""


def test_a_line_rule_covers_the_mutants_of_matching_lines():
    rule = mutation.EquivalentLines("gateway/x.py", re.compile(r"raise Error\("), False, "why")
    assert rule.covers("gateway/x.py", DIFF)
    assert not rule.covers("gateway/y.py", DIFF)
    other = DIFF.replace('raise Error("the words")', "return 1").replace('raise Error("XXthe wordsXX")',
                                                                       "return 2")
    assert not rule.covers("gateway/x.py", other)


def test_a_text_only_rule_covers_only_changes_inside_string_literals():
    rule = mutation.EquivalentLines("gateway/x.py", re.compile(r"raise Error\("), True, "why")
    assert rule.covers("gateway/x.py", DIFF)
    assert not rule.covers("gateway/x.py", DIFF.replace('Error("XXthe wordsXX")', "Error(None)"))


def test_an_entry_goes_stale_when_its_mutant_writes_another_line():
    assert mutation.mutated_lines(DIFF) == ['raise Error("XXthe wordsXX")']
    assert mutation.changed_lines(DIFF, "-") == ['raise Error("the words")']


def test_the_score_leaves_equivalents_out():
    result = mutation.ModuleResult("gateway/x.py", total=10, detected=8, equivalent=2)
    assert result.score == 100.0
    result = mutation.ModuleResult("gateway/x.py", total=10, detected=6, equivalent=2)
    assert result.score == 75.0
    assert mutation.ModuleResult("gateway/x.py").score is None


def test_decorated_functions_are_reported_as_not_mutated(tmp_path, monkeypatch):
    """
    mutmut skips decorated functions: the report names them, so a module's
    score never silently stands for code no mutant touched.
    """
    module = tmp_path / "gateway" / "translate" / "sample.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "import functools\n"
        "def plain(): return 1\n"
        "@functools.lru_cache\n"
        "def cached(): return 2\n"
        "class Shape:\n"
        "    @property\n"
        "    def area(self): return 3\n"
        "    @staticmethod\n"
        "    def make(): return Shape()\n"
        "    def method(self): return 4\n"
    )
    monkeypatch.setattr(mutation, "ROOT", tmp_path)
    assert mutation.unmutated("gateway/translate/sample.py") == ["cached", "Shape.area"]


def test_the_flows_are_mutated():
    """
    The flows (errors.flow) are wrapped by assignment, not decorated, so
    mutation testing reaches the code where a bug hurts most.
    """
    for module in ("issuance", "authorizations", "orders", "registration", "revocation",
                   "directory"):
        skipped = mutation.unmutated(f"gateway/translate/{module}.py")
        assert not [name for name in skipped if "." not in name], (module, skipped)


def test_the_test_extras_install_the_mutmut_the_script_runs():
    """
    The script's tests read results through mutmut's own status table, so
    the test extras install mutmut (a fresh CI checkout has no other); the
    pin must be the version ./scripts/mutation installs and runs.
    """
    with open(os.path.join(ROOT, "scripts", "mutation")) as f:
        script_pin = re.search(r"^mutmut_version=(\S+)$", f.read(), re.M).group(1)
    with open(os.path.join(ROOT, "setup.cfg")) as f:
        extras_pin = re.search(r"^\s+mutmut==(\S+)$", f.read(), re.M).group(1)
    assert extras_pin == script_pin
