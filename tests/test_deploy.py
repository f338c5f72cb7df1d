"""
deploy/ checked as far as a machine without a container engine can: the
Dockerfile's entry command and health check run from a plain install with
the image's own environment and config file (as ``docker run`` would), the
same entry command runs with the image's environment **and** the Kubernetes
Deployment's environment and ConfigMap file (as the pod would), and the
Dockerfile, the compose example and the Kubernetes manifests parse and
refer only to files, volumes, ports and flags that exist.

"Running the image" here means: a temporary directory stands for the
container's root filesystem (every absolute path of the image, of its
config files and of the manifests' mounts lies below it), the files the
Dockerfile copies and the manifests mount are put there, and the entry
command runs with the environment the Dockerfile (and the Deployment) set.
Ports become free loopback ports; an endpoint on every interface of the
container (its network namespace) becomes loopback, so that nothing binds
beyond loopback; endpoints from the image's *environment* are used as they
are, ports aside.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.process import cli
from gateway.process.config import Layers, env_name, load_config_file, use_layers
from gateway.keys.jose import AccountKey
from gateway.keys.keystore import KeyStore
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


def copied_files() -> dict:
    """
    The files the final stage copies from the build context: destination
    in the image → source in the repository.
    """
    copies = {}
    for arguments in instruction(final_stage(), "COPY"):
        parts = arguments.split()
        if parts[0].startswith("--from="):
            continue
        (source, destination) = parts
        copies[destination] = os.path.join(REPO_ROOT, source)
    return copies


def image_config() -> dict:
    """
    The image's own config file (the one its ``ACME_GATEWAY_CONFIG``
    names, as the Dockerfile copies it in), as flag name → value.
    """
    with open(copied_files()[image_env()["ACME_GATEWAY_CONFIG"]], "rb") as f:
        return tomllib.load(f)


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
    # The environment wins over a config file: any other ACME_GATEWAY_*
    # variable the image set would silently beat the operator's file (a
    # Kubernetes ConfigMap).  The image's settings are its config file.
    assert {n for n in env if n.startswith("ACME_GATEWAY_")} == {"ACME_GATEWAY_CONFIG"}
    assert env["ACME_GATEWAY_CONFIG"] in copied_files()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "a read-only root filesystem takes no .pyc"
    config = image_config()
    unknown = {env_name(key) for key in config} - serve_env_names()
    assert not unknown, f"the image's config file sets keys no flag reads: {unknown}"
    assert "upstream" not in config, "the operator names the CA"
    (volume,) = instruction(stage, "VOLUME")
    volumes = exec_form(volume)
    assert any(config["state"].startswith(v.rstrip("/") + "/") for v in volumes)
    assert not any(config["keys"].startswith(v) for v in volumes), \
        "keys are mounted read-only, not kept on the state volume"
    exposed = {int(p) for arguments in instruction(stage, "EXPOSE") for p in arguments.split()}
    assert {endpoint_port(config["listen"]), endpoint_port(config["admin-listen"])} == exposed
    # The admin listener has no authentication: loopback unless published on purpose.
    assert "interface=127.0.0.1" in config["admin-listen"]
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
        except urllib.error.HTTPError as error:
            return error.read().decode()
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            with open(log_path) as f:
                raise AssertionError(f"the gateway did not serve {url}:\n{f.read()}")
        time.sleep(0.1)


def _get(url: str) -> tuple:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def listening_sockets(port: int) -> set:
    """
    The local addresses of the TCP sockets listening on ``port`` on this
    machine (``/proc/net/tcp``): ``{"127.0.0.1"}`` for loopback,
    ``{"0.0.0.0"}`` for every interface.
    """
    found = set()
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            address, state = fields[1], fields[3]
            host_hex, port_hex = address.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                found.add(".".join(str(b) for b in reversed(bytes.fromhex(host_hex))))
    return found


class ContainerRoot:
    """
    A directory standing for a container's root filesystem, and the
    free loopback ports standing for the container's ports.
    """

    def __init__(self, root, ports):
        self.root = str(root)
        self.ports = dict(ports)

    def path(self, image_path: str) -> str:
        assert os.path.isabs(image_path), image_path
        return os.path.join(self.root, image_path.lstrip("/"))

    def endpoint(self, value: str, every_interface_to_loopback: bool) -> str:
        match = re.match(r"^(tcp6?|ssl):(?:port=)?(\d+)(.*)$", value)
        if not match or int(match[2]) not in self.ports:
            return value
        rest = match[3]
        if every_interface_to_loopback and "interface=" not in rest:
            rest += ":interface=127.0.0.1"
        return f"{match[1]}:{self.ports[int(match[2])]}{rest}"

    def value(self, value, every_interface_to_loopback: bool):
        """
        A setting as it reads on this machine: absolute paths below the
        root, ports mapped.
        """
        if not isinstance(value, str):
            return value
        if value.startswith("/"):
            return self.path(value)
        return self.endpoint(value, every_interface_to_loopback)

    def environment(self, env: dict) -> dict:
        return {name: self.value(value, False) if name.startswith("ACME_GATEWAY_") else value
                for name, value in env.items()}

    def put_config(self, image_path: str, settings: dict) -> None:
        """
        Write a TOML config file at ``image_path``, its values mapped.
        """
        lines = []
        for key, value in settings.items():
            value = self.value(value, True)
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
        os.makedirs(os.path.dirname(self.path(image_path)), exist_ok=True)
        with open(self.path(image_path), "w") as f:
            f.write("\n".join(lines) + "\n")

    def put_image_files(self) -> None:
        """
        What the Dockerfile puts in the image: its directories, and the
        files it copies (config files with their values mapped).
        """
        for directory in ("/etc/acme-gateway/keys", "/var/lib/acme-gateway"):
            os.makedirs(self.path(directory), exist_ok=True)
        for destination, source in copied_files().items():
            if destination.endswith(".toml"):
                with open(source, "rb") as f:
                    self.put_config(destination, tomllib.load(f))
            else:
                os.makedirs(os.path.dirname(self.path(destination)), exist_ok=True)
                shutil.copy(source, self.path(destination))

    def files(self) -> set:
        found = set()
        for directory, _, names in os.walk(self.root):
            found |= {os.path.relpath(os.path.join(directory, n), self.root) for n in names}
        return found


def _put_key(path: str, mode: int) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(path, mode)
    return AccountKey.from_private_key(key).thumbprint


def _container_env(env: dict) -> dict:
    """
    ``env`` and nothing else of the test's ``ACME_GATEWAY_*``, with the
    install under test's console scripts first on ``PATH``.
    """
    child_env = {**_child_env(), **env}
    scripts = os.path.dirname(sys.executable)
    child_env["PATH"] = scripts + os.pathsep + child_env.get("PATH", "")
    assert os.access(os.path.join(scripts, "acme-gateway"), os.X_OK), "the console script is installed"
    return child_env


def _run_image(command: list, env: dict, container: ContainerRoot, log_path: str) -> subprocess.Popen:
    """
    The image's command (its first word a console script of the install
    under test), in the image's WORKDIR, with ``env``.
    """
    child_env = _container_env(env)
    (workdir,) = instruction(final_stage(), "WORKDIR")
    os.makedirs(container.path(workdir), exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, env=child_env, cwd=container.path(workdir),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def _json_log(log_path: str) -> list:
    with open(log_path) as f:
        return [json.loads(line) for line in f.read().splitlines() if line.strip()]


@pytest.mark.integration
def test_entry_command_runs_from_a_plain_install(tmp_path, pebble):
    """
    ``docker run`` as the README shows it: the image's entry command, its
    environment and config file, plus the CA an operator adds
    (``ACME_GATEWAY_UPSTREAM``).  The gateway serves the v1 directory, its
    health check command passes (finding the admin listener through the
    image's config file), its log is JSON lines, and it writes nothing
    outside its volume.
    """
    config = image_config()
    container = ContainerRoot(tmp_path / "root", {
        endpoint_port(config["listen"]): free_port(), endpoint_port(config["admin-listen"]): free_port()})
    container.put_image_files()
    thumbprint = _put_key(container.path(config["keys"]) + "/account.pem", 0o600)
    before = container.files()
    env = container.environment(image_env())
    # What an operator adds: the CA (here Pebble, with its CA bundle).
    env["ACME_GATEWAY_UPSTREAM"] = pebble.directory_url
    env["ACME_GATEWAY_UPSTREAM_CA_BUNDLE"] = pebble.ca_bundle
    log_path = str(tmp_path / "gateway.log")
    process = _run_image(entry_command(), env, container, log_path)
    admin_port = container.ports[endpoint_port(config["admin-listen"])]
    v1_port = container.ports[endpoint_port(config["listen"])]
    try:
        body = _wait_for(f"http://127.0.0.1:{admin_port}/healthz", process, log_path)
        assert body == "ok\n"
        check = subprocess.run(healthcheck_command(), env=_container_env(env),
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr
        ready = subprocess.run(healthcheck_command() + ["--ready"], env=_container_env(env),
                               capture_output=True, text=True, timeout=60)
        assert ready.returncode == 0, ready.stderr
        directory = _wait_for(f"http://127.0.0.1:{v1_port}/directory", process, log_path)
        assert "new-reg" in json.loads(directory)
        assert listening_sockets(admin_port) == {"127.0.0.1"}, "the image's admin listener is loopback"
    finally:
        process.terminate()
        process.wait(10)
    assert process.returncode == 0
    records = _json_log(log_path)
    assert any("v1 directory at" in r["message"] for r in records)
    assert any(r.get("thumbprint") == thumbprint for r in records if r["namespace"] == "gateway.keys.keystore")
    (volume,) = exec_form(instruction(final_stage(), "VOLUME")[0])
    written = {path for path in container.files() - before}
    assert written and all(path.startswith(volume.lstrip("/") + "/") for path in written), \
        f"the gateway wrote outside its volume: {sorted(written)}"


def test_kubernetes_pod_runs_the_configmap(tmp_path):
    """
    The gateway container as the Deployment runs it: the image's entry
    point with the Deployment's ``args``, the image's environment with the
    Deployment's on top, the ConfigMap's file, the Secret's key (mode 0440,
    as ``defaultMode`` makes it) and the state claim mounted where the
    Deployment mounts them.  Every setting of the ConfigMap takes effect —
    the v1 face listens on the pod's loopback only, the admin listener
    where the probes and Prometheus reach it, the logs are JSON — and the
    readiness probe passes while the CA does not answer (here: nothing
    listens at the ConfigMap's upstream), which ``/readyz?upstream=1``
    reports.
    """
    objects = kubernetes_objects()
    pod = objects[("Deployment", "legacy-web")]["spec"]["template"]["spec"]
    gateway = {c["name"]: c for c in pod["containers"]}["acme-gateway"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    configmap = objects[("ConfigMap", "acme-gateway-config")]
    env = {**image_env(), **{e["name"]: e["value"] for e in gateway["env"]}}
    config_file = env["ACME_GATEWAY_CONFIG"]
    settings = tomllib.loads(configmap["data"][os.path.basename(config_file)])
    ports = {endpoint_port(settings["listen"]): free_port(),
             endpoint_port(settings["admin-listen"]): free_port()}
    container = ContainerRoot(tmp_path / "root", ports)
    container.put_image_files()
    # The CA: a port of this machine nobody listens on (the cluster's CA is
    # out of reach here, and the probe must not need it anyway).
    upstream_port = free_port()
    settings["upstream"] = f"http://127.0.0.1:{upstream_port}/directory"
    for mount in gateway["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            assert volume["configMap"]["name"] == configmap["metadata"]["name"]
            assert config_file == mount["mountPath"] + "/" + os.path.basename(config_file)
            container.put_config(config_file, settings)
        elif "secret" in volume:
            thumbprint = _put_key(container.path(mount["mountPath"]) + "/certbot-account.pem",
                                  volume["secret"]["defaultMode"])
        else:
            os.makedirs(container.path(mount["mountPath"]), exist_ok=True)
    command = exec_form(instruction(final_stage(), "ENTRYPOINT")[0]) + gateway["args"]
    log_path = str(tmp_path / "gateway.log")
    process = _run_image(command, container.environment(env), container, log_path)
    admin = ports[endpoint_port(settings["admin-listen"])]
    v1_port = ports[endpoint_port(settings["listen"])]
    probe_port = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    try:
        readiness = gateway["readinessProbe"]["httpGet"]
        body = _wait_for(f"http://127.0.0.1:{ports[probe_port[readiness['port']]]}{readiness['path']}",
                         process, log_path)
        assert body.startswith("ready\n"), body
        liveness = gateway["livenessProbe"]["httpGet"]
        assert _get(f"http://127.0.0.1:{ports[probe_port[liveness['port']]]}{liveness['path']}")[0] == 200
        status, body = _get(f"http://127.0.0.1:{admin}/readyz?upstream=1")
        assert status == 503 and f"127.0.0.1:{upstream_port}" in body, body
        # The v1 face answers (a v1 problem: the CA is not there yet) ...
        status, body = _get(f"http://127.0.0.1:{v1_port}/directory")
        assert status == 500 and json.loads(body)["type"] == "urn:acme:error:serverInternal"
        # ... on the ConfigMap's `listen = "tcp:4000:interface=127.0.0.1"`: loopback only.
        assert listening_sockets(v1_port) == {"127.0.0.1"}
    finally:
        process.terminate()
        process.wait(10)
    assert process.returncode == 0
    records = _json_log(log_path)
    assert any(r.get("thumbprint") == thumbprint for r in records if r["namespace"] == "gateway.keys.keystore")
    assert any("is not reachable (yet)" in r["message"] for r in records)


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
    config = image_config()
    assert set(gateway["environment"]) <= serve_env_names()
    assert "ACME_GATEWAY_UPSTREAM" in gateway["environment"]
    # It publishes the admin port, so it moves the image's loopback admin
    # listener to the container's interfaces.
    published = {int(p.split(":")[-1]) for p in gateway["ports"]}
    admin = gateway["environment"].get("ACME_GATEWAY_ADMIN_LISTEN", config["admin-listen"])
    if endpoint_port(admin) in published:
        assert "interface=" not in admin, "a published admin port must listen beyond loopback"
    mounts = {m.split(":")[1]: m for m in gateway["volumes"]}
    assert mounts[config["keys"]].endswith(":ro")
    state_volume = os.path.dirname(config["state"])
    assert state_volume in mounts and not mounts[state_volume].endswith(":ro")
    bundle = gateway["environment"]["ACME_GATEWAY_UPSTREAM_CA_BUNDLE"]
    assert any(bundle.startswith(target + "/") for target in mounts)
    certbot = services["certbot"]["command"]
    server = certbot[certbot.index("--server") + 1]
    assert server == f"http://gateway:{endpoint_port(config['listen'])}/directory"
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
        if os.path.isdir(os.path.join(KUBERNETES, name)):
            continue  # another example (replicas/: tests/test_deploy_replicas.py)
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
