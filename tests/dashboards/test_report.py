"""The HTML report of a date (``monitor report``, ``/report``): one self-contained file with what the store holds."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from monitor.orchestration.cli import app
from tests.fixtures.dashboard import MODEL, day, health_doc, production_client, write_history


class _Parts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, Any]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parsed(text: str) -> _Parts:
    parts = _Parts()
    parts.feed(text)
    return parts


def test_the_report_holds_the_days_verdicts_advice_and_run_and_fetches_nothing(
    history, settings, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    result = CliRunner(env={"MONITOR_CONFIG": None, "MONITOR_DATA_DIR": str(settings.data_dir)}).invoke(
        app, ["report", "--date", day(0), "--out", str(out)]
    )
    assert result.exit_code == 0, result.stderr
    parts = _parsed(out.read_text())
    text = " ".join(" ".join(parts.text).split())
    assert f"Class health on {day(0)}" in text and MODEL in text
    last = history["health"].query(f"date == '{day(0)}'").set_index("label")
    assert "1 needs retraining · 1 watch · 1 healthy" in text
    assert "What to do next" in text and "monitor candidate add" in text
    rows = [t for t, _ in parts.tags if t == "tr"]
    assert len(rows) == 1 + len(last) + 1 + 1  # classes table (header + 3), the run's table (header + index)
    assert text.index(" cat ") < text.index(" bee ") < text.index(" ant ")  # most urgent first
    # Self-contained: no script, no stylesheet or image fetched from anywhere.
    assert not [t for t, a in parts.tags if t == "script" or a.get("src") or (t == "link" and a.get("href"))]

    served = production_client(settings).get(f"/report?date={day(0)}")
    assert served.status_code == 200 and "text/html" in served.headers["Content-Type"]
    assert "What to do next" in served.get_data(as_text=True)
    assert production_client(settings).get("/report?date=2020-01-01").status_code == 404
    assert production_client(settings).get("/report?date=bad").status_code == 404


def test_text_from_the_store_is_escaped(history, settings, store, tmp_path: Path) -> None:
    evil = '<script>alert("x")</script>'
    later = "2024-04-01"
    write_history(store, "class_health", [health_doc(evil, later, "needs_retraining", prob=0.99)])
    store.commit()
    body = production_client(settings).get(f"/report?date={later}").get_data(as_text=True)
    assert evil not in body and "&lt;script&gt;" in body
    assert not [t for t, _ in _parsed(body).tags if t == "script"]


def test_a_date_without_verdicts_is_one_error_line(settings, tmp_path: Path) -> None:
    result = CliRunner(env={"MONITOR_CONFIG": None, "MONITOR_DATA_DIR": str(settings.data_dir)}).invoke(
        app, ["report", "--out", str(tmp_path / "r.html")]
    )
    assert result.exit_code == 6 and "no results yet" in result.stderr and not (tmp_path / "r.html").exists()
