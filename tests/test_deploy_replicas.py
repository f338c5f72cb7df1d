"""
deploy/'s replica examples (deploy/compose-replicas.yaml and
deploy/kubernetes/replicas/), checked as far as a machine without a
container engine can, in the manner of ``tests/test_deploy.py``:

- the Kubernetes replicas run as their Deployment runs them — the image's
  entry command, the image's environment with the Deployment's on top (the
  state password from its Secret), the ConfigMap's file — three of them on
  one real PostgreSQL (the suite's own cluster standing for the
  StatefulSet's Service), behind a real nginx running the compose example's
  balancer configuration; every replica becomes ready, the balancer spreads
  requests over all three, and no replica writes anything (no state volume:
  the root filesystem is read-only);
- the manifests and the compose file refer to one another consistently (the
  URI's host, port, user and database are the PostgreSQL service's; one
  password source; ports, selectors, Secrets);
- the compose setup step makes the state password once and keeps it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import urllib.parse

import pytest

import tests.test_deploy as deploy
from tests.support.nginx import BALANCER_CONF, NginxBalancer, nginx_binary
from tests.support.postgres import GATEWAY_ROLE
from tests.support.stack import REPO_ROOT, free_port

REPLICAS = os.path.join(deploy.KUBERNETES, "replicas")
COMPOSE_REPLICAS = os.path.join(deploy.DEPLOY, "compose-replicas.yaml")


def replica_objects() -> dict:
    objects = {}
    for name in sorted(os.listdir(REPLICAS)):
        for document in deploy.yaml_documents(os.path.join(REPLICAS, name)):
            assert {"apiVersion", "kind", "metadata"} <= set(document), name
            objects[(document["kind"], document["metadata"]["name"])] = document
    return objects


def _gateway_container(objects: dict) -> dict:
    pod = objects[("Deployment", "acme-gateway")]["spec"]["template"]["spec"]
    (gateway,) = pod["containers"]
    return gateway


def _replica_settings(objects: dict) -> dict:
    gateway = _gateway_container(objects)
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    configmap = objects[("ConfigMap", "acme-gateway-replicas-config")]
    return tomllib.loads(configmap["data"][os.path.basename(env["ACME_GATEWAY_CONFIG"])])


def _secret_env(container: dict, secrets: dict) -> dict:
    """
    The container's environment, ``valueFrom.secretKeyRef`` resolved from
    ``secrets`` (``{(secret name, key): value}``).
    """
    env = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[(ref["name"], ref["key"])]
    return env


def test_kubernetes_replicas_refer_to_each_other():
    """
    The Deployment's state URI names the PostgreSQL Service, its port, the
    role and database the StatefulSet makes, and no password; both read the
    password from the same Secret key; the gateway Service and the
    disruption budget select the Deployment's pods and its v1 port; no
    state volume (the replicas hold nothing of their own).
    """
    objects = replica_objects()
    settings = _replica_settings(objects)
    deployment = objects[("Deployment", "acme-gateway")]
    assert deployment["spec"]["replicas"] >= 3
    gateway = _gateway_container(objects)
    uri = urllib.parse.urlsplit(settings["state"])
    assert uri.scheme == "postgresql" and uri.password is None
    database_service = objects[("Service", uri.hostname)]
    statefulset = objects[("StatefulSet", uri.hostname)]
    (database,) = statefulset["spec"]["template"]["spec"]["containers"]
    database_env = {e["name"]: e for e in database["env"]}
    assert uri.username == database_env["POSTGRES_USER"]["value"]
    assert uri.path.lstrip("/") == database_env["POSTGRES_DB"]["value"]
    (port,) = database_service["spec"]["ports"]
    assert port["port"] == (uri.port or 5432)
    assert port["targetPort"] in {p["name"] for p in database["ports"]}
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert database_service["spec"]["selector"].items() <= labels.items()
    gateway_env = {e["name"]: e for e in gateway["env"]}
    assert (gateway_env["ACME_GATEWAY_STATE_PASSWORD"]["valueFrom"]
            == database_env["POSTGRES_PASSWORD"]["valueFrom"])

    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = objects[("Service", "acme-gateway")]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert "sessionAffinity" not in service["spec"], "any replica answers any request"
    (v1_port,) = service["spec"]["ports"]
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports[v1_port["targetPort"]] == deploy.endpoint_port(settings["listen"])
    assert "interface=" not in settings["listen"], "the Service reaches the pod's address"
    budget = objects[("PodDisruptionBudget", "acme-gateway")]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]

    mounts = {m["mountPath"] for m in gateway["volumeMounts"]}
    assert not any(settings.get("state", "").startswith(m) for m in mounts)
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    unknown = {deploy.env_name(key) for key in settings} - deploy.serve_env_names()
    assert not unknown, f"the ConfigMap sets keys no flag reads: {unknown}"
    assert set(gateway_env) <= deploy.serve_env_names() | {"ACME_GATEWAY_CONFIG",
                                                            "ACME_GATEWAY_STATE_PASSWORD"}


def test_compose_replicas_example():
    """
    The compose example: replicas of the gateway with no state volume, a
    PostgreSQL URI naming the ``postgresql`` service with its user and
    database, the password from the one file the setup step writes and
    PostgreSQL reads, certbot pointed at the balancer, and the balancer's
    configuration forwarding to the gateway service's v1 port on the port
    certbot uses.
    """
    (compose,) = deploy.yaml_documents(COMPOSE_REPLICAS)
    services = compose["services"]
    assert {"setup", "postgresql", "pebble", "gateway", "balancer", "certbot"} <= set(services)
    gateway, database = services["gateway"], services["postgresql"]
    assert gateway["deploy"]["replicas"] >= 3
    assert gateway["read_only"] is True
    environment = gateway["environment"]
    assert set(environment) <= deploy.serve_env_names()
    uri = urllib.parse.urlsplit(environment["ACME_GATEWAY_STATE"])
    assert uri.scheme == "postgresql" and uri.password is None
    assert uri.hostname == "postgresql" and uri.port == 5432
    assert uri.username == database["environment"]["POSTGRES_USER"]
    assert uri.path.lstrip("/") == database["environment"]["POSTGRES_DB"]
    password_file = environment["ACME_GATEWAY_STATE_PASSWORD_FILE"]
    assert password_file == database["environment"]["POSTGRES_PASSWORD_FILE"]
    assert password_file == services["setup"]["environment"]["STATE_PASSWORD_FILE"]
    for service in (gateway, database):
        assert any(password_file.startswith(m.split(":")[1] + "/") for m in service["volumes"])
    config = deploy.image_config()
    assert not any(m.split(":")[1] == os.path.dirname(config["state"]) for m in gateway["volumes"]), \
        "the replicas keep no state of their own"
    assert gateway["depends_on"]["postgresql"]["condition"] == "service_healthy"

    certbot = services["certbot"]["command"]
    server = urllib.parse.urlsplit(certbot[certbot.index("--server") + 1])
    assert server.hostname == "balancer"
    assert services["setup"]["environment"]["GATEWAY_DIRECTORY"] == server.geturl()
    balancer = services["balancer"]
    (mount,) = balancer["volumes"]
    source = os.path.normpath(os.path.join(deploy.DEPLOY, mount.split(":")[0]))
    assert os.path.samefile(source, BALANCER_CONF)
    with open(BALANCER_CONF) as f:
        text = f.read()
    assert re.search(rf"^\s*listen {server.port};", text, re.M)
    assert re.search(rf"^\s*server gateway:{deploy.endpoint_port(config['listen'])};", text, re.M)
    declared = set(compose["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert os.path.exists(os.path.join(deploy.DEPLOY, source)), (name, source)
            else:
                assert source in declared, (name, source)


def test_compose_setup_makes_the_state_password_once(tmp_path):
    """
    The setup step writes a password file readable by PostgreSQL's and the
    gateway's users, and keeps it on a second run (PostgreSQL set it at its
    first start: a new one would lock the replicas out).
    """
    (compose,) = deploy.yaml_documents(COMPOSE_REPLICAS)
    setup = compose["services"]["setup"]
    script = os.path.join(deploy.DEPLOY, setup["volumes"][0].split(":")[0])
    password_file = tmp_path / "setup" / os.path.basename(setup["environment"]["STATE_PASSWORD_FILE"])
    env = {**deploy._child_env(), **setup["environment"],
           "SETUP_DIR": str(tmp_path / "setup"), "CERTBOT_CONFIG_DIR": str(tmp_path / "letsencrypt"),
           "GATEWAY_KEYS_DIR": str(tmp_path / "keys"), "STATE_PASSWORD_FILE": str(password_file),
           "PYTHONPATH": REPO_ROOT}
    os.makedirs(env["SETUP_DIR"])
    passwords = []
    for _ in range(2):
        subprocess.run([sys.executable, script], env=env, check=True, capture_output=True, timeout=120)
        passwords.append(password_file.read_text())
        assert os.stat(password_file).st_mode & 0o777 == 0o444
    assert passwords[0] == passwords[1] and len(passwords[0].strip()) >= 24


def _v1_requests(metrics: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("acme_gateway_v1_requests_total{"))


@pytest.mark.integration
def test_kubernetes_replicas_run_on_postgresql_behind_the_balancer(tmp_path, pebble, postgres_cluster):
    """
    Three replicas exactly as the Deployment runs them, on one PostgreSQL
    database (the StatefulSet's role and database name; the suite's cluster
    standing for its Service), the password only from the Secret through
    ``ACME_GATEWAY_STATE_PASSWORD``: each becomes ready, serves the v1
    directory through the compose example's nginx balancer, which spreads
    the requests over all three, holds its own connection to the one
    database, and writes nothing on its (read-only) root filesystem.
    """
    if nginx_binary() is None:
        pytest.fail("Debian's nginx is not installed: run ./scripts/setup")
    objects = replica_objects()
    deployment = objects[("Deployment", "acme-gateway")]
    gateway = _gateway_container(objects)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    settings = _replica_settings(objects)
    uri = urllib.parse.urlsplit(settings["state"])
    assert uri.username == GATEWAY_ROLE
    database = postgres_cluster.create_database()
    # The Service's host and port become the suite's cluster; the role, the
    # (missing) password and the rest of the URI stay the ConfigMap's.
    settings["state"] = uri._replace(netloc=f"{uri.username}@127.0.0.1:{postgres_cluster.port}",
                                     path=f"/{database}").geturl()
    settings["upstream"] = pebble.directory_url
    env = {**deploy.image_env(), **_secret_env(gateway, {
        ("acme-gateway-state", "password"): postgres_cluster.password})}
    config_file = env["ACME_GATEWAY_CONFIG"]
    command = deploy.exec_form(deploy.instruction(deploy.final_stage(), "ENTRYPOINT")[0]) + gateway["args"]

    replicas = []
    count = deployment["spec"]["replicas"]
    try:
        for index in range(count):
            ports = {deploy.endpoint_port(settings["listen"]): free_port(),
                     deploy.endpoint_port(settings["admin-listen"]): free_port()}
            container = deploy.ContainerRoot(tmp_path / f"pod-{index}", ports)
            container.put_image_files()
            for mount in gateway["volumeMounts"]:
                volume = volumes[mount["name"]]
                if "configMap" in volume:
                    container.put_config(config_file, settings)
                elif "secret" in volume:
                    deploy._put_key(container.path(mount["mountPath"]) + "/account.pem",
                                    volume["secret"]["defaultMode"])
                else:
                    raise AssertionError(f"an unexpected volume: {volume}")
            before = container.files()
            replica_env = container.environment(env)
            replica_env["ACME_GATEWAY_UPSTREAM_CA_BUNDLE"] = pebble.ca_bundle
            log_path = str(tmp_path / f"replica-{index}.log")
            process = deploy._run_image(command, replica_env, container, log_path)
            replicas.append((process, container, ports, log_path, before))
        probe = gateway["readinessProbe"]["httpGet"]
        admin_ports = []
        for process, container, ports, log_path, _ in replicas:
            admin = ports[deploy.endpoint_port(settings["admin-listen"])]
            admin_ports.append(admin)
            body = deploy._wait_for(f"http://127.0.0.1:{admin}{probe['path']}", process, log_path, 60)
            assert body.startswith("ready\n"), body
        assert postgres_cluster.backends(database) >= count

        balancer = NginxBalancer(str(tmp_path / "balancer"), free_port(), [
            f"127.0.0.1:{ports[deploy.endpoint_port(settings['listen'])]}"
            for _, _, ports, _, _ in replicas]).start()
        try:
            base = balancer.url
            before_counts = [_v1_requests(deploy._get(f"http://127.0.0.1:{a}/metrics")[1])
                             for a in admin_ports]
            for _ in range(3 * count):
                status, body = deploy._get(base + "/directory")
                assert status == 200, body
                # links name the host the client asked (nginx passes Host on)
                assert json.loads(body)["new-reg"].startswith(base + "/"), body
            after_counts = [_v1_requests(deploy._get(f"http://127.0.0.1:{a}/metrics")[1])
                            for a in admin_ports]
        finally:
            balancer.stop()
        served = [after - before for before, after in zip(before_counts, after_counts)]
        assert sum(served) == 3 * count and all(n > 0 for n in served), served
    finally:
        for process, *_ in replicas:
            process.terminate()
        for process, *_ in replicas:
            process.wait(15)
    for process, container, _, log_path, before in replicas:
        assert process.returncode == 0, open(log_path).read()
        written = container.files() - before
        assert not written, f"a replica wrote on its read-only root: {sorted(written)}"
        text = open(log_path).read()
        assert postgres_cluster.password not in text, "the state password reached the log"
