"""What the CLI gives a script or a pipe: its version, one JSON object on stdout for an error under ``--json``, tables
at full width, plain log lines, and a warning for a setting name that is not one (with the nearest that is)."""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path

from typer.testing import CliRunner

from monitor.orchestration.cli import PIPED_WIDTH, app


def _invoke(args: list[str], **env: str | None) -> object:
    # No COLUMNS: CliRunner's streams are not terminals, as a pipe is not.
    return CliRunner(env={"MONITOR_CONFIG": None, "COLUMNS": None} | env).invoke(app, args)


def test_version_prints_the_installed_distributions_version() -> None:
    result = _invoke(["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"class-health-monitor {version('class-health-monitor')}\n"


def test_an_error_under_json_is_one_json_object_on_stdout_with_its_exit_code(tmp_path: Path) -> None:
    result = _invoke(["health", "--json"], MONITOR_DATA_DIR=str(tmp_path))
    assert result.exit_code == 6
    error = json.loads(result.stdout)["error"]
    assert error["exit_code"] == 6 and error["type"] == "DataError"
    assert "no verdicts yet" in error["message"] and error["message"] in " ".join(result.stderr.split())

    future = _invoke(["evaluate", "--date", "2999-01-01", "--json"], MONITOR_DATA_DIR=str(tmp_path))
    assert future.exit_code == 2 and json.loads(future.stdout)["error"]["type"] == "ConfigError"

    usage = _invoke(["evaluate", "--no-such-option", "--json"])
    assert usage.exit_code == 2
    assert json.loads(usage.stdout)["error"] == {
        "exit_code": 2,
        "type": "UsageError",
        "message": "No such option: --no-such-option",
    }
    # Without --json, stdout stays empty: the error is the one line on stderr.
    assert _invoke(["health"], MONITOR_DATA_DIR=str(tmp_path)).stdout == ""


def test_a_table_written_to_a_pipe_is_not_cut_at_80_columns(tmp_path: Path) -> None:
    source = "/srv/monitoring/team-a-eu-west-1/validation-images-of-the-production-classifier/2026-12"  # 87 characters
    result = _invoke(["settings"], MONITOR_DATA_DIR=str(tmp_path), MONITOR_SOURCE_URI=source)
    assert result.exit_code == 0, result.stderr
    assert len(source) > 80 and source in result.stdout  # whole, on one line
    assert max(len(line) for line in result.stdout.splitlines()) <= PIPED_WIDTH


def test_a_misspelt_setting_is_warned_with_the_nearest_name_and_a_known_one_is_not(tmp_path: Path) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text("samples_per_clas = 5\nseed = 3\n")
    result = _invoke(
        ["--config", str(config), "settings", "--json"],
        MONITOR_DATA_DIR=str(tmp_path),
        MONITOR_FRESH_DAY="3",
        MONITOR_TARGET_ACCURACY="0.9",
    )
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert any(
        "MONITOR_FRESH_DAY is not a setting (did you mean MONITOR_FRESH_DAYS?); it is ignored" in w for w in warnings
    )
    assert any(
        f"'samples_per_clas' in {config} is not a setting (did you mean samples_per_class?)" in w for w in warnings
    )
    assert len(warnings) == 2  # MONITOR_TARGET_ACCURACY, seed and MONITOR_CONFIG are settings (or its file)
    assert json.loads(result.stdout)["seed"] == 3  # the rest of the file still applies


def test_log_lines_on_a_pipe_are_plain_single_lines(tmp_path: Path) -> None:
    result = _invoke(["settings"], MONITOR_DATA_DIR=str(tmp_path), MONITOR_BOGUS_NAME="1")
    (warning,) = [text for text in result.stderr.splitlines() if "MONITOR_BOGUS_NAME" in text]
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING monitor\.core\.settings: "
        r"MONITOR_BOGUS_NAME is not a setting; it is ignored",
        warning,
    ), warning  # a time, the level, the logger, the message: no box, no wrapping, no padding


def test_json_log_format_writes_one_object_a_line_with_secrets_masked_and_the_error_as_a_record(
    tmp_path: Path,
) -> None:
    password = "Jz8qLogPw41"
    result = _invoke(
        ["settings"],
        MONITOR_LOG_FORMAT="json",
        MONITOR_DATA_DIR=str(tmp_path),
        MONITOR_JSON_BOGUS="1",
        MONITOR_MONGO_URI=f"mongodb://ops:{password}@db.example:27017/",
    )
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]  # every line is one JSON object
    (warning,) = [r for r in records if "MONITOR_JSON_BOGUS" in r["message"]]
    assert warning["level"] == "WARNING" and warning["logger"] == "monitor.core.settings"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", warning["time"])
    assert password not in result.stderr + result.stdout

    failed = _invoke(["health"], MONITOR_LOG_FORMAT="json", MONITOR_DATA_DIR=str(tmp_path))
    assert failed.exit_code == 6
    (error,) = [json.loads(line) for line in failed.stderr.splitlines()]
    assert error["level"] == "ERROR" and "no verdicts yet" in error["message"]
    assert error["exit_code"] == 6 and error["error_type"] == "DataError"

    wrong = _invoke(["--log-format", "xml", "settings"], MONITOR_DATA_DIR=str(tmp_path))
    assert wrong.exit_code == 2 and "xml" in wrong.stderr
