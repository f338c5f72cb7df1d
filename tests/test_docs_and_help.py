"""
What a newcomer reads first — the README and ``--help`` — against what the
gateway and its scripts do: every ``serve`` flag is in the README; the
usage of ``adopt`` shows what it requires, and its exit statuses; ``keys``
says what it does and ``keys import PATH`` what PATH is; the README names
no v1 client that is not one and no reference outside the repository; and
``scripts/setup --demo`` installs what the demo needs and nothing only the
tests need.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess

import pytest

from gateway.process import cli
from gateway.process.config import Layers, use_layers
from tests.support.stack import REPO_ROOT

README = os.path.join(REPO_ROOT, "README.md")


def readme() -> str:
    with open(README) as f:
        return f.read()


def help_of(*command: str) -> str:
    use_layers(Layers(environ={}))
    return cli.command_parser(cli.build_parser(), *command).format_help()


def test_every_serve_flag_is_in_the_readme():
    """
    Each flag ``serve --help`` lists appears in the README.
    """
    use_layers(Layers(environ={}))
    serve = cli.command_parser(cli.build_parser(), "serve")
    flags = {a.option_strings[-1] for a in serve._actions if a.option_strings and a.dest != "help"}
    text = readme()
    missing = sorted(f for f in flags if f not in text)
    assert not missing, f"serve flags the README never names: {missing}"


@pytest.mark.parametrize("client, where", [
    ("certbot", "--config-dir DIR"), ("dehydrated", "--config FILE"), ("acme.sh", "--home DIR")])
def test_adopt_usage_shows_what_it_requires(client, where):
    """
    ``--gateway`` and ``--keys`` are required to adopt (not shown as
    optional), ``--undo`` needs neither, and the exit statuses are listed.
    """
    text = help_of("adopt", client)
    usage = text.split("\n\n")[0]
    adopt_line, undo_line = usage.splitlines()
    assert f"acme-gateway adopt {client} " in adopt_line and where in adopt_line
    assert " --gateway URL --keys DIR " in adopt_line and "[--gateway" not in usage
    assert undo_line.strip().endswith("--undo") and "--gateway" not in undo_line
    flat = " ".join(text.split())
    assert "Exit status: 0 when everything was adopted (or undone); 1 when" in flat
    assert "2 for unusable arguments" in flat
    assert "Exit status:" in " ".join(help_of("adopt").split())


def test_adopt_without_gateway_exits_2(tmp_path, capsys):
    """
    What the usage says is required is: no ``--gateway`` is exit status 2.
    """
    use_layers(Layers(environ={}))
    assert cli.main(["adopt", "certbot", "--config-dir", str(tmp_path), "--keys", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: acme-gateway adopt certbot --config-dir DIR --gateway URL")
    assert "--gateway URL is required" in err


def test_keys_help():
    """
    ``keys`` says it lists and imports; ``keys import`` says what PATH is
    and its exit statuses; ``keys list`` its own.
    """
    top = " ".join(help_of().split())
    assert "keys list the key store's account keys, or import keys into it" in top
    assert "inspect" not in top
    text = " ".join(help_of("keys", "import").split())
    assert "PATH a private key file (PEM, or JWK JSON such as certbot's private_key.json), or a " \
           "directory searched recursively" in text
    assert "Exit status: 0 when every key found was imported" in text
    assert "Exit status: 0 when it lists at least one usable key; 1 when none is usable" in \
        " ".join(help_of("keys", "list").split())


def test_keys_import_of_nothing_says_so(tmp_path, capsys):
    """
    A PATH that does not exist is a problem (exit 1), and the summary does
    not claim the keys were there already.
    """
    use_layers(Layers(environ={}))
    code = cli.main(["keys", "import", str(tmp_path / "nope"), "--keys", str(tmp_path / "keys")])
    out = capsys.readouterr().out
    assert code == 1
    assert "problem:" in out and out.splitlines()[-1] == "nothing imported"


def test_readme_names_only_real_v1_clients_and_no_outside_references():
    """
    acme-tiny 4.0 speaks (draft) ACME v2; its last v1 series is 3.x: the
    README names acme-tiny 4 only as a client of the v2 face, never in the
    v1 matrix. The README points at nothing outside the repository for how
    the gateway behaves (MAPPING.md is in ../shared, which users do not
    have), and no metric is "empty until" a feature that exists.
    """
    text = readme()
    v1_matrix = text.split("## Clients known to work", 1)[1].split("What the old Python", 1)[0]
    assert "acme-tiny" in v1_matrix and "acme-tiny | 4" not in v1_matrix
    assert "| acme-tiny | 3.0.0" in v1_matrix
    for line in text.splitlines():
        if "acme-tiny 4" in line:
            assert "v2" in line, line
    assert "acme-tiny 3.x" in text
    assert not re.search(r"MAPPING\s*§", text)
    assert "empty until" not in text


def _fake_bin(directory, names) -> str:
    """
    A PATH directory with the real tools the setup script needs, and a fake
    ``apt-get`` (and ``sudo``) that records what would be installed.
    """
    os.makedirs(directory)
    for tool in names:
        found = shutil.which(tool)
        assert found, tool
        os.symlink(found, os.path.join(directory, tool))
    record = os.path.join(directory, "apt.log")
    for fake in ("apt-get", "sudo"):
        path = os.path.join(directory, fake)
        with open(path, "w") as f:
            if fake == "sudo":
                f.write('#!/bin/sh\nexec "$@"\n')
            else:
                f.write(f'#!/bin/sh\necho "$@" >> {record}\n')
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return record


def test_setup_demo_installs_only_what_the_demo_needs(tmp_path):
    """
    ``scripts/setup --demo`` (what ``scripts/demo`` runs) asks apt for
    Debian's pebble at most — never dehydrated, BIND 9, chromium, openssl
    or curl, which only the tests need; plain ``scripts/setup`` asks for
    those.  (Run on a copy with the virtualenvs' stamps in place, on a PATH
    without those programs.)
    """
    with open(os.path.join(REPO_ROOT, "scripts", "demo")) as f:
        assert "./scripts/setup --demo" in f.read()
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    (copy / "tests").mkdir()
    for name in ("setup.cfg", "pyproject.toml"):
        shutil.copy(os.path.join(REPO_ROOT, name), copy / name)
    shutil.copy(os.path.join(REPO_ROOT, "scripts", "setup"), copy / "scripts" / "setup")
    shutil.copy(os.path.join(REPO_ROOT, "tests", "legacy-clients.txt"), copy / "tests")
    record = _fake_bin(str(tmp_path / "bin"), ["bash", "cat", "sha256sum", "cut", "id", "touch",
                                               "rm", "dirname", "mkdir", "basename"])
    # The full setup also builds today's Pebble: a stand-in builder here.
    builder = tmp_path / "build-pebble.sh"
    builder.write_text("echo /nonexistent/pebble\n")
    env = {"PATH": str(tmp_path / "bin"), "HOME": str(tmp_path),
           "ACME_GATEWAY_PEBBLE_CURRENT_BUILD": str(builder)}

    def stamps():
        sources = subprocess.run(
            ["bash", "-c", "cat setup.cfg pyproject.toml | sha256sum | cut -c1-16"], cwd=copy,
            env=env, capture_output=True, text=True, check=True).stdout.strip()
        clients = subprocess.run(
            ["bash", "-c", "sha256sum tests/legacy-clients.txt | cut -c1-16"], cwd=copy,
            env=env, capture_output=True, text=True, check=True).stdout.strip()
        os.makedirs(copy / ".venv" / "bin", exist_ok=True)
        os.makedirs(copy / ".venvs" / "certbot1", exist_ok=True)
        (copy / ".venv" / "bin" / "python").write_text("#!/bin/sh\n")
        os.chmod(copy / ".venv" / "bin" / "python", 0o755)
        (copy / ".venv" / f".installed-{sources}").write_text("")
        (copy / ".venvs" / "certbot1" / f".installed-{clients}").write_text("")

    def asked(*args) -> set:
        if os.path.exists(record):
            os.unlink(record)
        result = subprocess.run(["bash", str(copy / "scripts" / "setup"), *args], cwd=copy, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        if not os.path.exists(record):
            return set()
        with open(record) as f:
            return {word for line in f for word in line.split() if not word.startswith("-")} - {
                "update", "install"}

    stamps()
    demo = asked("--demo")
    assert demo <= {"pebble"}, demo
    full = asked()
    assert {"dehydrated", "chromium", "openssl", "curl"} <= full, full
