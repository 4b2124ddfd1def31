"""Static checks of the deployment files: docker-compose.yml, deploy/Dockerfile, deploy/k8s/.

Nothing is started: the files are parsed and checked against design.md (ports, topics,
health endpoints) and against each other (selectors, ports, credentials).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
K8S_DIR = ROOT / "deploy" / "k8s"

# design.md: default local ports and the event topics with their dead-letter twins.
PORTS = {"scheduler": 8001, "visits": 8002, "alerts": 8003}
SERVICES = tuple(PORTS)
EVENT_TOPICS = ("repayment-posted", "visit-completed", "alert-raised")
ALL_TOPICS = sorted(EVENT_TOPICS + tuple(f"{topic}.dlq" for topic in EVENT_TOPICS))

API_CONTAINERS = tuple(f"{name}-api" for name in SERVICES)
WORKER_CONTAINERS = tuple(f"{name}-worker" for name in SERVICES)
APP_CONTAINERS = API_CONTAINERS + WORKER_CONTAINERS
INFRA_CONTAINERS = ("postgres", "kafka", "kafka-init", "migrate")


# --- helpers ----------------------------------------------------------------------------


def _load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    services = data.get("services")
    assert isinstance(services, dict), "docker-compose.yml has no services mapping"
    return data


def _as_argv(value: Any) -> list[str]:
    """A compose command/entrypoint (string or list) as an argument list."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    assert isinstance(value, list), f"unexpected command form: {value!r}"
    return [str(arg) for arg in value]


def _env(service: dict[str, Any]) -> dict[str, str]:
    """A compose `environment` (mapping or KEY=VALUE list) as a dict of strings."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(str(item).split("=", 1) for item in raw)
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    """A compose `depends_on` as {dependency: condition}; the short list form means started."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return {str(name): "service_started" for name in raw}
    return {
        str(name): str((spec or {}).get("condition", "service_started"))
        for name, spec in raw.items()
    }


def _published_ports(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(host, container) pairs from the short ("[ip:]host:container") or long port syntax."""
    pairs: set[tuple[int, int]] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            pairs.add((int(entry["published"]), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        assert len(parts) >= 2, f"port {entry!r} is not published to the host"
        pairs.add((int(parts[-2]), int(parts[-1])))
    return pairs


def _option(argv: list[str], flag: str) -> str | None:
    """The value of `--flag value` or `--flag=value` in argv."""
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _load_k8s() -> dict[str, list[dict[str, Any]]]:
    documents: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(K8S_DIR.glob("*.y*ml")):
        docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
        for doc in docs:
            assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
        documents[path.name] = docs
    return documents


def _k8s_objects(kind: str) -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for docs in _load_k8s().values()
        for doc in docs
        if doc.get("kind") == kind
    }


def _only_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: expected one container"
    container = containers[0]
    assert isinstance(container, dict)
    return container


def _container_port(container: dict[str, Any], port: int | str) -> int:
    """Resolve a probe/target port (number or name) against the container's ports."""
    if isinstance(port, int):
        return port
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise AssertionError(f"container {container.get('name')} has no port named {port!r}")


# --- docker-compose.yml -----------------------------------------------------------------


def test_compose_declares_every_container() -> None:
    services = _load_compose()["services"]
    missing = sorted(set(APP_CONTAINERS + INFRA_CONTAINERS) - set(services))
    assert not missing, f"docker-compose.yml lacks {missing}"


@pytest.mark.parametrize("name", SERVICES)
def test_compose_api_runs_uvicorn_on_its_design_port(name: str) -> None:
    service = _load_compose()["services"][f"{name}-api"]
    port = PORTS[name]
    assert (port, port) in _published_ports(service), f"{name}-api must publish {port}:{port}"
    argv = _as_argv(service.get("entrypoint")) + _as_argv(service.get("command"))
    assert argv[:1] == ["uvicorn"], f"{name}-api does not run uvicorn: {argv}"
    # services/<name>/main.py may not exist yet: check the import path pattern only.
    assert f"services.{name}.main:app" in argv, f"{name}-api app path: {argv}"
    assert _option(argv, "--host") == "0.0.0.0"
    assert _option(argv, "--port") == str(port)


@pytest.mark.parametrize("name", SERVICES)
def test_compose_api_healthcheck_calls_healthz_on_its_port(name: str) -> None:
    service = _load_compose()["services"][f"{name}-api"]
    test = service.get("healthcheck", {}).get("test")
    assert test, f"{name}-api has no healthcheck"
    text = " ".join(_as_argv(test)) if isinstance(test, list) else str(test)
    assert "urllib" in text
    assert f":{PORTS[name]}/healthz" in text, f"{name}-api healthcheck: {text}"


@pytest.mark.parametrize("name", SERVICES)
def test_compose_worker_runs_the_service_worker_module(name: str) -> None:
    service = _load_compose()["services"][f"{name}-worker"]
    argv = _as_argv(service.get("entrypoint")) + _as_argv(service.get("command"))
    assert argv == ["python", "-m", f"services.{name}.worker"]
    assert not service.get("ports"), f"{name}-worker must not publish ports"


@pytest.mark.parametrize("container", APP_CONTAINERS)
def test_compose_app_waits_for_infrastructure(container: str) -> None:
    depends = _depends_on(_load_compose()["services"][container])
    assert depends.get("postgres") == "service_healthy", depends
    assert depends.get("kafka") == "service_healthy", depends
    assert depends.get("migrate") == "service_completed_successfully", depends
    assert depends.get("kafka-init") == "service_completed_successfully", depends


@pytest.mark.parametrize("container", APP_CONTAINERS)
def test_compose_app_environment(container: str) -> None:
    services = _load_compose()["services"]
    env = _env(services[container])
    postgres = _env(services["postgres"])
    url = urlsplit(env.get("DATABASE_URL", ""))
    assert url.scheme == "postgresql+asyncpg", f"{container}: DATABASE_URL must use asyncpg"
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"]
    assert url.path == "/" + postgres["POSTGRES_DB"]
    assert env.get("KAFKA_BOOTSTRAP_SERVERS") == "kafka:9092"
    assert env.get("SCHEDULER_URL") == f"http://scheduler-api:{PORTS['scheduler']}"
    assert env.get("ENV") == "local"
    assert env.get("JWT_SECRET", "").startswith("${JWT_SECRET"), "JWT_SECRET not overridable"


def test_compose_postgres_and_kafka_are_healthchecked() -> None:
    services = _load_compose()["services"]
    postgres = services["postgres"]
    # 18 at least: the re-plan's task ids come from uuidv7().
    assert str(postgres["image"]).startswith("postgres:18")
    # The 18 image keeps its cluster under /var/lib/postgresql/18/docker: a volume at the old
    # /var/lib/postgresql/data would not hold it.
    assert "pgdata:/var/lib/postgresql" in postgres["volumes"]
    assert "pg_isready" in " ".join(_as_argv(postgres["healthcheck"]["test"]))
    assert _env(postgres)["POSTGRES_DB"] == "huifang"

    kafka = services["kafka"]
    env = _env(kafka)
    assert kafka["image"] == "apache/kafka:3.9.0"
    assert kafka.get("healthcheck", {}).get("test"), "kafka has no healthcheck"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


def test_compose_kafka_init_creates_exactly_the_six_topics() -> None:
    services = _load_compose()["services"]
    init = services["kafka-init"]
    assert init["image"] == services["kafka"]["image"]
    assert _depends_on(init).get("kafka") == "service_healthy"
    argv = _as_argv(init.get("entrypoint")) + _as_argv(init.get("command"))
    script = "\n".join(argv)
    created: list[str] = []
    for line in script.splitlines():
        args = shlex.split(line)
        if not args or not args[0].endswith("kafka-topics.sh") or "--create" not in args:
            continue
        assert "--if-not-exists" in args, line
        assert _option(args, "--partitions") == "3", line
        assert _option(args, "--bootstrap-server") == "kafka:9092", line
        topic = _option(args, "--topic")
        assert topic, line
        created.append(topic)
    assert sorted(created) == ALL_TOPICS


def test_compose_migrate_runs_every_service_in_order() -> None:
    migrate = _load_compose()["services"]["migrate"]
    argv = _as_argv(migrate.get("entrypoint")) + _as_argv(migrate.get("command"))
    runs = re.findall(r"shared\.migrate((?:\s+[a-z_]+)+)", " ".join(argv))
    assert [name for run in runs for name in run.split()] == list(SERVICES)
    assert _depends_on(migrate).get("postgres") == "service_healthy"
    assert _env(migrate).get("DATABASE_URL", "").startswith("postgresql+asyncpg://")


@pytest.mark.parametrize("container", (*APP_CONTAINERS, "migrate"))
def test_compose_builds_from_deploy_dockerfile(container: str) -> None:
    build = _load_compose()["services"][container].get("build")
    assert isinstance(build, dict), f"{container} must build with context + dockerfile"
    context = (ROOT / str(build.get("context", "."))).resolve()
    assert context == ROOT, f"{container}: build context must be the repository root"
    dockerfile = (context / str(build.get("dockerfile", "Dockerfile"))).resolve()
    assert dockerfile == DOCKERFILE.resolve(), f"{container} builds {dockerfile}"
    assert dockerfile.is_file()


def test_dockerfile_installs_the_locked_environment() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions = [line.strip() for line in text.splitlines() if not line.startswith("#")]
    froms = [line for line in instructions if line.upper().startswith("FROM ")]
    assert froms == ["FROM python:3.11-slim"]
    assert "uv==0.13.9" in text
    assert re.search(r"uv sync --frozen --no-dev\b", text)
    assert "/app/.venv/bin" in text
    copied = {
        source
        for line in instructions
        if line.upper().startswith("COPY ")
        for source in line.split()[1:-1]
    }
    assert {"pyproject.toml", "uv.lock", "shared/", "services/"} <= copied
    for source in copied:
        assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


# --- deploy/k8s -------------------------------------------------------------------------


def test_k8s_files_parse_and_are_well_formed() -> None:
    documents = _load_k8s()
    assert {"common.yaml", *(f"{name}.yaml" for name in SERVICES)} <= set(documents)
    for filename, docs in documents.items():
        assert docs, f"{filename} is empty"
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), f"{filename}: {doc}"
            metadata = doc.get("metadata") or {}
            assert metadata.get("name"), f"{filename}: object without a name"
            if doc["kind"] != "Namespace":
                assert metadata.get("namespace") == "huifang", f"{filename}: {metadata}"


def test_k8s_common_config_and_secret() -> None:
    config = _k8s_objects("ConfigMap")["huifang-config"]["data"]
    assert config["ENV"] == "production"
    assert config["KAFKA_BOOTSTRAP_SERVERS"]
    scheduler_url = urlsplit(config["SCHEDULER_URL"])
    assert scheduler_url.hostname and scheduler_url.hostname.split(".")[0] == "scheduler-api"
    assert scheduler_url.port == PORTS["scheduler"]
    secret = _k8s_objects("Secret")["huifang-secrets"]
    assert set(secret["stringData"]) == {"DATABASE_URL", "JWT_SECRET", "PII_KEY"}
    assert secret["stringData"]["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert _k8s_objects("Namespace").keys() == {"huifang"}


def test_k8s_every_deployment_is_an_api_with_probes_or_a_worker() -> None:
    deployments = _k8s_objects("Deployment")
    assert set(deployments) == set(API_CONTAINERS + WORKER_CONTAINERS)
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        labels = spec["template"]["metadata"]["labels"]
        selector = spec["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), f"{name}: selector does not match pods"
        container = _only_container(deployment)
        env_from = container.get("envFrom") or []
        assert {"name": "huifang-config"} in [ref.get("configMapRef") for ref in env_from]
        assert {"name": "huifang-secrets"} in [ref.get("secretRef") for ref in env_from]
        if name.endswith("-api"):
            readiness = container["readinessProbe"]["httpGet"]
            liveness = container["livenessProbe"]["httpGet"]
            assert readiness["path"] == "/readyz", f"{name}: readiness {readiness}"
            assert liveness["path"] == "/healthz", f"{name}: liveness {liveness}"


@pytest.mark.parametrize("name", SERVICES)
def test_k8s_api_deployment_and_service(name: str) -> None:
    deployment = _k8s_objects("Deployment")[f"{name}-api"]
    assert deployment["spec"]["replicas"] == 2
    container = _only_container(deployment)
    argv = _as_argv(container.get("command")) + _as_argv(container.get("args"))
    assert f"services.{name}.main:app" in argv
    port = PORTS[name]
    assert _option(argv, "--port") == str(port)
    for probe in ("readinessProbe", "livenessProbe"):
        assert _container_port(container, container[probe]["httpGet"]["port"]) == port

    service = _k8s_objects("Service")[f"{name}-api"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == port
    assert _container_port(container, service_port.get("targetPort", port)) == port


@pytest.mark.parametrize("name", SERVICES)
def test_k8s_worker_and_migration_job(name: str) -> None:
    worker = _k8s_objects("Deployment")[f"{name}-worker"]
    assert 1 <= worker["spec"]["replicas"] <= 3
    argv = _as_argv(_only_container(worker).get("command"))
    assert argv == ["python", "-m", f"services.{name}.worker"]

    job = _k8s_objects("Job")[f"{name}-migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}
    argv = _as_argv(_only_container(job).get("command"))
    assert argv == ["python", "-m", "shared.migrate", name]
