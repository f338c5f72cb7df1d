"""Run mutmut over the modules asked for, one at a time, and report each one's
score and surviving mutants (``./scripts/mutation``; see its header).

A mutant is *detected* when a test fails on it (mutmut: killed), it makes the
tests hang (timeout) or crash the interpreter (segfault).  It *survives* when
every test that runs its function passes, or when no test runs that function
at all (mutmut: "no tests").  Mutants listed in the equivalents file cannot be
detected by any test (the program behaves the same); each entry names the
mutant, the line it writes and why, so an entry that no longer describes the
same change (the function was edited and mutmut numbered its mutants anew) is
reported as stale instead of silently excusing another mutant.

score = detected / (mutants - equivalent)
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tokenize
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway/translate", "gateway/v1", "gateway/upstream")
EQUIVALENTS = ROOT / "tests" / "mutation_equivalents.toml"
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}

#: The tests a module's mutants run against, where a few files test it
#: directly: a mutant has to be killed there, so the score is a lower bound of
#: the fast tier's (--all-tests runs the whole tier of setup.cfg [mutmut]).
#: On two shared cores this turns an hour into minutes.
NARROW_TESTS = {
    "gateway/translate/csr.py": ["tests/test_csr.py", "tests/test_csr_der.py"],
    "gateway/translate/policy.py": ["tests/test_identifiers.py", "tests/test_identifier_policy.py",
                                    "tests/security/test_allow_names.py",
                                    "tests/test_csr_der.py"],
    "gateway/v1/nonces.py": ["tests/test_nonces.py", "tests/test_nonces_expiry.py",
                             "tests/test_nonces_clock_range.py", "tests/test_nonces_instance.py"],
    "gateway/translate/budget.py": ["tests/test_budget.py", "tests/test_budget_accounting.py"],
    # the hypothesis fuzz tests (seconds each) stay for the whole tier
    "gateway/v1/jws.py": ["tests/test_v1_jws.py", "tests/test_v1_jws_details.py",
                          "tests/test_v1_jws_unicode.py", "-k", "not fuzz"],
    "gateway/translate/issuance.py": ["tests/test_issuance_paths.py", "tests/test_v1_face.py",
                                      "tests/test_csr.py", "tests/test_retries_and_switches.py",
                                      "tests/test_authorization_reuse.py", "tests/test_issuer_links.py",
                                      "tests/test_issuance_outcomes.py", "tests/test_following.py",
                                      "tests/test_renewals.py",
                                      "tests/test_issuance_new_cert_refusals.py",
                                      "tests/test_issuance_invalid_order.py",
                                      "tests/test_store_handoffs.py"],
    "gateway/v1/messages.py": ["tests/test_v1_messages_shapes.py", "tests/test_v1_face.py"],
    "gateway/v1/limits.py": ["tests/test_v1_limits_answers.py", "tests/security/test_body_limit.py",
                             "tests/test_v1_face.py", "tests/security/test_corpus.py"],
    "gateway/v1/problems.py": ["tests/test_problems.py", "tests/test_problems_refusals.py",
                               "tests/test_problems_upstream_details.py", "tests/test_v1_face.py"],
    "gateway/v1/endpoint.py": ["tests/test_v1_endpoint_calls.py", "tests/test_v1_face.py",
                               "tests/test_operations_face.py"],
    "gateway/v1/face.py": ["tests/test_v1_face_http.py", "tests/test_v1_face.py",
                           "tests/test_operations_face.py", "tests/test_v1_endpoint_calls.py",
                           "tests/security/test_corpus.py"],
    "gateway/v1/resource.py": ["tests/test_v1_resource_answers.py", "tests/test_v1_face_http.py",
                               "tests/test_v1_face.py", "tests/test_directory_meta.py",
                               "tests/test_issuer_links.py", "tests/test_tlssni01_v1.py",
                               "tests/test_operations_face.py"],
    "gateway/upstream/errors.py": ["tests/test_upstream_errors_documents.py", "tests/test_problems.py",
                                   "tests/test_upstream_client.py", "tests/test_following.py"],
    # (tests/test_startup.py waits on a real reactor: a mutant of keep_asking hangs it for minutes)
    "gateway/upstream/startup.py": ["tests/test_startup_diagnosis.py"],
    "gateway/upstream/messages.py": ["tests/test_upstream_messages_parsing.py",
                                     "tests/test_upstream_client.py"],
    "gateway/upstream/client.py": ["tests/test_upstream_client.py", "tests/test_upstream_client_faults.py",
                                   "tests/test_upstream_transport.py",
                                   "tests/test_upstream_client_connections.py", "tests/test_upstream_pool.py"],
    "gateway/upstream/transport.py": ["tests/test_upstream_transport.py", "tests/test_upstream_client.py",
                                      "tests/test_upstream_client_faults.py",
                                      "tests/test_upstream_client_connections.py",
                                      "tests/test_upstream_pool.py"],
    "gateway/translate/following.py": ["tests/test_following.py", "tests/test_following_edges.py"],
    "gateway/translate/registration.py": ["tests/test_v1_face.py", "tests/test_v2_face.py",
                                          "tests/test_registration_by_thumbprint.py",
                                          "tests/test_registration_flows.py",
                                          "tests/test_registration_flow_outcomes.py"],
    "gateway/translate/revocation.py": ["tests/test_retries_and_switches.py",
                                        "tests/test_revocation_previous_ca.py",
                                        "tests/test_revocation_certificate_key.py",
                                        "tests/test_revocation_flow_outcomes.py"],
    "gateway/translate/orders.py": ["tests/test_v2_face.py", "tests/test_orders_edges.py",
                                    "tests/test_orders_flow_reads.py",
                                    "tests/test_orders_flow_writes.py"],
    "gateway/translate/directory.py": ["tests/test_directory_meta.py", "tests/test_v2_face.py"],
    "gateway/translate/accounts.py": ["tests/test_v1_face.py", "tests/test_accounts_binding.py",
                                      "tests/test_registration_flows.py",
                                      "tests/test_registration_by_thumbprint.py",
                                      "tests/test_retries_and_switches.py", "tests/test_renewals.py",
                                      "tests/security/test_managed_on_demand.py"],
    "gateway/translate/bindings.py": ["tests/test_signing_keys.py", "tests/test_renewals.py"],
    "gateway/translate/signing.py": ["tests/test_signing_keys.py", "tests/test_v1_face.py",
                                     "tests/security/test_managed_on_demand.py"],
    "gateway/translate/renewals.py": ["tests/test_renewals_wrong_plan.py", "tests/test_renewals.py"],
    "gateway/translate/terms.py": ["tests/test_terms_order_extras.py", "tests/test_renewals.py",
                                  "tests/test_adopt_certificates.py"],
    "gateway/translate/inventory.py": ["tests/test_inventory_rules.py", "tests/test_renewals.py"],
    "gateway/translate/profiles.py": ["tests/test_profiles_rules.py", "tests/test_renewals.py"],
    "gateway/translate/sweeps.py": ["tests/test_sweeps_abandoned.py", "tests/test_budget.py"],
    "gateway/translate/renewalinfo.py": ["tests/test_renewalinfo_poller.py", "tests/test_renewals.py"],
    "gateway/translate/tlssni.py": ["tests/test_tlssni_outcome.py", "tests/test_tlssni01_v1.py"],
    "gateway/translate/context.py": ["tests/test_context_clock.py", "tests/test_v1_face.py"],
    "gateway/translate/revalidation.py": ["tests/test_revalidation_plan.py", "tests/test_issuance_paths.py",
                                          "tests/test_tlssni01_v1.py"],
    "gateway/translate/recovery.py": ["tests/test_recovery_order_list.py",
                                      "tests/test_retries_and_switches.py"],
    "gateway/translate/memory.py": ["tests/test_memory_locks.py", "tests/test_budget_accounting.py",
                                    "tests/test_following.py"],
    "gateway/translate/errors.py": ["tests/test_errors_border.py", "tests/test_problems.py",
                                    "tests/test_v1_face.py"],
    "gateway/translate/authorizations.py": ["tests/test_v1_face.py", "tests/test_authorization_reuse.py",
                                            "tests/test_tlssni01.py", "tests/test_tlssni01_v1.py",
                                            "tests/test_tlssni_outcome.py", "tests/test_following.py",
                                            "tests/security/test_managed_on_demand.py",
                                            "tests/test_renewals.py", "tests/test_renewals_wrong_plan.py",
                                            "tests/test_issuance_paths.py",
                                            "tests/test_retries_and_switches.py",
                                            "tests/test_flow_store_reads.py",
                                            "tests/test_issuance_outcomes.py",
                                            "tests/test_revalidation_plan.py", "tests/test_budget.py",
                                            "tests/test_sweeps_abandoned.py",
                                            "tests/test_terms_order_extras.py",
                                            "tests/test_authorizations_new_orders.py",
                                            "tests/test_authorizations_answers.py",
                                            "tests/test_authorizations_tlssni01_outcomes.py",
                                            "tests/test_authorizations_published_answers.py",
                                            "tests/test_authorizations_managed_answers.py",
                                            "tests/test_authorizations_reads.py",
                                            "tests/test_authorizations_answered_status.py",
                                            "tests/test_store_handoffs.py"],
    "gateway/translate/requests.py": ["tests/test_requests_payloads.py", "tests/test_v1_face.py",
                                      "tests/test_v2_face.py"],
}

#: mutmut's command line, with the test selection of setup.cfg replaced by
#: MUTATION_TESTS (JSON) when set; mutmut forks its workers from this process,
#: so they inherit the replaced configuration.
_MUTMUT = """
import json, os, sys
import mutmut.configuration
selection = json.loads(os.environ.get("MUTATION_TESTS") or "null")
if selection:
    mutmut.configuration.config().pytest_add_cli_args_test_selection = selection
from mutmut.__main__ import cli
sys.argv[0] = "mutmut"
cli()
"""


def all_modules() -> list[str]:
    return sorted(
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).glob("*.py")
        if path.name != "__init__.py"
    )


def resolve(names: list[str]) -> list[str]:
    """The module paths (gateway/…/x.py) the command line names."""
    modules = all_modules()
    chosen: list[str] = []
    for name in names:
        bare = name.strip("/").removesuffix(".py").replace(".", "/")
        bare = bare.removeprefix("gateway/")
        found = [m for m in modules if m == f"gateway/{bare}.py"]
        found = found or [m for m in modules if m.startswith(f"gateway/{bare}/")]
        found = found or [m for m in modules if Path(m).stem == bare]
        if not found or (len(found) > 1 and "/" not in bare and Path(found[0]).stem == bare):
            where = ", ".join(found) if found else "no module of " + ", ".join(PACKAGES)
            raise SystemExit(f"mutation: {name!r} names {where}")
        chosen += [m for m in found if m not in chosen]
    return chosen


def mutant_glob(module: str, function: str | None = None) -> str:
    """
    The names of ``module``'s mutants (mutmut 3 matches them with fnmatch),
    or only those of the functions ``function`` (a glob) names: mutmut
    calls a function's mutants ``x_<name>__mutmut_<n>`` and a method's
    ``xǁ<Class>ǁ<name>__mutmut_<n>`` (``--only 'AuthorizationView*'``).
    """
    prefix = module.removesuffix(".py").replace("/", ".")
    if function is None:
        return prefix + ".*"
    return f"{prefix}.x[_ǁ]{function}__mutmut_*"


def matching(names: list[str], globs: list[str]) -> list[str]:
    """The mutant names any of ``globs`` matches, as mutmut matches them."""
    return [name for name in names if any(fnmatch.fnmatchcase(name, glob) for glob in globs)]


@dataclass(frozen=True)
class Equivalent:
    """One mutant (``[[equivalent]]``: its name and the line it writes)."""

    mutant: str
    mutated: str
    reason: str


@dataclass(frozen=True)
class EquivalentLines:
    """
    Every mutant of a line of one module that matches ``original``
    (``[[equivalent_lines]]``), e.g. the message of an exception no one
    reads; with ``text_only``, only those that change nothing but the text
    inside string literals.
    """

    module: str
    original: re.Pattern[str]
    text_only: bool
    reason: str

    def covers(self, module: str, diff: str) -> bool:
        if module != self.module:
            return False
        before, after = changed_lines(diff, "-"), changed_lines(diff, "+")
        if not before or not all(self.original.search(line) for line in before):
            return False
        return not self.text_only or [_without_text(line) for line in before] == [
            _without_text(line) for line in after]


@dataclass(frozen=True)
class Equivalents:
    by_name: dict[str, Equivalent]
    by_line: list[EquivalentLines]


def load_equivalents() -> Equivalents:
    if not EQUIVALENTS.exists():
        return Equivalents({}, [])
    data = tomllib.loads(EQUIVALENTS.read_text())
    by_name = {}
    for entry in data.get("equivalent", []):
        _require(entry, {"mutant", "mutated", "reason"})
        by_name[entry["mutant"]] = Equivalent(entry["mutant"], entry["mutated"].strip(), entry["reason"])
    by_line = []
    for entry in data.get("equivalent_lines", []):
        _require(entry, {"module", "original", "reason"})
        by_line.append(EquivalentLines(entry["module"], re.compile(entry["original"]),
                                       bool(entry.get("text_only", False)), entry["reason"]))
    return Equivalents(by_name, by_line)


def _require(entry: dict[str, object], keys: set[str]) -> None:
    missing = keys - entry.keys()
    if missing or not str(entry["reason"]).strip():
        raise SystemExit(f"mutation: {EQUIVALENTS.name}: entry {entry} lacks {sorted(missing) or ['a reason']}")


def changed_lines(diff: str, sign: str) -> list[str]:
    return [line[1:].strip() for line in diff.splitlines()
            if line.startswith(sign) and not line.startswith(sign * 3)]


def mutated_lines(diff: str) -> list[str]:
    return changed_lines(diff, "+")


def _without_text(line: str) -> str:
    """The line with the text of its string literals blanked out."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line).readline))
    except (tokenize.TokenError, SyntaxError):
        return line
    return " ".join('""' if token.type == tokenize.STRING else token.string for token in tokens)


@dataclass
class ModuleResult:
    module: str
    total: int = 0
    detected: int = 0
    equivalent: int = 0
    survivors: list[tuple[str, str, str]] = field(default_factory=list)  # name, status, diff
    stale: list[str] = field(default_factory=list)

    @property
    def score(self) -> float | None:
        counted = self.total - self.equivalent
        return None if counted == 0 else 100.0 * self.detected / counted


def collect(module: str, equivalents: Equivalents) -> ModuleResult:
    # mutmut's own reading of its results (it works relative to the checkout)
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    result = ModuleResult(module)
    for name, exit_code in sorted(saved_results(module).items(), key=lambda item: _natural(item[0])):
        result.total += 1
        status = status_by_exit_code[exit_code]
        if status in DETECTED:
            result.detected += 1
            continue
        diff = get_diff_for_mutant(name, path=module)
        entry = equivalents.by_name.get(name)
        if entry is not None:
            if entry.mutated in mutated_lines(diff):
                result.equivalent += 1
                continue
            result.stale.append(name)
        if any(rule.covers(module, diff) for rule in equivalents.by_line):
            result.equivalent += 1
            continue
        result.survivors.append((name, status, diff))
    return result


def unmutated(module: str) -> list[str]:
    """
    The functions of *module* mutmut does not mutate: it leaves alone every
    function with a decorator other than ``staticmethod``/``classmethod``
    (``property`` included), so no score says anything about them.  Listed
    with each module's score so that gap stays visible (the flows are wrapped
    by assignment, not decorated, for this reason: see errors.flow).
    """
    tree = ast.parse((ROOT / module).read_text(), filename=module)
    found = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                plain = {"staticmethod", "classmethod"}
                if node.decorator_list and not (
                        len(node.decorator_list) == 1
                        and isinstance(node.decorator_list[0], ast.Name)
                        and node.decorator_list[0].id in plain):
                    found.append(prefix + node.name)

    visit(tree.body, "")
    return found


def _natural(name: str) -> tuple[str, int]:
    stem, _, number = name.rpartition("__mutmut_")
    return stem, int(number) if number.isdigit() else 0


def undetected(module: str) -> list[str]:
    """The mutants of ``module`` that the last run did not detect."""
    from mutmut.stats import status_by_exit_code

    return sorted(name for name, code in saved_results(module).items()
                  if status_by_exit_code[code] not in DETECTED)


def _saved_path(module: str) -> Path:
    return ROOT / "mutants" / "results" / (module.replace("/", ".") + ".json")


def saved_results(module: str) -> dict[str, int | None]:
    """
    The exit code of each mutant of ``module`` at its last run.  Kept apart
    from mutmut's own records, which mutmut clears for every module when
    the test selection changes (as it does from one module to the next).
    """
    path = _saved_path(module)
    return json.loads(path.read_text()) if path.exists() else {}


def save_results(module: str, rerun: list[str] | None) -> None:
    """Keep mutmut's results for ``module``: all of them, or those ``rerun``."""
    meta = ROOT / "mutants" / (module + ".meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    if rerun is not None:
        kept = saved_results(module)
        kept.update({name: codes.get(name) for name in rerun})
        codes = {name: kept.get(name) for name in codes}
    path = _saved_path(module)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(codes, indent=1, sort_keys=True))


def run_mutmut(module: str, jobs: int, again: bool, all_tests: bool,
               only: list[str] | None = None) -> None:
    """
    Run ``module``'s mutants (with ``only``, those of the functions these
    globs name: a long module in parts, each part's results added to the
    last run's; with ``again``, those the last run did not detect).
    """
    log = ROOT / "mutants" / (module.replace("/", ".") + ".log")
    log.parent.mkdir(exist_ok=True)
    print(f"== mutmut: {module} (log: {log.relative_to(ROOT)})", flush=True)
    globs = [mutant_glob(module, function) for function in only] if only else [mutant_glob(module)]
    names = globs
    rerun = None
    if again and saved_results(module):
        names = rerun = matching(undetected(module), globs)
        if not names:
            return
    selection = None if all_tests else NARROW_TESTS.get(module)
    print(f"   against {shlex.join(selection) if selection else 'the fast tier (setup.cfg [mutmut])'}",
          flush=True)
    env = dict(os.environ, MUTATION_TESTS=json.dumps(selection))
    with open(log, "w") as out:
        done = subprocess.run(
            [sys.executable, "-c", _MUTMUT, "run", "--max-children", str(jobs), *names],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        # a module whose only functions are decorated (mutmut leaves those
        # alone) has none: "Filtered for specific mutants, but nothing matches"
        if "No mutants" in tail or "no mutants" in tail or "nothing matches" in tail:
            return
        raise SystemExit(f"mutation: mutmut failed on {module} (exit {done.returncode}):\n{tail}")
    if rerun is None and only:
        meta = json.loads((ROOT / "mutants" / (module + ".meta")).read_text())
        rerun = matching(list(meta["exit_code_by_key"]), globs)
    save_results(module, rerun)


def report(result: ModuleResult, show_diffs: bool) -> None:
    score = result.score
    shown = "no mutants" if score is None else f"{score:5.1f} %"
    print(f"{result.module}: {shown}  ({result.total} mutants, {result.detected} detected, "
          f"{result.equivalent} equivalent, {len(result.survivors)} surviving)")
    skipped = unmutated(result.module)
    if skipped:
        print(f"  not mutated (decorated; mutmut leaves them alone): {', '.join(skipped)}")
    for name in result.stale:
        print(f"  stale equivalent entry (the mutant now writes another line): {name}")
    for name, status, diff in result.survivors:
        print(f"  {status}: {name}")
        lines = diff.splitlines()[2:] if show_diffs else [
            line for line in diff.splitlines()[2:] if line[:1] in "+-"]
        for line in lines:
            print(f"      {line}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/mutation")
    parser.add_argument("modules", nargs="*", help="modules or folders (default: all of " + ", ".join(PACKAGES) + ")")
    parser.add_argument("--report", action="store_true", help="print the last run's results, run nothing")
    parser.add_argument("--again", action="store_true",
                        help="run only the mutants the last run did not detect (after adding tests: "
                             "a test added cannot let a detected mutant through; after a change of the "
                             "module itself, run it whole)")
    parser.add_argument("--all-tests", action="store_true",
                        help="run every module's mutants against the whole fast tier")
    parser.add_argument("--diffs", action="store_true", help="print whole-function diffs of the survivors")
    parser.add_argument("--only", action="append", metavar="FUNCTION_GLOB",
                        help="run only the mutants of the functions this glob names (repeatable; "
                             "methods are Class*method); the results are added to the last run's, "
                             "so a long module can be run in parts")
    args = parser.parse_args()
    modules = resolve(args.modules) if args.modules else all_modules()
    jobs = int(os.environ.get("MUTATION_JOBS", "1"))
    minimum = float(os.environ.get("MUTATION_MIN_SCORE", "90"))
    equivalents = load_equivalents()
    os.chdir(ROOT)
    results = []
    for module in modules:
        if not args.report:
            run_mutmut(module, jobs, args.again, args.all_tests, args.only)
        result = collect(module, equivalents)
        report(result, args.diffs)
        results.append(result)
    print()
    print("module                                   score   mutants  equivalent  surviving")
    below = []
    for result in results:
        score = result.score
        shown = "   -  " if score is None else f"{score:5.1f}%"
        print(f"{result.module:40} {shown} {result.total:8} {result.equivalent:11} {len(result.survivors):10}")
        if score is not None and score < minimum:
            below.append(result.module)
    if below:
        print(f"under {minimum:g} %: {', '.join(below)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
