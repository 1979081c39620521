"""`monitor evaluate --date D` end to end on the embedded default, and every bad input ending in one readable line."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix
from typer.testing import CliRunner

from monitor.orchestration.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.spark]

PAST = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC).timestamp()
DATE = "2026-11-20"
SHORT_CLASS = "nine"  # only 4 good images (and one corrupt): fewer than N, so all are taken
GOOD_PER_CLASS = 14


def _digit_bytes(index: int, fmt: str, mode: str = "RGB") -> bytes:
    from monitor.domain.digits import digit_to_pil, load_digits_images

    image = digit_to_pil(load_digits_images()[0][index]).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def source_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small bucket-like folder: held-out digits, odd formats, and every kind of bad file."""
    from monitor.domain.digits import LABELS, build_demo_source, load_digits_images, split_indices

    root = tmp_path_factory.mktemp("bucket") / "val"
    _, targets = load_digits_images()
    heldout = split_indices()[1]
    chosen = []
    for digit, label in enumerate(LABELS):
        members = heldout[targets[heldout] == digit]
        chosen.extend(members[: 4 if label == SHORT_CLASS else GOOD_PER_CLASS].tolist())
    build_demo_source(root, indices=chosen)
    # Odd but valid formats, each in the class its digit belongs to.
    one = int(heldout[targets[heldout] == 1][-1])
    (root / "one" / "odd.png").write_bytes(_digit_bytes(one, "PNG"))
    (root / "one" / "odd.gif").write_bytes(_digit_bytes(one, "GIF", "P"))
    (root / "one" / "odd.webp").write_bytes(_digit_bytes(one, "WEBP"))
    (root / "one" / "cmyk.jpg").write_bytes(_digit_bytes(one, "JPEG", "CMYK"))
    (root / "one" / "gray.jpg").write_bytes(_digit_bytes(one, "JPEG", "L"))
    # Bad files: recorded, never silently dropped, never crash the run.
    (root / SHORT_CLASS / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" + bytes(64))
    (root / "two" / "empty.jpg").write_bytes(b"")
    (root / "two" / "notes.txt").write_text("not an image")
    (root / "stray.jpg").write_bytes(_digit_bytes(one, "JPEG"))
    (root / "three" / "nested").mkdir()
    (root / "three" / "nested" / "deep.jpg").write_bytes(_digit_bytes(one, "JPEG"))
    for path in root.rglob("*"):
        os.utime(path, (PAST, PAST))
    return root


@pytest.fixture
def env(source_dir: Path, tmp_path: Path) -> dict[str, str]:
    # The base draw of N per class from day one: the first-day draw (MONITOR_FIRST_DRAW) has its own test below.
    return {
        "MONITOR_DATA_DIR": str(tmp_path / "data"),
        "MONITOR_SOURCE_URI": str(source_dir),
        "MONITOR_FIRST_DRAW": "0",
    }


def _invoke(env: dict[str, str], *args: str) -> dict:
    result = CliRunner(env=env).invoke(app, list(args))
    assert result.exit_code == 0, (
        f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
    )
    return json.loads(result.stdout)


def _store_counts(env: dict[str, str]) -> dict[str, int]:
    from monitor.core.settings import load_settings
    from monitor.store import open_store

    with open_store(load_settings(data_dir=env["MONITOR_DATA_DIR"]), read_only=True) as store:
        return store.counts()


def test_evaluate_json_samples_n_per_class_and_counts_agree_with_sklearn(env: dict[str, str], spark) -> None:
    result = _invoke(env, "evaluate", "--date", DATE, "--json")

    assert result["date"] == DATE and result["model"].startswith("digits-resnet@")
    csv = pd.read_csv(result["samples_csv"])
    per_class = csv.groupby("label").size().to_dict()
    assert per_class == {**{label: 10 for label in per_class if label != SHORT_CLASS}, SHORT_CLASS: 5}
    assert len(per_class) == 10
    assert result["short_classes"] == {SHORT_CLASS: 5}

    predictions = pd.read_parquet(result["predictions"])
    assert sorted(predictions["image_path"]) == sorted(csv["image_path"])
    failed = predictions[predictions["status"] != "ok"]
    assert failed["image_path"].tolist() == [f"{SHORT_CLASS}/corrupt.jpg"]
    assert sum(result["failed"].values()) == 1

    ok = predictions[predictions["status"] == "ok"]
    labels = sorted(per_class)
    matrix = confusion_matrix(ok["label"], ok["pred"], labels=labels)
    expected = {label: (int(matrix[i].sum()), int(matrix[i, i])) for i, label in enumerate(labels)}
    got = {row["label"]: (row["n"], row["correct"]) for row in result["classes"]}
    assert got == expected
    for row in result["classes"]:
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]
    # Unusable files were recorded and counted, with their reasons.
    assert result["skipped"] == {"zero_bytes": 1, "not_an_image_extension": 1, "wrong_depth": 2}


@pytest.mark.gcs
def test_evaluate_on_a_bucket_with_gcs_latency_and_transient_errors_gives_the_folders_counts(
    env: dict[str, str], source_dir: Path, latency_gcs, spark
) -> None:
    """The real client against the latency server: listing, reads at 10 ms a request, two 503s on one sampled image."""
    server, bucket = latency_gcs
    server.put(
        bucket,
        {
            f"val/{path.relative_to(source_dir).as_posix()}": path.read_bytes()
            for path in source_dir.rglob("*")
            if path.is_file()
        },
        created=dt.datetime.fromtimestamp(PAST, dt.UTC),
    )
    retried = (
        f"val/{SHORT_CLASS}/"
        + sorted(p.name for p in (source_dir / SHORT_CLASS).iterdir() if p.name != "corrupt.jpg")[0]
    )
    server.inject(bucket, retried, [503, 503])
    server.latency_s = 0.01
    gcs_env = env | {"MONITOR_SOURCE_URI": f"gs://{bucket}/val", "STORAGE_EMULATOR_HOST": server.url}

    result = _invoke(gcs_env, "evaluate", "--date", DATE, "--json")

    csv = pd.read_csv(result["samples_csv"])
    per_class = csv.groupby("label").size().to_dict()
    assert per_class == {**{label: 10 for label in per_class if label != SHORT_CLASS}, SHORT_CLASS: 5}
    predictions = pd.read_parquet(result["predictions"])
    # Every image of the short class is sampled: the one answered 503 twice was read on the third try.
    assert server.object_hits[retried] == 3
    assert predictions.loc[predictions["image_path"] == retried.removeprefix("val/"), "status"].tolist() == ["ok"]
    assert predictions.loc[predictions["status"] != "ok", "image_path"].tolist() == [f"{SHORT_CLASS}/corrupt.jpg"]
    ok = predictions[predictions["status"] == "ok"]
    got = {row["label"]: (row["n"], row["correct"]) for row in result["classes"]}
    assert got == {
        label: (int((ok["label"] == label).sum()), int(((ok["label"] == label) & (ok["pred"] == label)).sum()))
        for label in per_class
    }
    assert result["skipped"] == {"zero_bytes": 1, "not_an_image_extension": 1, "wrong_depth": 2}
    assert server.stats()["max_in_flight"] > 1  # the reads overlapped


def test_rerunning_a_date_gives_the_same_sample_and_metrics_and_no_duplicates(env: dict[str, str], spark) -> None:
    first = _invoke(env, "evaluate", "--date", DATE, "--json")
    csv_first = Path(first["samples_csv"]).read_bytes()
    counts_first = _store_counts(env)
    again = _invoke(env, "evaluate", "--date", DATE, "--json")
    forced = _invoke(env, "evaluate", "--date", DATE, "--json", "--force")  # redraws and recomputes everything

    for later in (again, forced):
        assert later["classes"] == first["classes"]
    assert Path(forced["samples_csv"]).read_bytes() == csv_first
    assert _store_counts(env) == counts_first
    assert counts_first["class_metrics"] == 10 and counts_first["samples"] == 1


def test_a_different_date_draws_a_different_sample(env: dict[str, str]) -> None:
    refused = CliRunner(env=env).invoke(app, ["sample", "--date", "2026-11-19"])
    assert refused.exit_code == 6 and "run `monitor index` first" in refused.stderr
    _invoke(env, "index", "--json")
    one = pd.read_csv(_invoke(env, "sample", "--date", "2026-11-19", "--json")["samples_csv"])
    two = pd.read_csv(_invoke(env, "sample", "--date", "2026-11-20", "--json")["samples_csv"])
    assert set(one["image_path"]) != set(two["image_path"])
    assert one.groupby("label").size().to_dict() == two.groupby("label").size().to_dict()


def test_index_twice_writes_nothing_the_second_time(env: dict[str, str]) -> None:
    first = _invoke(env, "index", "--json")
    second = _invoke(env, "index", "--json")
    assert first["new"] == first["listed"] and not first["wrote_nothing"]
    assert second["wrote_nothing"] and second["new"] == second["updated"] == 0


# --- bad input: one line on stderr, non-zero exit, no traceback --------------------------------


def _run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")} | env
    return subprocess.run(
        [sys.executable, "-m", "monitor.orchestration.cli", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert proc.returncode == code, f"exit {proc.returncode}, stderr: {proc.stderr}"
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    message = " ".join(lines)
    assert lines and lines[0].startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in message
    return message


@pytest.mark.parametrize(
    ("date", "needle"), [("2026-13-40", "'2026-13-40' is not a valid"), ("2999-01-01", "2999-01-01 is in the future")]
)
def test_bad_dates_exit_2_with_the_date_named(env: dict[str, str], date: str, needle: str) -> None:
    _assert_one_line_error(_run_cli(env, "evaluate", "--date", date), 2, needle)


def test_unreachable_mongodb_exits_4_with_the_password_redacted(env: dict[str, str]) -> None:
    bad = env | {
        "MONITOR_MONGO_URI": "mongodb://ops:hunter2@127.0.0.1:1/?directConnection=true",
        "MONITOR_MONGO_TIMEOUT_MS": "300",
    }
    message = _assert_one_line_error(_run_cli(bad, "evaluate", "--date", DATE), 4, "mongodb://***@127.0.0.1:1")
    assert "hunter2" not in message


def test_unreachable_bucket_exits_3(env: dict[str, str]) -> None:
    bad = env | {"MONITOR_SOURCE_URI": "gs://no-such-bucket/val", "STORAGE_EMULATOR_HOST": "http://127.0.0.1:1"}
    _assert_one_line_error(_run_cli(bad, "evaluate", "--date", DATE), 3, "gs://no-such-bucket")


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_missing_or_empty_source_exits_3(env: dict[str, str], tmp_path: Path, kind: str) -> None:
    folder = tmp_path / kind
    if kind == "empty":
        folder.mkdir()
    _assert_one_line_error(
        _run_cli(env | {"MONITOR_SOURCE_URI": str(folder)}, "evaluate", "--date", DATE), 3, str(folder)
    )


def test_a_model_directory_that_does_not_load_exits_5(env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "config.json").write_text("{ broken")
    _assert_one_line_error(
        _run_cli(env | {"MONITOR_MODEL_DIR": str(broken)}, "evaluate", "--date", DATE), 5, str(broken)
    )


def test_labels_unknown_to_the_model_are_named_before_any_inference(env: dict[str, str], tmp_path: Path, spark) -> None:
    from monitor.domain.digits import build_demo_source

    root = tmp_path / "bucket"
    build_demo_source(root, indices=[0, 1, 2, 3, 10, 11])
    (root / "Spyder").mkdir()
    (root / "Spyder" / "x.jpg").write_bytes((root / "zero" / "digit_00000.jpg").read_bytes())
    for path in root.rglob("*"):
        os.utime(path, (PAST, PAST))
    proc = _run_cli(env | {"MONITOR_SOURCE_URI": str(root)}, "evaluate", "--date", DATE)
    _assert_one_line_error(proc, 5, "Spyder")
    assert not list((Path(env["MONITOR_DATA_DIR"]) / "predictions").glob("*.parquet"))

    # The folder is removed: the date's index and sample still hold it, and the message names the way out. The one
    # line on a process's stderr is checked above; these two run in this process (a CLI start and a JVM less each).
    shutil.rmtree(root / "Spyder")
    moved = env | {"MONITOR_SOURCE_URI": str(root)}
    stale = CliRunner(env=moved).invoke(app, ["evaluate", "--date", DATE])
    assert stale.exit_code == 5 and "Traceback" not in stale.stderr, stale.stderr
    assert stale.stderr.startswith("error:") and "Spyder" in stale.stderr, stale.stderr
    assert f"monitor evaluate --date {DATE} --force" in " ".join(stale.stderr.split())
    assert not list((Path(env["MONITOR_DATA_DIR"]) / "predictions").glob("*.parquet"))
    # The way out works: the forced run re-indexes, redraws without the folder and evaluates the day.
    forced = _invoke(moved, "evaluate", "--date", DATE, "--force", "--json")
    assert sorted(row["label"] for row in forced["classes"]) == ["one", "three", "two", "zero"]


def test_a_quiet_evaluate_on_a_local_spark_writes_nothing_on_stderr_and_the_jvm_talks_to_its_log(
    env: dict[str, str],
) -> None:
    done = _run_cli(env, "evaluate", "--date", DATE)  # the default master: a JVM started by this run
    assert done.returncode == 0, done.stderr
    # Only the run's own log records (this source holds a corrupt image: one warning), none of the JVM's lines.
    lines = done.stderr.splitlines()
    assert lines and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING ", line) for line in lines), lines
    log = Path(env["MONITOR_DATA_DIR"]) / "logs" / "spark-jvm.log"
    assert 'Setting default log level to "WARN"' in log.read_text()  # the JVM's start-up notice, kept here


def test_a_sample_drawn_with_other_settings_is_not_silently_reused(env: dict[str, str]) -> None:
    _invoke(env, "index", "--json")
    first = pd.read_csv(_invoke(env, "sample", "--date", DATE, "--json")["samples_csv"])
    assert first.groupby("label").size().max() == 10

    smaller = env | {"MONITOR_SAMPLES_PER_CLASS": "5"}
    refused = CliRunner(env=smaller).invoke(app, ["sample", "--date", DATE])
    assert refused.exit_code == 2
    assert (
        "(MONITOR_SAMPLES_PER_CLASS was 10, now 5): to evaluate it as drawn, set MONITOR_SAMPLES_PER_CLASS=10;"
        in " ".join(refused.stderr.split())
    )
    assert "add --force to draw it again" in " ".join(refused.stderr.split())
    assert pd.read_csv(_invoke(env, "sample", "--date", DATE, "--json")["samples_csv"]).equals(first)  # untouched

    redrawn = pd.read_csv(_invoke(smaller, "sample", "--date", DATE, "--force", "--json")["samples_csv"])
    assert redrawn.groupby("label").size().max() == 5


# --- each image once per model, and the artifacts checked against what the store recorded -------------------


def test_each_image_is_evaluated_once_per_model_and_an_exhausted_class_keeps_its_verdict(
    env: dict[str, str], spark
) -> None:
    days = ["2026-11-18", "2026-11-19", "2026-11-20"]
    results = [_invoke(env, "evaluate", "--date", day, "--json") for day in days]
    seen: dict[str, list[str]] = {}
    for result in results:
        predictions = (
            pd.read_parquet(result["predictions"]) if Path(result["predictions"]).stat().st_size else pd.DataFrame()
        )
        for path, label in zip(predictions.get("image_path", []), predictions.get("label", [])):
            seen.setdefault(label, []).append(path)
    # No image is predicted twice by the model: 10, then the 4 left, then nothing, for a class of 14; an image
    # that does not decode is recorded once (drawn again only if the file changes), not drawn every day.
    for label, paths in seen.items():
        assert len(paths) == len(set(paths)), label
    assert seen[SHORT_CLASS].count(f"{SHORT_CLASS}/corrupt.jpg") == 1
    two = {row["label"]: row for row in results[2]["health"]}["two"]
    assert len(seen["two"]) == GOOD_PER_CLASS and two["day_n"] == 0 and two["exhausted"] is True
    assert two["evaluated_n"] == GOOD_PER_CLASS and two["reason"].startswith(
        "Nothing new to evaluate today: all 14 images"
    )
    before = {row["label"]: row["verdict"] for row in results[1]["health"]}
    assert {row["label"]: row["verdict"] for row in results[2]["health"]} == before  # carried over
    # A re-run of a day draws and counts the same images.
    again = _invoke(env, "evaluate", "--date", days[1], "--json", "--force")
    assert again["classes"] == results[1]["classes"]


def test_a_models_first_day_draws_up_to_the_first_draw_per_class(env: dict[str, str], spark) -> None:
    result = _invoke(
        {**env, "MONITOR_FIRST_DRAW": "12", "MONITOR_MIN_SAMPLES": "12"}, "evaluate", "--date", DATE, "--json"
    )
    per_class = pd.read_csv(result["samples_csv"]).groupby("label").size().to_dict()
    assert per_class == {**{label: 12 for label in per_class if label != SHORT_CLASS}, SHORT_CLASS: 5}
    assert all(row["verdict"] != "insufficient_data" for row in result["health"] if row["label"] != SHORT_CLASS)


def test_a_hand_edited_sample_is_refused_and_the_days_results_stay(env: dict[str, str], spark) -> None:
    first = _invoke(env, "evaluate", "--date", DATE, "--json")
    csv_path = Path(first["samples_csv"])
    rows = csv_path.read_text().splitlines()
    kept = (
        [rows[0]] + [row for row in rows[1:] if ",two/" not in row] + [next(row for row in rows[1:] if ",two/" in row)]
    )
    csv_path.write_text("\n".join(kept) + "\n")  # 9 of class two's 10 rows deleted
    counts = _store_counts(env)

    refused = CliRunner(env=env).invoke(app, ["evaluate", "--date", DATE, "--json"])
    assert refused.exit_code == 6, refused.stderr
    assert "is not the sample drawn for 2026-11-20" in refused.stderr and "--force" in refused.stderr
    assert _store_counts(env) == counts
    forced = _invoke(env, "evaluate", "--date", DATE, "--json", "--force")
    assert forced["classes"] == first["classes"]


def test_a_predictions_file_changed_after_predict_is_refused_by_metrics_and_predicted_again_by_evaluate(
    env: dict[str, str], spark
) -> None:
    first = _invoke(env, "evaluate", "--date", DATE, "--json")
    path = Path(first["predictions"])
    frame = pd.read_parquet(path)
    frame.loc[frame["status"] == "ok", "pred"] = frame.loc[frame["status"] == "ok", "label"]  # every image "right"
    frame.to_parquet(path)

    from monitor.core.errors import DataError
    from monitor.core.settings import load_settings
    from monitor.orchestration.metrics_stage import run_metrics

    with pytest.raises(DataError, match="changed since the predict step wrote it.*--force"):
        run_metrics(load_settings(data_dir=env["MONITOR_DATA_DIR"], source_uri=env["MONITOR_SOURCE_URI"]), DATE)
    again = _invoke(env, "evaluate", "--date", DATE, "--json")
    assert again["classes"] == first["classes"]  # predicted again: the edit did not become a result
