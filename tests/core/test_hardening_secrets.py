"""No secret in any output, whatever the shape of the URI: settings text and JSON, error lines, logs, Airflow's task logs.

Each MongoDB URI below carries the fragments ``Kq7Wv`` and ``Zr9Pm`` in its password (or its user name, where
that is the credential) in a shape that does not parse cleanly: a space, an unescaped ``@ / : # ?``, percent
escapes, several hosts, ``mongodb+srv://``, a user name alone. Neither fragment may appear in any output.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from monitor.core.secrets import MASK, SPARK_HARMLESS_KEYS, mask_userinfo, redact, spark_conf_shown
from monitor.core.settings import load_settings
from monitor.orchestration.cli import app

FRAGMENTS = ("Kq7Wv", "Zr9Pm")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PORT = _closed_port()

#: (id, URI): the password (or the user name standing for one) holds both fragments.
MONGO_SHAPES = [
    ("space", f"mongodb://ops:Kq7Wv Zr9Pm@127.0.0.1:{PORT}/"),
    ("spaces-and-tab", f"mongodb://ops: Kq7Wv\tx Zr9Pm @127.0.0.1:{PORT}/"),
    ("unescaped-at", f"mongodb://ops:Kq7Wv@Zr9Pm@127.0.0.1:{PORT}/"),
    ("at-space-at", f"mongodb://ops:Kq7Wv@ @Zr9Pm@127.0.0.1:{PORT}/"),  # found by tests/orchestration/test_fuzz_cli.py
    ("unescaped-slash", f"mongodb://ops:Kq7Wv/Zr9Pm@127.0.0.1:{PORT}/"),
    ("unescaped-colon", f"mongodb://ops:Kq7Wv:Zr9Pm@127.0.0.1:{PORT}/"),
    ("unescaped-hash", f"mongodb://ops:Kq7Wv#Zr9Pm@127.0.0.1:{PORT}/"),
    ("unescaped-question", f"mongodb://ops:Kq7Wv?Zr9Pm@127.0.0.1:{PORT}/"),
    ("percent-encoded", f"mongodb://ops:Kq7Wv%40Zr9Pm%2F%20@127.0.0.1:{PORT}/"),
    ("quote-and-backslash", f'mongodb://ops:Kq7Wv"\\Zr9Pm@127.0.0.1:{PORT}/'),
    ("markup-and-unicode", f"mongodb://ops:[red]Kq7Wvé[/]Zr9Pm@127.0.0.1:{PORT}/"),
    ("several-hosts", f"mongodb://ops:Kq7Wv-Zr9Pm@127.0.0.1:{PORT},127.0.0.1:{_closed_port()}/?replicaSet=rs0"),
    ("srv", "mongodb+srv://ops:Kq7Wv Zr9Pm@cluster0.example.invalid/"),
    ("user-only", f"mongodb://Kq7Wv-Zr9Pm@127.0.0.1:{PORT}/"),
    ("empty-user", f"mongodb://:Kq7Wv.Zr9Pm@127.0.0.1:{PORT}/"),
]
IDS = [shape for shape, _ in MONGO_SHAPES]
URIS = [uri for _, uri in MONGO_SHAPES]


def _assert_hidden(text: str) -> None:
    """Neither fragment in ``text``, nor in it with whitespace and table borders removed (a wrapped cell hides nothing)."""
    compact = re.sub(r"[\s│┃|─━┆]+", "", text)
    leaked = [fragment for fragment in FRAGMENTS if fragment in text or fragment in compact]
    assert leaked == [], f"{leaked} shown in {text[:2000]!r}"


def _invoke(args: list[str], **env: str) -> object:
    base = {"MONITOR_CONFIG": None, "MONITOR_MONGO_TIMEOUT_MS": "300", "COLUMNS": "100"}
    return CliRunner(env=base | env).invoke(app, args)


@pytest.mark.parametrize("uri", URIS, ids=IDS)
def test_the_shape_rule_alone_masks_the_whole_user_info_of_every_uri_shape(uri: str) -> None:
    """Without any registered secret (a URI from elsewhere than the settings): the shape is enough."""
    for text in (
        uri,
        f"MongoDB at {uri} is unreachable: 127.0.0.1: refused; model m@abc",
        f"['{uri}', 'json://a:b@c/x']",
    ):
        shown = mask_userinfo(text)
        _assert_hidden(shown)
        assert f"://{MASK}@" in shown


@given(
    user=st.text(alphabet="abcXYZ09._-", max_size=6),
    middle=st.text(
        alphabet=st.characters(blacklist_characters="\n\r\x00", blacklist_categories=("Cs",)), max_size=12
    ).filter(lambda t: "://" not in t),
    host=st.sampled_from(["127.0.0.1:27017", "db.example", "h1:1,h2:2", "[::1]:27017", "cluster0.example.invalid"]),
    tail=st.sampled_from(["/", "/db?replicaSet=rs0", "", " is unreachable", "/ failed for model m@abc"]),
)
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), derandomize=True, database=None, deadline=None)
def test_any_password_between_user_and_host_is_masked_by_shape(user: str, middle: str, host: str, tail: str) -> None:
    uri = f"mongodb://{user}:Kq7Wv{middle}Zr9Pm@{host}{tail}"
    _assert_hidden(mask_userinfo(f"error: {uri}"))


@pytest.mark.parametrize("uri", URIS, ids=IDS)
def test_monitor_settings_text_and_json_never_show_a_uri_credential(uri: str, tmp_path: Path) -> None:
    env = {"MONITOR_DATA_DIR": str(tmp_path), "MONITOR_MONGO_URI": uri}
    text = _invoke(["settings"], **env)
    shown = _invoke(["settings", "--json"], **env)
    if shown.exit_code != 0:  # refused at load (pymongo cannot parse it): the refusal is one masked line
        assert shown.exit_code == text.exit_code == 2
        assert len(shown.stderr.strip().splitlines()) == 1 and "MONITOR_MONGO_URI" in shown.stderr
        _assert_hidden(shown.stderr + text.stderr)
        return
    assert text.exit_code == 0, text.stderr
    _assert_hidden(text.stdout + text.stderr)
    _assert_hidden(shown.stdout + shown.stderr)
    value = json.loads(shown.stdout)["mongo_uri"]
    assert value.startswith(uri.split("://")[0] + f"://{MASK}@")  # the whole user-info masked, the host kept
    assert "127.0.0.1" in value or "example.invalid" in value


@pytest.mark.parametrize("uri", URIS, ids=IDS)
def test_the_error_line_of_an_unreachable_or_refused_mongodb_uri_never_shows_a_credential(
    uri: str, tmp_path: Path
) -> None:
    result = _invoke(["health"], MONITOR_DATA_DIR=str(tmp_path), MONITOR_MONGO_URI=uri)
    assert result.exit_code in (2, 4), result.stderr  # refused at load, or unreachable
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr
    _assert_hidden(result.stdout + result.stderr)
    if result.exit_code == 4:
        assert re.search(rf"MongoDB at mongodb(\+srv)?://{re.escape(MASK)}@", lines[0])
    assert list(tmp_path.iterdir()) == []  # a reader: nothing written


@pytest.mark.parametrize("uri", URIS, ids=IDS)
def test_log_lines_mentioning_the_uri_or_its_password_are_masked_for_every_handler(
    uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        load_settings(mongo_uri=uri)
    except Exception:  # noqa: BLE001 (refused or not, loading registers the secrets first)
        pass
    password = uri.split("://", 1)[1].rsplit("@", 1)[0].split(":", 1)[-1]
    with caplog.at_level(logging.INFO):
        logging.getLogger("pymongo.topology").warning("connecting to %s", uri)
        logging.getLogger("some.library").info("retrying with password=%s", password)
        try:
            raise RuntimeError(f"auth failed for {uri}")
        except RuntimeError:
            logging.getLogger("some.library").exception("lost the connection")
    assert "connecting to" in caplog.text and "lost the connection" in caplog.text
    _assert_hidden(caplog.text)


@pytest.mark.parametrize(
    "url",
    [
        "json://ops:Kq7WvZr9Pm@127.0.0.1:1/hook",
        "slack://Kq7WvAAA/Zr9PmBBB/TokC3/#chan",
        "tgram://123456:Kq7WvZr9Pm/777",
        "mailto://ops:Kq7Wv%20Zr9Pm@example.com?to=x@example.com",
        "jsons://127.0.0.1:1/path/Kq7Wv?+X-Api-Key=Zr9Pm",
    ],
)
def test_alert_urls_of_every_scheme_stay_masked_in_settings_and_logs(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"MONITOR_DATA_DIR": str(tmp_path), "MONITOR_ALERT_URLS": json.dumps([url])}
    for args in (["settings"], ["settings", "--json"]):
        result = _invoke(args, **env)
        assert result.exit_code == 0, result.stderr
        _assert_hidden(result.stdout)
    with caplog.at_level(logging.INFO):
        logging.getLogger("apprise").info("posting to %s", url)
    _assert_hidden(caplog.text)


SPARK_CONF = {
    "spark.executor.memory": "2g",
    "spark.sql.shuffle.partitions": "8",
    "spark.hadoop.fs.azure.account.key.acct.blob.core.windows.net": "Kq7WvAccountKey==",
    "spark.executorEnv.DB_PASSWORD": "Zr9PmPassword",
    "spark.executorEnv.API_KEY": "Kq7WvApi",
    "spark.hadoop.fs.s3a.secret.key": "Zr9PmS3",
    "spark.hadoop.google.cloud.auth.service.account.json.keyfile": "/secrets/Kq7Wv.json",
    "spark.eventLog.dir": "s3a://AKIAKq7Wv:Zr9Pm@logs-bucket/spark",
    "spark.some.plugin.setting": "Zr9PmUnknown",
}


@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
def test_spark_settings_show_only_allow_listed_values(json_out: bool, tmp_path: Path) -> None:
    result = _invoke(
        ["settings", *(["--json"] if json_out else [])],
        MONITOR_DATA_DIR=str(tmp_path),
        MONITOR_SPARK_CONF=json.dumps(SPARK_CONF),
    )
    assert result.exit_code == 0, result.stderr
    _assert_hidden(result.stdout)
    if json_out:
        shown = json.loads(result.stdout)["spark_conf"]
        assert shown == {key: (value if key in SPARK_HARMLESS_KEYS else MASK) for key, value in SPARK_CONF.items()}


def test_spark_secret_values_are_registered_so_a_log_or_error_mentioning_them_is_masked() -> None:
    load_settings(spark_conf=SPARK_CONF)
    line = (
        "executor env: DB_PASSWORD=Zr9PmPassword key Kq7WvAccountKey== log dir s3a://AKIAKq7Wv:Zr9Pm@logs-bucket/spark"
    )
    _assert_hidden(redact(line))
    assert spark_conf_shown({"spark.executor.memory": "4g", "spark.executor.memoryPassword": "x"}) == {
        "spark.executor.memory": "4g",
        "spark.executor.memoryPassword": MASK,
    }


def test_a_toml_config_with_a_spaced_password_is_masked_in_settings_and_its_error_lines(tmp_path: Path) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text(f'mongo_uri = "mongodb://ops:Kq7Wv Zr9Pm@127.0.0.1:{PORT}/"\nmongo_timeout_ms = 300\n')
    env = {"MONITOR_DATA_DIR": str(tmp_path / "data"), "MONITOR_CONFIG": str(config)}
    shown = CliRunner(env=env).invoke(app, ["settings", "--json"])
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["mongo_uri"] == f"mongodb://{MASK}@127.0.0.1:{PORT}/"
    failed = CliRunner(env=env).invoke(app, ["--config", str(config), "alerts"])
    assert failed.exit_code == 4 and len(failed.stderr.strip().splitlines()) == 1
    _assert_hidden(shown.stdout + failed.stdout + failed.stderr)


@pytest.mark.airflow
def test_the_dag_task_entry_hands_every_shape_to_airflows_masker(
    airflow_env: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location(
        "class_health_daily_masking", Path(__file__).resolve().parents[2] / "dags" / "class_health_daily.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from airflow.sdk._shared.secrets_masker import redact as airflow_redact

    for uri in URIS:
        monkeypatch.setenv("MONITOR_MONGO_URI", uri)
        try:
            module.task_settings()
        except Exception:  # noqa: BLE001 (a refused URI is registered all the same: loading registers first)
            pass
        info = uri.split("://", 1)[1].rsplit("@", 1)[0]
        password = info.split(":", 1)[-1]
        logged = airflow_redact(f"task failed: {uri} (user-info {info}, password {password})")
        assert all(fragment not in logged for fragment in FRAGMENTS), logged
