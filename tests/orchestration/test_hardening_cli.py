"""No traceback from any input: user and stored text printed literally, every setting in range at load, clear start-up errors."""

from __future__ import annotations

import datetime as dt
import json
import math
import socket
import typing
from pathlib import Path

import annotated_types
import pytest
from typer.testing import CliRunner

from monitor.core.dates import MIN_RUN_DATE, days_before, end_of_day, parse_run_date
from monitor.core.errors import ConfigError, DataError, SourceError
from monitor.core.settings import MAX_SEED, Settings, check_target_overrides, load_settings, unknown_target_overrides
from monitor.orchestration.cli import app

DAY = "2026-11-20"


def _invoke(args: list[str], **env: str | None) -> object:
    return CliRunner(env={"MONITOR_CONFIG": None, "COLUMNS": "200"} | env).invoke(app, args)


def _one_error_line(result: object, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# --- user text is never rich markup ---------------------------------------------------------------


@pytest.mark.parametrize(
    "date", ["[/]", "[red]2026-11-20", "[bold]x[/bold]", "[link=file:///etc/passwd]d[/link]", ":warning: 2026", "\\[/]"]
)
def test_a_date_with_markup_is_refused_and_shown_literally(date: str, tmp_path: Path) -> None:
    line = _one_error_line(_invoke(["health", "--date", date], MONITOR_DATA_DIR=str(tmp_path)), 2)
    assert line == f"error: date {date!r} is not a valid YYYY-MM-DD date"


@pytest.mark.parametrize(
    "args",
    [
        ["compare", "--candidate", "c", "--since", "[/]"],
        ["evaluate", "--date", DAY, "--engine", "[red]x"],
        ["candidate", "add", "[bold]no-such-dir[/]"],
        ["sample", "--date", "[/]"],
    ],
    ids=["compare", "engine", "candidate-add", "sample"],
)
def test_every_command_prints_markup_in_its_arguments_literally(args: list[str], tmp_path: Path) -> None:
    result = _invoke(args, MONITOR_DATA_DIR=str(tmp_path))
    assert result.exit_code in (2, 5, 6), (result.exit_code, result.stderr)
    line = _one_error_line(result, result.exit_code)
    markup = next(arg for arg in args if "[" in arg)
    assert markup in line or repr(markup) in line


def _seed_store(data_dir: Path) -> None:
    from monitor.store import open_store

    settings = load_settings(data_dir=data_dir)
    rows = [
        {
            "label": "[red]cat",
            "verdict": "[/]",
            "pooled_correct": 1,
            "pooled_n": 2,
            "pooled_accuracy": 0.5,
            "target": 0.9,
        },
        {"label": "dog]", "verdict": "needs_retraining", "ci_low": 0.1, "ci_high": 0.9},
        {"label": ":smile: [link=x]y", "verdict": ["not", "a", "verdict"]},
    ]
    with open_store(settings) as store:
        store.replace_day("class_health", "model[bold]@abc", DAY, rows)
        store.add_alert(
            {
                "model_id": "model[bold]@abc",
                "label": "[red]cat",
                "date": DAY,
                "kind": "needs_retraining",
                "message": "[/] boom [red]x",
                "delivered": False,
            }
        )


def test_stored_labels_verdicts_and_messages_are_printed_as_they_are(tmp_path: Path) -> None:
    _seed_store(tmp_path)
    health = _invoke(["health", "--date", DAY], MONITOR_DATA_DIR=str(tmp_path))
    assert health.exit_code == 0, health.stderr
    for text in ("[red]cat", "[/]", "dog]", ":smile: [link=x]y", "model[bold]@abc", "needs_retraining"):
        assert text in health.stdout
    alerts = _invoke(["alerts"], MONITOR_DATA_DIR=str(tmp_path))
    assert alerts.exit_code == 0, alerts.stderr
    assert "[/] boom [red]x" in alerts.stdout and "[red]cat" in alerts.stdout
    as_json = _invoke(["health", "--date", DAY, "--json"], MONITOR_DATA_DIR=str(tmp_path))
    assert {row["label"] for row in json.loads(as_json.stdout)["classes"]} == {"[red]cat", "dog]", ":smile: [link=x]y"}


def test_a_path_that_is_not_utf8_prints_as_an_escape_not_a_crash(tmp_path: Path) -> None:
    import os

    undecodable = os.fsdecode(bytes(tmp_path) + b"/caf\xe9")  # a surrogate escape, as os.listdir gives it
    for args in (["candidate", "add", undecodable], ["candidate", "add", undecodable, "--json"]):
        line = _one_error_line(_invoke(args, MONITOR_DATA_DIR=str(tmp_path / "d")), 5)
        assert "caf\\udce9" in line or "caf\\xe9" in line


# --- every setting has a range ---------------------------------------------------------------------


def _numeric_fields() -> list[tuple[str, type, list[object]]]:
    found = []
    for name, field in Settings.model_fields.items():
        if typing.get_origin(field.annotation) in (dict, list):
            continue
        kinds = [kind for kind in typing.get_args(field.annotation) or (field.annotation,) if kind in (int, float)]
        if kinds:
            found.append((name, kinds[0], field.metadata))
    return found


NUMERIC = _numeric_fields()


def test_every_numeric_setting_has_a_lower_and_an_upper_bound() -> None:
    unbounded = [
        name
        for name, _, metadata in NUMERIC
        if not any(isinstance(m, (annotated_types.Ge, annotated_types.Gt)) for m in metadata)
        or not any(isinstance(m, (annotated_types.Le, annotated_types.Lt)) for m in metadata)
    ]
    assert len(NUMERIC) >= 20 and unbounded == []


def _outside(kind: type, metadata: list[object]) -> list[str]:
    values: list[str] = []
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            values.append(str(m.ge - 1) if kind is int else repr(float(m.ge) - 1e-6))
        elif isinstance(m, annotated_types.Gt):
            values.append(str(m.gt))
        elif isinstance(m, annotated_types.Le):
            values.append(str(m.le + 1) if kind is int else repr(float(m.le) + 1e-6))
        elif isinstance(m, annotated_types.Lt):
            values.append(str(m.lt))
    return values + (["nan", "inf", "-inf"] if kind is float else ["1e999", "9" * 5000])


@pytest.mark.parametrize(("name", "kind", "metadata"), NUMERIC, ids=[name for name, _, _ in NUMERIC])
def test_a_setting_out_of_its_range_is_refused_at_load_naming_it(
    name: str, kind: type, metadata: list[object], tmp_path: Path
) -> None:
    for value in _outside(kind, metadata):
        line = _one_error_line(
            _invoke(["settings"], MONITOR_DATA_DIR=str(tmp_path), **{f"MONITOR_{name.upper()}": value}), 2
        )
        assert f"MONITOR_{name.upper()}" in line, (value, line)
    bounds = [getattr(m, attr) for m in metadata for attr in ("ge", "le") if hasattr(m, attr)]
    for value in bounds:  # an inclusive bound itself is accepted (targets may then refuse the combination, by name)
        result = _invoke(
            ["settings", "--json"], MONITOR_DATA_DIR=str(tmp_path), **{f"MONITOR_{name.upper()}": str(value)}
        )
        if result.exit_code == 0:
            assert json.loads(result.stdout)[name] == value
        else:
            assert "MONITOR_" in _one_error_line(result, 2) or "target" in result.stderr


def test_the_largest_seed_is_accepted_and_one_more_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    assert load_settings(seed=MAX_SEED).seed == 2**63 - 1
    data_dir = tmp_path / "data"
    line = _one_error_line(
        _invoke(["sample", "--date", DAY], MONITOR_DATA_DIR=str(data_dir), MONITOR_SEED=str(2**63)), 2
    )
    assert "MONITOR_SEED" in line
    assert not data_dir.exists()


@pytest.mark.parametrize("date", ["0001-01-01", "0001-01-03", "1969-12-31"])
def test_a_run_date_before_1970_is_refused_with_the_date_named(date: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"date {date} is before {MIN_RUN_DATE.isoformat()}"):
        parse_run_date(date)
    line = _one_error_line(
        _invoke(["sample", "--date", date], MONITOR_DATA_DIR=str(tmp_path / "d"), MONITOR_FRESH_DAYS="36500"), 2
    )
    assert date in line


def test_day_arithmetic_near_the_ends_of_the_calendar_is_a_clear_error_not_an_overflow() -> None:
    with pytest.raises(ConfigError, match="5 days before 0001-01-03"):
        days_before(dt.date(1, 1, 3), 5)
    assert end_of_day(dt.date(9999, 12, 31)) == dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)
    assert parse_run_date(MIN_RUN_DATE.isoformat()) == dt.date(1970, 1, 1)


def test_the_fresh_window_reaching_before_1970_still_samples(tmp_path: Path) -> None:
    assert load_settings(fresh_days=36500).fresh_days == 36500
    assert days_before(dt.date(1970, 1, 1), 36500) == dt.date(1970, 1, 1) - dt.timedelta(days=36500)


# --- the config file -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "folder", "fifo", "not-toml", "deep", "huge"])
def test_monitor_config_must_name_a_toml_file_like_the_config_option(kind: str, tmp_path: Path) -> None:
    import os

    path = tmp_path / "monitor.toml"
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "not-toml":
        path.write_text("this is = = not toml")
    elif kind == "deep":
        path.write_text("a = " + "[" * 5000 + "]" * 5000)
    elif kind == "huge":
        path.write_text("# " + "x" * (2 << 20))
    line = _one_error_line(_invoke(["settings"], MONITOR_DATA_DIR=str(tmp_path / "d"), MONITOR_CONFIG=str(path)), 2)
    assert f"MONITOR_CONFIG={path}" in line
    option = _invoke(["--config", str(path), "settings"], MONITOR_DATA_DIR=str(tmp_path / "d"))
    _one_error_line(option, 2)


# --- target overrides for classes that do not exist -------------------------------------------------


def test_a_target_override_for_an_unknown_class_is_named_by_the_check() -> None:
    settings = load_settings(target_overrides={"seven": 0.8, "Spyder": 0.7})
    assert unknown_target_overrides(settings, ["seven", "eight"]) == ["Spyder"]
    with pytest.raises(
        ConfigError, match=r"MONITOR_TARGET_OVERRIDES names 'Spyder', not among the 2 classes \(eight, seven\)"
    ):
        check_target_overrides(settings, ["seven", "eight"])
    check_target_overrides(settings, ["seven", "Spyder", "eight"])  # all known: no error


@pytest.mark.parametrize("overrides", ['{"": 0.8}', '{"x": "high"}', '{"x": 1.5}', '{"x": null}', "[1, 2]", "{"])
def test_a_malformed_target_override_map_is_refused_at_load(overrides: str, tmp_path: Path) -> None:
    line = _one_error_line(_invoke(["settings"], MONITOR_DATA_DIR=str(tmp_path), MONITOR_TARGET_OVERRIDES=overrides), 2)
    assert "MONITOR_TARGET_OVERRIDES" in line or "target_overrides" in line


# --- URIs and names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["gs://[bucket/val", "gs://bu[ck]et", "file://[::1/x", "https://[oops/"])
def test_a_bracket_in_the_source_uri_is_a_clear_config_error(uri: str, tmp_path: Path) -> None:
    line = _one_error_line(_invoke(["index"], MONITOR_DATA_DIR=str(tmp_path / "d"), MONITOR_SOURCE_URI=uri), 2)
    assert "MONITOR_SOURCE_URI" in line and "is not a valid URI" in line
    assert not (tmp_path / "d").exists()


def test_a_bracket_in_a_source_folder_path_works(tmp_path: Path) -> None:
    folder = tmp_path / "im[ages]"
    (folder / "cat").mkdir(parents=True)
    result = _invoke(["settings", "--json"], MONITOR_DATA_DIR=str(tmp_path / "d"), MONITOR_SOURCE_URI=str(folder))
    assert result.exit_code == 0 and json.loads(result.stdout)["source_uri"] == str(folder)


@pytest.mark.parametrize("name", ["../../etc", "a/b", "a.b", "", "x" * 64, "db name"])
def test_a_database_name_that_could_leave_the_store_folder_is_refused(name: str, tmp_path: Path) -> None:
    line = _one_error_line(_invoke(["store", "info"], MONITOR_DATA_DIR=str(tmp_path), MONITOR_MONGO_DB=name), 2)
    assert "MONITOR_MONGO_DB" in line


def test_gcs_user_credentials_without_a_project_are_a_source_error_with_the_remedy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.core.sources import open_source

    credentials = tmp_path / "user.json"
    credentials.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "x.apps.googleusercontent.com",
                "client_secret": "s",
                "refresh_token": "r",
            }
        )
    )
    for name in ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "GOOGLE_CLOUD_QUOTA_PROJECT", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credentials))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud default project either
    with pytest.raises(SourceError, match="set GOOGLE_CLOUD_PROJECT"):
        list(open_source("gs://some-bucket/val").list())
    env = {"MONITOR_DATA_DIR": str(tmp_path / "d"), "MONITOR_SOURCE_URI": "gs://some-bucket/val"}
    line = _one_error_line(_invoke(["index"], **env), 3)
    assert "gs://some-bucket/val" in line and "GOOGLE_CLOUD_PROJECT" in line


# --- the dashboard's address -------------------------------------------------------------------------


def test_the_dashboard_on_a_port_in_use_is_one_line_exit_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _one_error_line(_invoke(["dashboard", "--port", str(port)], MONITOR_DATA_DIR=str(tmp_path)), 2)
    assert f"127.0.0.1:{port}" in line and "in use" in line


@pytest.mark.parametrize(
    ("host", "needle"),
    [
        ("no-such-host.invalid", "not a known host"),
        ("192.0.2.77", "not an address of this machine"),
        ("a b", "MONITOR_DASHBOARD_HOST"),
        ("[::1", ""),
    ],
)
def test_the_dashboard_on_a_bad_address_is_one_line_exit_2(host: str, needle: str, tmp_path: Path) -> None:
    line = _one_error_line(_invoke(["dashboard", "--host", host, "--port", "1"], MONITOR_DATA_DIR=str(tmp_path)), 2)
    assert needle in line


@pytest.mark.parametrize("port", ["0", "70000", "-1", "99999999999999999999999"])
def test_the_dashboard_port_out_of_range_is_refused(port: str, tmp_path: Path) -> None:
    result = _invoke(["dashboard", "--port", port], MONITOR_DATA_DIR=str(tmp_path))
    assert result.exit_code == 2 and "Traceback" not in result.stderr


def test_inf_and_nan_are_not_numbers_for_any_float_setting() -> None:
    for name, kind, _ in NUMERIC:
        if kind is float:
            for value in (math.inf, math.nan):
                with pytest.raises(ConfigError, match=f"MONITOR_{name.upper()}"):
                    load_settings(**{name: value})


def test_a_demo_refusal_is_a_data_error_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("mine")
    line = _one_error_line(_invoke(["demo", "--days", "3"], MONITOR_DATA_DIR=str(tmp_path)), DataError.exit_code)
    assert str(tmp_path) in line
