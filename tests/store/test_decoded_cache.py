"""The embedded store keeps a bounded number of decoded documents for a second read (issue 25).

A reader that reads a whole history once (the dashboard keeps its own columns) must not keep a year of decoded
documents (GBs at 1,000 classes); one that re-reads a window (the health stage) still reads it from memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitor.core.settings import Settings
from monitor.store import embedded as embedded_module
from monitor.store import open_store

MODEL = "m@1"


def day(n: int) -> str:
    return f"2026-11-{n:02d}"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data")
    with open_store(settings) as store:
        for n in range(1, 6):  # two documents a day
            store.replace_day("class_health", MODEL, day(n), [{"label": c, "verdict": "healthy"} for c in "ab"])
        store.replace_day("class_health", MODEL, day(9), [{"label": c, "verdict": "watch"} for c in "abcdefg"])
    return settings


@pytest.fixture
def file_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The dates whose partition file is read (decoded), in order."""
    reads: list[str] = []
    original = embedded_module.read_part_file

    def counted(path: Path, kind: str, key: Any, *args: Any) -> Any:
        reads.append(key[-1])
        return original(path, kind, key, *args)

    monkeypatch.setattr(embedded_module, "read_part_file", counted)
    monkeypatch.setattr(embedded_module, "DECODED_CACHE_DOCS", 6)
    return reads


def dates_of(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({str(row["date"]) for row in rows})


def test_the_most_recently_read_documents_are_kept_up_to_the_bound(settings: Settings, file_reads: list[str]) -> None:
    with open_store(settings, read_only=True) as store:
        assert dates_of(store.rows("class_health", MODEL, end=day(5))) == [day(n) for n in range(1, 6)]
        assert file_reads == [day(n) for n in range(1, 6)]
        file_reads.clear()
        # The last three days read (6 documents) are kept: a second read of them decodes nothing.
        assert len(store.rows("class_health", MODEL, start=day(3), end=day(5))) == 6
        assert file_reads == []
        # The first two were dropped to stay within the bound: read from their files again.
        assert len(store.rows("class_health", MODEL, start=day(1), end=day(2), fields=["label"])) == 4
        assert file_reads == [day(1), day(2)]
        file_reads.clear()
        # Reading day 1 and 2 made them the most recent: day 3 went, day 5 stays.
        store.rows("class_health", MODEL, start=day(5), end=day(5))
        store.rows("class_health", MODEL, start=day(3), end=day(3))
        assert file_reads == [day(3)]


def test_a_partition_larger_than_the_bound_is_read_but_not_kept(settings: Settings, file_reads: list[str]) -> None:
    with open_store(settings, read_only=True) as store:
        for _ in range(2):
            rows = store.rows("class_health", MODEL, start=day(9), end=day(9))
            assert [row["label"] for row in rows] == list("abcdefg")
        store.rows("class_health", MODEL, start=day(1), end=day(1))
        store.rows("class_health", MODEL, start=day(1), end=day(1))
    assert file_reads == [day(9), day(9), day(1)]
