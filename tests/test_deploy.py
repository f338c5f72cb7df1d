"""
deploy/ checked as far as a machine without a container engine can: the
Dockerfile's entry command and health check run from a plain install with
the image's own configuration, and the Dockerfile, the compose example and
the Kubernetes manifests parse and refer only to files, volumes, ports and
flags that exist.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway import cli
from gateway.config import Layers, env_name, load_config_file, use_layers
from gateway.keystore import KeyStore
from tests.support.gateway_process import _child_env
from tests.support.stack import REPO_ROOT, free_port

DEPLOY = os.path.join(REPO_ROOT, "deploy")
DOCKERFILE = os.path.join(DEPLOY, "Dockerfile")
COMPOSE = os.path.join(DEPLOY, "compose.yaml")
KUBERNETES = os.path.join(DEPLOY, "kubernetes")


# --------------------------------------------------------------------------
# Reading deploy/
# --------------------------------------------------------------------------

def dockerfile_stages(path: str = DOCKERFILE) -> list:
    """
    The Dockerfile as stages, each a list of (INSTRUCTION, arguments), with
    comments dropped and continuation lines joined.
    """
    stages, logical, pending = [], [], ""
    with open(path) as f:
        for line in f.read().splitlines():
            stripped = line.strip()
            if stripped.startswith("#") or (not stripped and not pending):
                continue
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            logical.append((pending + stripped).strip())
            pending = ""
    assert not pending, "a continuation line at the end of the Dockerfile"
    for text in logical:
        instruction, _, arguments = text.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, arguments.strip()))
        else:
            assert instruction == "ARG", f"{instruction} before the first FROM"
    return stages


def final_stage() -> list:
    return dockerfile_stages()[-1]


def instruction(stage: list, name: str) -> list:
    return [arguments for instr, arguments in stage if instr == name]


def image_env() -> dict:
    env = {}
    for arguments in instruction(final_stage(), "ENV"):
        for pair in shlex.split(arguments):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def exec_form(arguments: str) -> list:
    command = json.loads(arguments)
    assert isinstance(command, list) and all(isinstance(a, str) for a in command), arguments
    return command


def healthcheck_command() -> list:
    (arguments,) = instruction(final_stage(), "HEALTHCHECK")
    options, _, command = arguments.partition("CMD ")
    assert re.fullmatch(r"(--[a-z-]+=\S+\s*)*", options), options
    return exec_form(command)


def entry_command() -> list:
    (entrypoint,) = instruction(final_stage(), "ENTRYPOINT")
    (command,) = instruction(final_stage(), "CMD")
    return exec_form(entrypoint) + exec_form(command)


def serve_env_names() -> set:
    """
    The ``ACME_GATEWAY_*`` variable of every ``serve`` flag.
    """
    use_layers(Layers(environ={}))
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return {env_name(a.option_strings[-1]) for a in commands.choices["serve"]._actions
            if a.option_strings and a.dest != "help"}


def endpoint_port(endpoint: str) -> int:
    match = re.match(r"^tcp6?:(?:port=)?(\d+)(?::|$)", endpoint)
    assert match, f"not a tcp endpoint: {endpoint!r}"
    return int(match[1])


def yaml_documents(path: str) -> list:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# --------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------

def test_dockerfile_shape():
    """
    Slim Python bases, a non-root user, the state directory a volume, the
    ports of its listeners exposed, and every ``ACME_GATEWAY_*`` variable a
    real ``serve`` flag.
    """
    stages = dockerfile_stages()
    for stage in stages:
        (base,) = instruction(stage, "FROM")
        assert re.match(r"^python:\$\{PYTHON_VERSION\}-slim", base), base
    stage = final_stage()
    (user,) = instruction(stage, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "run as a numeric non-root user (runAsNonRoot can check it)"
    env = image_env()
    unknown = {n for n in env if n.startswith("ACME_GATEWAY_")} - serve_env_names()
    assert not unknown, f"the image sets variables no flag reads: {unknown}"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "a read-only root filesystem takes no .pyc"
    (volume,) = instruction(stage, "VOLUME")
    volumes = exec_form(volume)
    assert any(env["ACME_GATEWAY_STATE"].startswith(v.rstrip("/") + "/") for v in volumes)
    assert not any(env["ACME_GATEWAY_KEYS"].startswith(v) for v in volumes), \
        "keys are mounted read-only, not kept on the state volume"
    exposed = {int(p) for arguments in instruction(stage, "EXPOSE") for p in arguments.split()}
    assert {endpoint_port(env["ACME_GATEWAY_LISTEN"]), endpoint_port(env["ACME_GATEWAY_ADMIN_LISTEN"])} \
        == exposed
    assert entry_command() == ["acme-gateway", "serve"]
    assert healthcheck_command()[:2] == ["acme-gateway", "healthcheck"]


def test_dockerfile_copies_what_exists():
    """
    Every ``COPY`` source (build context: the repository root) exists, and
    the Dockerfile's own ignore file lets exactly those through.
    """
    sources = []
    for stage in dockerfile_stages():
        for arguments in instruction(stage, "COPY"):
            parts = arguments.split()
            if parts[0].startswith("--from="):
                continue
            sources += parts[:-1]
    assert sources
    for source in sources:
        assert os.path.exists(os.path.join(REPO_ROOT, source)), source
    with open(DOCKERFILE + ".dockerignore") as f:
        allowed = {line[1:].rstrip("/") for line in f.read().splitlines() if line.startswith("!")}
    assert {s.rstrip("/") for s in sources} <= allowed


def _wait_for(url: str, process: subprocess.Popen, log_path: str, timeout: float = 30) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with opener.open(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            with open(log_path) as f:
                raise AssertionError(f"the gateway did not serve {url}:\n{f.read()}")
        time.sleep(0.1)


@pytest.mark.integration
def test_entry_command_runs_from_a_plain_install(tmp_path, pebble):
    """
    The image's entry command and environment, run from the installed
    console script with the volume, the key mount and the ports mapped to
    the test's own, start a gateway whose health check command passes and
    whose log is JSON lines — and it writes nothing outside its volume.
    """
    env = image_env()
    volume = exec_form(instruction(final_stage(), "VOLUME")[0])[0]
    state_dir = tmp_path / "volume"
    keys_dir = tmp_path / "keys"
    workdir_root = tmp_path / "root"
    for directory in (state_dir, keys_dir, workdir_root):
        directory.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    (keys_dir / "account.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(keys_dir / "account.pem", 0o600)
    v1_port, admin_port = free_port(), free_port()
    mounted = {
        env["ACME_GATEWAY_STATE"]: str(state_dir / os.path.relpath(env["ACME_GATEWAY_STATE"], volume)),
        env["ACME_GATEWAY_KEYS"]: str(keys_dir),
        env["ACME_GATEWAY_LISTEN"]: f"tcp:{v1_port}:interface=127.0.0.1",
        env["ACME_GATEWAY_ADMIN_LISTEN"]: f"tcp:{admin_port}:interface=127.0.0.1",
    }
    child_env = _child_env()
    child_env.update({name: mounted.get(value, value) for name, value in env.items()})
    # What an operator adds: the CA.
    child_env["ACME_GATEWAY_UPSTREAM"] = pebble.directory_url
    child_env["ACME_GATEWAY_UPSTREAM_CA_BUNDLE"] = pebble.ca_bundle
    scripts = os.path.dirname(sys.executable)
    child_env["PATH"] = scripts + os.pathsep + child_env.get("PATH", "")
    command = entry_command()
    assert os.access(os.path.join(scripts, command[0]), os.X_OK), "the console script is installed"
    log_path = str(tmp_path / "gateway.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=child_env, cwd=str(workdir_root),
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        body = _wait_for(f"http://127.0.0.1:{admin_port}/healthz", process, log_path)
        assert body == "ok\n"
        check = subprocess.run(healthcheck_command(), env=child_env, capture_output=True, text=True,
                               timeout=60)
        assert check.returncode == 0, check.stderr
        ready = subprocess.run(healthcheck_command() + ["--ready"], env=child_env,
                               capture_output=True, text=True, timeout=60)
        assert ready.returncode == 0, ready.stderr
        directory = _wait_for(f"http://127.0.0.1:{v1_port}/directory", process, log_path)
        assert "new-reg" in json.loads(directory)
    finally:
        process.terminate()
        process.wait(10)
    assert process.returncode == 0
    with open(log_path) as f:
        records = [json.loads(line) for line in f.read().splitlines() if line.strip()]
    assert any("v1 directory at" in r["message"] for r in records)
    assert any(r.get("thumbprint") for r in records if r["namespace"] == "gateway.keystore")
    assert sorted(os.listdir(workdir_root)) == [], "the gateway wrote outside its volume"
    assert sorted(os.listdir(keys_dir)) == ["account.pem"]
    assert set(os.listdir(state_dir)) <= {"state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"}


# --------------------------------------------------------------------------
# compose.yaml
# --------------------------------------------------------------------------

def test_compose_example(tmp_path):
    """
    The compose file builds this Dockerfile, runs the gateway read-only with
    its keys mounted read-only and its state on a volume, sets only real
    variables, points certbot at the gateway's v1 port, and declares every
    volume and file it mounts.
    """
    (compose,) = yaml_documents(COMPOSE)
    services = compose["services"]
    assert {"setup", "pebble", "gateway", "certbot"} <= set(services)
    setup = services["setup"]
    context = os.path.normpath(os.path.join(DEPLOY, setup["build"]["context"]))
    assert context == REPO_ROOT
    assert os.path.samefile(os.path.join(context, setup["build"]["dockerfile"]), DOCKERFILE)
    gateway = services["gateway"]
    assert gateway["image"] == setup["image"]
    assert gateway["read_only"] is True
    env = image_env()
    assert set(gateway["environment"]) <= serve_env_names()
    assert "ACME_GATEWAY_UPSTREAM" in gateway["environment"]
    mounts = {m.split(":")[1]: m for m in gateway["volumes"]}
    assert mounts[env["ACME_GATEWAY_KEYS"]].endswith(":ro")
    state_volume = os.path.dirname(env["ACME_GATEWAY_STATE"])
    assert state_volume in mounts and not mounts[state_volume].endswith(":ro")
    bundle = gateway["environment"]["ACME_GATEWAY_UPSTREAM_CA_BUNDLE"]
    assert any(bundle.startswith(target + "/") for target in mounts)
    certbot = services["certbot"]["command"]
    server = certbot[certbot.index("--server") + 1]
    assert server == f"http://gateway:{endpoint_port(env['ACME_GATEWAY_LISTEN'])}/directory"
    assert services["certbot"]["depends_on"]["gateway"]["condition"] == "service_healthy"
    assert server == setup["environment"]["GATEWAY_DIRECTORY"]
    declared = set(compose["volumes"])
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert os.path.exists(os.path.join(DEPLOY, source)), (name, source)
            else:
                assert source in declared, (name, source)


def test_compose_setup_script(tmp_path):
    """
    The setup step, run outside a container with its directories mapped,
    leaves Pebble a certificate for its service name and a configuration
    naming it, certbot an existing account for the gateway's directory, and
    the gateway a loadable copy of that account key.
    """
    (compose,) = yaml_documents(COMPOSE)
    setup = compose["services"]["setup"]
    script = os.path.join(DEPLOY, setup["volumes"][0].split(":")[0])
    env = {**_child_env(), **setup["environment"],
           "SETUP_DIR": str(tmp_path / "setup"), "CERTBOT_CONFIG_DIR": str(tmp_path / "letsencrypt"),
           "GATEWAY_KEYS_DIR": str(tmp_path / "keys"), "PYTHONPATH": REPO_ROOT}
    os.makedirs(env["SETUP_DIR"])
    for _ in range(2):  # idempotent: the second run keeps the account
        subprocess.run([sys.executable, script], env=env, check=True, capture_output=True, timeout=120)
    with open(tmp_path / "setup" / "pebble.json") as f:
        config = json.load(f)["pebble"]
    leaf = x509.load_pem_x509_certificate(open(config["certificate"], "rb").read())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    pebble_host = compose["services"]["gateway"]["environment"]["ACME_GATEWAY_UPSTREAM"].split("/")[2]
    assert pebble_host.split(":")[0] in names.get_values_for_type(x509.DNSName)
    assert config["listenAddress"].endswith(":" + pebble_host.split(":")[1])
    keys = KeyStore.load(str(tmp_path / "keys"))
    assert len(keys.loaded) == 1 and not keys.problems
    accounts = tmp_path / "letsencrypt" / "accounts" / "gateway:4000" / "directory"
    (account,) = os.listdir(accounts)
    with open(accounts / account / "private_key.json") as f:
        assert "d" in json.load(f)


# --------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------

def kubernetes_objects() -> dict:
    objects = {}
    for name in sorted(os.listdir(KUBERNETES)):
        for document in yaml_documents(os.path.join(KUBERNETES, name)):
            assert {"apiVersion", "kind", "metadata"} <= set(document), name
            objects[(document["kind"], document["metadata"]["name"])] = document
    return objects


def test_kubernetes_configmap_is_a_valid_gateway_config(tmp_path):
    """
    The ConfigMap's file has only real flags, with values the gateway
    accepts at start-up.
    """
    configmap = kubernetes_objects()[("ConfigMap", "acme-gateway-config")]
    path = tmp_path / "gateway.toml"
    path.write_text(configmap["data"]["gateway.toml"])
    values = load_config_file(str(path))
    layers = use_layers(Layers(environ={}, file_values=values, file_path=str(path)))
    parser = cli.build_parser()
    assert layers.unknown_keys() == []
    args = parser.parse_args(["serve"])
    operations = cli._operations_config(parser, args)
    assert operations["migrated_after"] == 90 * 86400
    assert args.upstream.startswith("https://")
    assert endpoint_port(args.listen) == 4000 and "interface=127.0.0.1" in args.listen


def test_kubernetes_deployment_wiring():
    """
    The Deployment runs the gateway beside a legacy client that uses it on
    loopback; keys come read-only from the Secret, the config from the
    ConfigMap, state from a claim that exists; probes hit /healthz and
    /readyz on the admin listener's port; resources are set; the gateway
    runs non-root on a read-only root filesystem.
    """
    objects = kubernetes_objects()
    deployment = objects[("Deployment", "legacy-web")]
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    gateway, legacy = containers["acme-gateway"], containers["certbot"]
    volumes = {v["name"]: v for v in pod["volumes"]}

    env = {e["name"]: e["value"] for e in gateway["env"]}
    assert set(env) <= serve_env_names() | {"ACME_GATEWAY_CONFIG"}
    use_layers(Layers(environ={}))
    args = cli.build_parser().parse_args(gateway["args"] + ["--upstream", "https://x", "--keys", "/k"])
    assert args.command == "serve"

    mounts = {m["mountPath"]: m for m in gateway["volumeMounts"]}
    config_mount = next(m for path, m in mounts.items() if env["ACME_GATEWAY_CONFIG"].startswith(path + "/"))
    configmap_name = volumes[config_mount["name"]]["configMap"]["name"]
    configmap = objects[("ConfigMap", configmap_name)]
    assert os.path.basename(env["ACME_GATEWAY_CONFIG"]) in configmap["data"]

    import tomllib

    config = tomllib.loads(configmap["data"]["gateway.toml"])
    keys_mount = mounts[config["keys"]]
    assert keys_mount["readOnly"] is True
    secret = volumes[keys_mount["name"]]["secret"]
    assert secret["secretName"] == "acme-gateway-keys"
    if secret.get("defaultMode", 0o644) & 0o077:
        # root-owned Secret files reach the gateway's user through fsGroup only
        assert config.get("allow-shared-key-files") is True
    state_mount = mounts[os.path.dirname(config["state"])]
    claim = volumes[state_mount["name"]]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in objects
    for container in pod["containers"]:
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, (container["name"], mount["name"])
    for volume in volumes.values():
        if "persistentVolumeClaim" in volume:
            assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in objects

    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports[gateway["livenessProbe"]["httpGet"]["port"]] == endpoint_port(config["admin-listen"])
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ports[gateway["readinessProbe"]["httpGet"]["port"]] == endpoint_port(config["admin-listen"])
    template_annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(template_annotations["prometheus.io/port"]) == endpoint_port(config["admin-listen"])

    for container in (gateway, legacy):
        assert container["resources"]["requests"] and container["resources"]["limits"]
    security = gateway["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False
    assert str(security["runAsUser"]) == instruction(final_stage(), "USER")[0].split(":")[0]
    assert pod["securityContext"]["fsGroup"] == security["runAsGroup"]

    legacy_command = " ".join(legacy["command"] + legacy["args"])
    assert f"--server http://127.0.0.1:{endpoint_port(config['listen'])}/directory" in legacy_command
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize("path", ["deploy/compose.yaml", "deploy/kubernetes/deployment.yaml",
                                  "deploy/kubernetes/configmap.yaml", "deploy/kubernetes/pvc.yaml"])
def test_deploy_files_are_plain_yaml(path):
    """
    Each file parses as YAML with no tabs (a common copy-paste breakage).
    """
    with open(os.path.join(REPO_ROOT, path)) as f:
        text = f.read()
    assert "\t" not in text
    assert yaml_documents(os.path.join(REPO_ROOT, path))
