"""Readers stay out of the writers' folders: ``monitor health`` and the dashboard's data layer (issue 22).

The stored verdicts, metrics and alerts live in the store; ``samples/`` and ``predictions/`` are the pipeline's
artifacts, where a running writer keeps its temporary files (``atomic_write``: ``.<name>.<random>.tmp``). A reader
takes no lock, so it must not tidy those up (a writer may be filling one right now), open them (a FIFO would hang
it) or need the folders at all. Each reader runs in a subprocess (a hang is a timeout, not a stuck suite):

- beside a writer's temporary files there, one of them a FIFO: it answers, and every entry is left as it was;
- with both folders unreadable and unwritable, the process's capabilities dropped (root ignores file modes:
  ``setpriv``, /work/shared/ENVIRONMENT.md): it answers the same, so it never listed, opened or removed anything there.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.core.settings import load_settings
from monitor.domain.alerts import raise_alerts
from monitor.orchestration.health_stage import compute_health
from monitor.store import open_store

START = dt.date(2024, 3, 1)
DAYS = 6
MODEL = "m@1"
DROP_PRIVILEGES = [
    "setpriv",
    "--bounding-set",
    "-dac_override,-dac_read_search,-fowner",
    "--inh-caps",
    "-dac_override,-dac_read_search,-fowner",
]
#: Generous: a loaded machine is 3x slower, and the subprocess imports the package.
TIMEOUT_S = 180


def day(offset: int) -> str:
    return (START + dt.timedelta(days=offset)).isoformat()


def _build(data_dir: Path) -> None:
    """A store with DAYS days of metrics and verdicts (class "seven" flagged, one alert)."""
    settings = load_settings(data_dir=data_dir)
    series = {"one": [(10, 10)] * DAYS, "seven": [(10, 10), (10, 9), (10, 3), (10, 2), (10, 4), (10, 3)]}
    with open_store(settings) as store:
        for i in range(DAYS):
            docs = [
                {
                    "label": label,
                    "n": s[i][0],
                    "correct": s[i][1],
                    "failed": 0,
                    "confusions": [{"pred": "one", "count": s[i][0] - s[i][1]}] if s[i][1] < s[i][0] else [],
                }
                for label, s in series.items()
            ]
            store.replace_day("class_metrics", MODEL, day(i), docs)
            raise_alerts(store, MODEL, day(i), compute_health(store, MODEL, day(i), settings))


def _writers_files(data_dir: Path) -> None:
    """samples/ and predictions/ afresh: a day's artifact (junk inside: a reader that opens it fails), a writer's
    half-written temporary file, and one that is a FIFO (opening it for reading blocks forever)."""
    for name, suffix in (("samples", "csv"), ("predictions", "parquet")):
        folder = data_dir / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        (folder / f"{day(DAYS - 1)}.{suffix}").write_bytes(b"not what the name says")
        (folder / f".{day(DAYS)}.{suffix}.k3x9q1.tmp").write_bytes(b"half written")
        os.mkfifo(folder / f".{day(DAYS)}.{suffix}.fifo00.tmp")
        # Access times behind the modification times: a listing or a read moves them (relatime), a stat does not.
        for path in [*folder.iterdir(), folder]:
            st = path.lstat()
            os.utime(path, ns=(st.st_mtime_ns - 10**10, st.st_mtime_ns), follow_symlinks=False)


def _atime_shows_reads(folder: Path) -> bool:
    """Whether this file system moves a folder's access time when it is listed (not under noatime)."""
    probe = folder / "atime-probe"
    probe.mkdir()
    (probe / "x").write_bytes(b"")
    st = probe.stat()
    os.utime(probe, ns=(st.st_mtime_ns - 10**10, st.st_mtime_ns))
    before = probe.stat().st_atime_ns
    os.listdir(probe)
    moved = probe.stat().st_atime_ns != before
    shutil.rmtree(probe)
    return moved


def _entries(data_dir: Path, *, listing_allowed: bool = False) -> dict[str, tuple[int, ...]]:
    """The writers' folders and every entry in them: (inode, mode, size, mtime, and atime where it shows reads), by
    lstat; listing a folder here puts its access time back, so the reader's own listing still shows."""
    with_atime = _atime_shows_reads(data_dir.parent)
    out = {}
    for name in ("samples", "predictions"):
        folder = data_dir / name
        st = folder.lstat()
        inside = sorted(folder.iterdir())
        os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))
        out[name] = (
            st.st_ino,
            st.st_mode,
            st.st_size,
            st.st_mtime_ns,
            *((st.st_atime_ns,) if with_atime and not listing_allowed else ()),
        )
        for path in inside:
            st = path.lstat()
            out[f"{name}/{path.name}"] = (
                st.st_ino,
                st.st_mode,
                st.st_size,
                st.st_mtime_ns,
                *((st.st_atime_ns,) if with_atime else ()),
            )
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("readers") / "data"
    path.mkdir()
    _build(path)
    return path


@pytest.fixture
def data_dir(built: Path) -> Path:
    """The built store, with the writers' folders made afresh for each test (a reader that removed a file in one
    test must not leave the next one with nothing to remove)."""
    _writers_files(built)
    return built


@pytest.fixture(params=["beside temp files and a FIFO", "folders unreadable"])
def condition(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[list[str]]:
    """The command prefix of a reader under one condition of the writers' folders (restored afterwards)."""
    folders = [data_dir / "samples", data_dir / "predictions"]
    if request.param == "beside temp files and a FIFO":
        yield []
        return
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    for folder in folders:
        folder.chmod(0o000)
    try:
        probe = subprocess.run(
            [*DROP_PRIVILEGES, "ls", str(folders[0])], capture_output=True, text=True, timeout=TIMEOUT_S
        )
        assert probe.returncode != 0, "the folders are still readable: the condition would test nothing"
        yield DROP_PRIVILEGES
    finally:
        for folder in folders:
            folder.chmod(0o755)


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env.update(MONITOR_DATA_DIR=str(data_dir), MONITOR_SOURCE_URI=str(data_dir / "no-source"), PYTHONUNBUFFERED="1")
    return env


def _run(prefix: list[str], data_dir: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, *args],
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=data_dir.parent,
    )


@pytest.mark.parametrize(
    "args", [["health", "--json"], ["health", "--date", day(3), "--json"]], ids=["latest", "a date"]
)
def test_monitor_health_answers_without_touching_samples_or_predictions(
    data_dir: Path, condition: list[str], args: list[str]
) -> None:
    before = _entries(data_dir)
    done = _run(condition, data_dir, ["-m", "monitor.orchestration.cli", *args])
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    text = json.dumps(shown)
    assert MODEL in text and "needs_retraining" in text and "seven" in text
    if not condition:  # (unreadable: the folders' modes are restored after the test; it answered without them)
        assert _entries(data_dir) == before  # nothing removed, replaced, listed or read


DASHBOARD_READS = """
import json, sys
from dashboards.data import DashboardData
from monitor.core.settings import load_settings

data = DashboardData(load_settings())
data.warm()
[info] = data.models()
model = info.model_id
out = {
    "model": model,
    "bounds": list(data.date_bounds(model)),
    "labels": data.labels(model),
    "metrics": len(data.metrics(model)),
    "verdicts": sorted(set(data.health(model)["verdict"])),
    "alerts": data.alerts(model)["kind"].tolist(),
    "confusions": int(data.confusions(model, "seven")["count"].sum()),
    "runs": data.runs(sys.argv[1]),
}
data.close()
print(json.dumps(out))
"""


def test_the_dashboards_store_views_answer_without_touching_samples_or_predictions(
    data_dir: Path, condition: list[str]
) -> None:
    before = _entries(data_dir)
    done = _run(condition, data_dir, ["-c", DASHBOARD_READS, day(DAYS - 1)])
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["model"] == MODEL and out["bounds"] == [day(0), day(DAYS - 1)] and out["labels"] == ["one", "seven"]
    assert (
        out["metrics"] == 2 * DAYS and "needs_retraining" in out["verdicts"] and out["alerts"] == ["needs_retraining"]
    )
    assert out["confusions"] == 1 + 7 + 8 + 6 + 7
    if not condition:
        assert _entries(data_dir) == before  # nothing removed, replaced, listed or read


LIST_PREDICTIONS = """
import json
from dashboards.data import DashboardData
from monitor.core.settings import load_settings

data = DashboardData(load_settings())
print(json.dumps(data.prediction_dates()))
"""


def test_the_dashboards_list_of_prediction_dates_skips_a_writers_temporary_files_and_leaves_them(
    data_dir: Path,
) -> None:
    before = _entries(data_dir, listing_allowed=True)  # it lists predictions/, and must open nothing there
    done = _run([], data_dir, ["-c", LIST_PREDICTIONS])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [day(DAYS - 1)]
    assert _entries(data_dir, listing_allowed=True) == before
