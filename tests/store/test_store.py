"""The store layer: the same named operations give the same answers on the embedded store and on MongoDB.

``any_store`` runs each parity test twice: on the embedded store (partitioned BSON files under a temporary
data dir) and on a MongoDB: a real server when ``MONITOR_TEST_MONGO_URI`` is set (e.g. the compose stack's,
``mongodb://monitor:<password>@127.0.0.1:27017/?authSource=admin``), otherwise mongomock standing in for one
(with the server's unique indexes). Nothing is skipped either way. Then what only the embedded store has:
readers that never lock or write, commits, backups, restore and the one-writer lock.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mongomock
import pytest

from monitor.core.errors import DataError, StoreError
from monitor.core.settings import Settings
from monitor.store import MongoStore, Store, open_store
from monitor.store import embedded as embedded_module
from monitor.store.embedded import EmbeddedDB, restore
from tests.fixtures.store import find, remove

UTC = dt.UTC
SOURCE = "gs://bucket/prefix"
T0 = dt.datetime(2026, 11, 1, 12, tzinfo=UTC)


def _mongodb(name: str) -> Store:
    uri = os.environ.get("MONITOR_TEST_MONGO_URI", "")
    if uri:
        import pymongo

        client: Any = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000, tz_aware=True)
        store = MongoStore(db=client[name], description="MongoDB (MONITOR_TEST_MONGO_URI)")
    else:
        store = MongoStore(
            db=mongomock.MongoClient(tz_aware=True)[name], description="mongomock standing in for MongoDB"
        )
    store.ensure_indexes()
    return store


@pytest.fixture(params=["embedded", "mongodb"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens the same store again and again (a new process would): embedded files, or one MongoDB database."""
    if request.param == "embedded":
        settings = Settings(data_dir=tmp_path / "data")
        yield lambda: open_store(settings)
        return
    name = f"monitor_test_{uuid.uuid4().hex[:12]}"
    stores: list[Store] = []
    shared = _mongodb(name)

    def reopen() -> Store:
        if os.environ.get("MONITOR_TEST_MONGO_URI"):
            stores.append(_mongodb(name))
            return stores[-1]
        return shared  # mongomock lives in this process: the same database is the reopened one

    yield reopen
    if os.environ.get("MONITOR_TEST_MONGO_URI") and shared._db is not None:
        shared._db.client.drop_database(name)


def image(
    path: str, *, created: dt.datetime = T0, status: str = "ok", reason: str | None = None, key: float = 0.5
) -> dict[str, Any]:
    label = path.split("/")[0] if path.count("/") == 1 else None
    return {
        "source": SOURCE,
        "path": path,
        "label": label,
        "status": status,
        "reason": reason,
        "sample_key": key,
        "created": created,
        "updated": created,
        "size": 10,
        "checksum": "c",
        "first_seen": T0,
        "last_seen": T0,
    }


def metric(label: str, n: int = 10, correct: int = 9) -> dict[str, Any]:
    return {"label": label, "n": n, "correct": correct, "failed": 0}


# --- parity: the same operations, the same answers ----------------------------------------------------


def test_per_day_rows_are_replaced_filtered_and_walked_back_the_same_on_both(opener: Callable[[], Store]) -> None:
    with opener() as store:
        for day in ("2026-11-01", "2026-11-02", "2026-11-04"):
            store.replace_day("class_metrics", "m@1", day, [metric("a"), metric("b", correct=5)])
        store.replace_day("class_metrics", "m@2", "2026-11-03", [metric("a")])
        store.replace_day("class_metrics", "m@1", "2026-11-02", [metric("a", correct=1)])  # a re-run replaces the day
        store.replace_day(
            "class_health",
            "m@1",
            "2026-11-01",
            [{"label": "a", "verdict": "healthy"}, {"label": "b", "verdict": "watch"}],
        )
        store.replace_day("class_health", "m@1", "2026-11-02", [{"label": "a", "verdict": "needs_retraining"}])
        store.commit()
    with opener() as store:
        rows = store.rows(
            "class_metrics", "m@1", start="2026-11-02", end="2026-11-04", fields=["date", "label", "correct"]
        )
        assert rows == [
            {"date": "2026-11-02", "label": "a", "correct": 1},
            {"date": "2026-11-04", "label": "a", "correct": 9},
            {"date": "2026-11-04", "label": "b", "correct": 5},
        ]
        assert [r["label"] for r in store.rows("class_metrics", None, labels=["a"])] == ["a"] * 4
        assert store.dates("class_metrics") == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
        assert store.dates("class_metrics", "m@1", after="2026-11-01", before="2026-11-04") == ["2026-11-02"]
        assert store.models_on("class_metrics", "2026-11-03") == ["m@2"] and store.measured_models() == ["m@1", "m@2"]
        latest = store.latest_rows_before("class_health", "m@1", "2026-11-04", ["a", "b", "c"])
        assert {label: (row["date"], row["verdict"]) for label, row in latest.items()} == {
            "a": ("2026-11-02", "needs_retraining"),
            "b": ("2026-11-01", "watch"),
        }
        with pytest.raises(DataError, match="repeat a label"):
            store.replace_day("class_metrics", "m@1", "2026-11-05", [metric("a"), metric("a")])
        with pytest.raises(DataError, match="has date"):
            store.replace_day("class_metrics", "m@1", "2026-11-05", [{**metric("a"), "date": "2026-11-06"}])
        assert store.dates("class_metrics", "m@1", after="2026-11-04") == []
        # A day emptied in this session is gone at once, not only after a commit or a reopening.
        store.replace_day("class_metrics", "m@2", "2026-11-03", [])
        assert remove(store, "class_health", {"date": "2026-11-02"}) == 1
        assert store.dates("class_metrics") == [
            "2026-11-01",
            "2026-11-02",
            "2026-11-04",
        ] and store.measured_models() == ["m@1"]
        assert store.dates("class_health") == ["2026-11-01"] and store.models_on("class_metrics", "2026-11-03") == []
        store.commit()
    with opener() as store:
        assert store.dates("class_metrics") == ["2026-11-01", "2026-11-02", "2026-11-04"] and store.dates(
            "class_health"
        ) == ["2026-11-01"]


def test_image_operations_agree_on_both(opener: Callable[[], Store]) -> None:
    docs = [image(f"cat/{i}.png", key=i / 10) for i in range(6)] + [
        image("dog/0.png", created=T0 + dt.timedelta(days=5))
    ]
    docs += [
        image("cat/x.txt", status="unusable", reason="not_an_image_extension"),
        image("deep/a/b.png", status="unusable", reason="wrong_depth"),
    ]
    with opener() as store:
        store.write_images(SOURCE, docs, [])
        store.commit()
    with opener() as store:
        assert store.count_images(SOURCE) == 9 and store.count_images("gs://other") == 0
        found = store.stored_images(SOURCE, {"cat": ["cat/1.png", "cat/9.png"], None: ["deep/a/b.png"]}, ["status"])
        assert found == {
            "cat/1.png": {"path": "cat/1.png", "status": "ok"},
            "deep/a/b.png": {"path": "deep/a/b.png", "status": "unusable"},
        }
        assert store.usable_labels(SOURCE) == ["cat", "dog"]
        assert store.usable_labels(SOURCE, created_by=T0 + dt.timedelta(days=1)) == ["cat"]
        window = {"$lte": T0 + dt.timedelta(days=1)}
        walked = [d["path"] for d in store.walk_class(SOURCE, "cat", window, 0.35, 4)]
        assert walked == ["cat/4.png", "cat/5.png", "cat/0.png", "cat/1.png"]  # from the pivot up, then wrapping around
        assert store.unusable_counts(SOURCE) == {"not_an_image_extension": 1, "wrong_depth": 1}
        vanished = [{"path": "cat/5.png", "label": "cat"}, {"path": "dog/0.png", "label": "dog"}]
        assert store.mark_missing(SOURCE, vanished, {"status": "missing", "reason": "vanished"}) == 2
        assert store.mark_missing(SOURCE, vanished, {"status": "missing", "reason": "vanished"}) == 0
        store.write_images(
            SOURCE,
            [],
            [
                (
                    {"source": SOURCE, "path": "cat/5.png", "label": "cat"},
                    {"$set": {"status": "ok"}, "$unset": {"reason": ""}},
                )
            ],
        )
        store.commit()
    with opener() as store:
        assert sorted(d["path"] for d in store.present_images(SOURCE)) == sorted(
            d["path"] for d in docs if d["path"] != "dog/0.png"
        )
        assert store.count_images(SOURCE, present_only=True) == 8
        assert [d["path"] for d in store.unusable_images([SOURCE], limit=2)] == ["cat/x.txt", "deep/a/b.png"]
        assert find(store, "images", {"path": "cat/5.png"})[0]["status"] == "ok"
        assert (
            find(store, "images", {"path": "cat/0.png"})[0]["created"] == T0
        )  # datetimes come back tz-aware and exact


def test_samples_runs_models_and_alerts_agree_on_both(opener: Callable[[], Store]) -> None:
    with opener() as store:
        store.save_sample(
            {"source": SOURCE, "date": "2026-11-02", "items": [{"path": "cat/1.png"}], "classes": {"cat": 1}}
        )
        store.save_sample(
            {"source": SOURCE, "date": "2026-11-02", "items": [{"path": "cat/2.png"}], "classes": {"cat": 1}}
        )
        store.record_stage(SOURCE, "2026-11-02", "index", {"listed": 3}, finished_at=T0)
        store.record_stage(SOURCE, "2026-11-02", "sample", {"images": 1}, finished_at=T0)
        store.update_run(SOURCE, "2026-11-02", {"model_id": "m@1"})
        for date in ("2026-11-03", "2026-11-02"):
            store.register_model("m@1", name="m", checksum="abc", labels=["cat"], date=date)
        alert = {
            "model_id": "m@1",
            "label": "cat",
            "date": "2026-11-02",
            "kind": "needs_retraining",
            "delivered": False,
            "created_at": T0,
        }
        assert store.add_alert(alert) and not store.add_alert({**alert, "message": "again"})
        assert store.add_alert({**alert, "label": "dog", "created_at": T0 + dt.timedelta(seconds=1)})
        assert store.withdraw_alerts("m@1", "2026-11-02", keep={("cat", "needs_retraining")}) == 1
    with opener() as store:
        assert store.sample(SOURCE, "2026-11-02") == {"source": SOURCE, "date": "2026-11-02", "classes": {"cat": 1}}
        assert store.sample(SOURCE, "2026-11-02", items=True)["items"] == [{"path": "cat/2.png"}]
        assert store.sample(SOURCE, "2026-11-03") is None
        (run,) = store.runs_on("2026-11-02")
        assert sorted(run["stages"]) == ["index", "sample"] and run["model_id"] == "m@1"
        (model,) = store.models()
        assert (model["first_date"], model["last_date"], model["labels"]) == ("2026-11-02", "2026-11-03", ["cat"])
        (pending,) = store.pending_alerts()
        store.update_alert(pending, {"$set": {"delivered": True}})
    with opener() as store:
        assert store.pending_alerts() == [] and [a["label"] for a in store.alerts("m@1")] == ["cat"]
        assert store.alerts("m@2") == [] and store.counts()["alerts"] == 1


def test_candidates_comparisons_and_evaluations_agree_on_both(opener: Callable[[], Store]) -> None:
    with opener() as store:
        assert store.add_candidate("/models/b", model_id="b@2", added_at=T0)
        assert store.add_candidate("/models/a", model_id="a@1", added_at=T0)
        assert not store.add_candidate("/models/a", model_id="a@9", added_at=T0)  # registered already: kept as it was
        for date, verdict in (("2026-11-02", "insufficient_data"), ("2026-11-03", "reject"), ("2026-11-03", "promote")):
            store.save_comparison({"candidate": "a@1", "date": date, "verdict": verdict})
        store.save_comparison({"candidate": "b@2", "date": "2026-11-03", "verdict": "reject"})
        rows = [
            {"label": "cat", "image": "md5:1", "path": "cat/1.png", "correct": True, "draw": "base"},
            {"label": "cat", "image": "md5:2", "path": "cat/2.png", "correct": False, "draw": "followup"},
            {"label": "dog", "image": "md5:3", "path": "dog/3.png", "correct": True, "draw": "base"},
        ]
        assert store.replace_evaluations("m@1", "2026-11-02", rows) == 3
        assert store.replace_evaluations("m@1", "2026-11-03", [{**rows[0], "image": "md5:5"}]) == 1
        assert (
            store.replace_evaluations("m@1", "2026-11-03", [{**rows[0], "image": "md5:4"}]) == 1
        )  # replaced, not added
        with pytest.raises(DataError):
            store.replace_evaluations("m@1", "2026-11-04", [rows[2], rows[2]])
    with opener() as store:
        assert [(c["model_dir"], c["model_id"]) for c in store.candidates()] == [
            ("/models/a", "a@1"),
            ("/models/b", "b@2"),
        ]
        assert store.remove_candidate("/models/b") and not store.remove_candidate("/models/b")
        assert [(c["candidate"], c["date"], c["verdict"]) for c in store.comparisons("a@1")] == [
            ("a@1", "2026-11-02", "insufficient_data"),
            ("a@1", "2026-11-03", "promote"),
        ]
        assert [c["date"] for c in store.comparisons("a@1", start="2026-11-03")] == ["2026-11-03"]
        assert [c["date"] for c in store.comparisons("a@1", end="2026-11-02")] == ["2026-11-02"]
        assert all("_id" not in c for c in store.comparisons("a@1")) and store.comparisons("c@3") == []
        assert store.evaluated("m@1") == {"cat": {"md5:1", "md5:2", "md5:4"}, "dog": {"md5:3"}}
        assert store.evaluated("m@1", other_than="2026-11-02") == {"cat": {"md5:4"}}
        assert store.evaluated("m@1", labels=["dog"]) == {"dog": {"md5:3"}}
        assert store.evaluated("m@2") == {}
    with opener() as store:
        assert [c["model_dir"] for c in store.candidates()] == ["/models/a"]


# --- the embedded store ------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def _files(settings: Settings) -> dict[str, tuple[int, int]]:
    root = settings.store_dir
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_reader_answers_from_the_last_commit_while_a_writer_holds_the_store_and_never_writes(
    settings: Settings,
) -> None:
    writer = open_store(settings)
    writer.replace_day("class_health", "m@1", "2026-11-01", [{"label": "a", "verdict": "healthy"}])
    writer.commit()
    writer.replace_day("class_health", "m@1", "2026-11-02", [{"label": "a", "verdict": "watch"}])  # not committed yet
    files = _files(settings)
    with open_store(settings, read_only=True) as reader:  # no wait: the writer's lock is not taken
        assert reader.dates("class_health") == ["2026-11-01"]
        writer.commit()
        assert reader.dates("class_health") == ["2026-11-01"]  # one commit at a time ...
        assert reader.refresh() and reader.dates("class_health") == [
            "2026-11-01",
            "2026-11-02",
        ]  # ... and the next when asked
        files = _files(settings)
        reader.rows("class_health", None)
        reader.counts()
    assert _files(settings) == files  # the reader wrote nothing, not even on close
    writer.close()


def test_a_reader_reads_only_the_partitions_it_asks_for(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_store(settings) as store:
        store.write_images(SOURCE, [image(f"c{i}/x.png") for i in range(20)], [])
        for day in range(1, 29):
            store.replace_day("class_health", "m@1", f"2026-11-{day:02d}", [{"label": "a", "verdict": "healthy"}])
    read: list[str] = []
    original = embedded_module.read_part_file
    monkeypatch.setattr(
        embedded_module, "read_part_file", lambda path, kind, *a: read.append(kind) or original(path, kind, *a)
    )
    with open_store(settings, read_only=True) as store:
        assert [r["date"] for r in store.rows("class_health", "m@1", start="2026-11-28")] == ["2026-11-28"]
        assert store.count_images(SOURCE) == 20  # from the manifest
    assert read == ["class_health"]


def test_commits_keep_three_backups_and_restore_goes_back_to_the_newest_that_reads(settings: Settings) -> None:
    root = settings.store_dir / settings.mongo_db
    with open_store(settings) as store:
        for day in range(1, 7):
            store.replace_day("class_health", "m@1", f"2026-11-0{day}", [{"label": "a", "verdict": "healthy"}])
            store.replace_day(
                "class_health", "m@1", "2026-11-01", [{"label": "a", "verdict": f"v{day}"}]
            )  # one partition rewritten each time
            store.commit()
    assert sorted(p.name for p in root.glob("manifest.json*")) == [
        "manifest.json",
        "manifest.json.1",
        "manifest.json.2",
        "manifest.json.3",
    ]
    kept = {p.relative_to(root).as_posix() for p in root.rglob("*.bson")}
    named = set()
    for name in ("manifest.json", "manifest.json.1", "manifest.json.2", "manifest.json.3"):
        named |= {e["file"] for e in json.loads((root / name).read_text())["parts"]}
    assert kept == named  # older files were removed, every file a backup names was kept
    newest = json.loads((root / "manifest.json").read_text())
    (first,) = [e for e in newest["parts"] if e["key"] == ["m@1", "2026-11-01"]]
    (root / first["file"]).write_bytes(b"garbage")
    with (
        pytest.raises(StoreError, match=r"unreadable.*monitor store restore.*manifest\.json\.1"),
        open_store(settings, read_only=True) as store,
    ):
        store.rows("class_health", "m@1")
    done = restore(root)
    assert done["restored_from"] == "manifest.json.1" and done["commit"] == newest["commit"] - 1
    with open_store(settings, read_only=True) as store:
        assert store.dates("class_health") == [f"2026-11-0{d}" for d in range(1, 6)]
        assert store.rows("class_health", "m@1", end="2026-11-01")[0]["verdict"] == "v5"
    assert (root / "manifest.json.bad").exists()


def test_a_second_writer_says_what_it_waits_for_and_gives_up_with_the_holder(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    root = settings.store_dir / settings.mongo_db
    with open_store(settings), caplog.at_level(logging.WARNING):
        with pytest.raises(
            StoreError, match=r"held by another writer \(pid \d+, `(?!None`)[^`]+`, since \d{4}-\d\d-\d\dT"
        ):
            EmbeddedDB(root, writable=True, lock_timeout_s=0.3, wait_message_after_s=0.1)
        assert "waiting for the embedded store" in caplog.text and "do not wait" in caplog.text
        assert any(r.getMessage().startswith(f"waiting for the embedded store {root}: pid ") for r in caplog.records)


# --- a MongoDB that fails: every operation says what it could not do, and why (closing mutants of scripts/mutation.sh) ---


class _DownCollection:
    """A collection whose every call fails as a driver does when the server is gone."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            import pymongo.errors

            raise pymongo.errors.ServerSelectionTimeoutError("127.0.0.1:27017: [Errno 111] Connection refused")

        return fail


class _DownDatabase:
    def __getitem__(self, name: str) -> _DownCollection:
        return _DownCollection()


@pytest.mark.parametrize(
    ("operation", "what"),
    [
        (lambda s: s.models(), "read the models"),
        (lambda s: find(s, "alerts"), "read alerts"),
        (lambda s: s.pending_alerts(), "read the pending alerts"),
        (lambda s: s.count_images(SOURCE), f"count the indexed images of {SOURCE}"),
        (lambda s: s.stored_images(SOURCE, {"cat": ["cat/a.jpg"]}, ["size"]), f"read indexed images of {SOURCE}"),
        (lambda s: s.unusable_counts(SOURCE), f"count the unusable images of {SOURCE}"),
        (lambda s: s.unusable_images([SOURCE], 10), "read the unusable images"),
        (lambda s: list(s.present_images(SOURCE)), f"read the indexed images of {SOURCE}"),
        (lambda s: s.rows("class_metrics", None), "read class_metrics of every model"),
        (lambda s: s.measured_models(), "read the measured models"),
        (lambda s: remove(s, "alerts", {}), "delete from alerts"),
        (
            lambda s: s.register_model("m@1", name="m", checksum="c", labels=["a"], date="2026-11-01"),
            "register model m@1",
        ),
        (lambda s: s.save_sample({"source": SOURCE, "date": "2026-11-01"}), "record the sample of 2026-11-01"),
        (lambda s: s.runs_on("2026-11-01"), None),
        (
            lambda s: s.add_alert({"model_id": "m@1", "label": "a", "date": "2026-11-01", "kind": "watch"}),
            "write an alert of m@1 on 2026-11-01",
        ),
        (
            lambda s: s.save_comparison({"candidate": "a@1", "date": "2026-11-01"}),
            "store the comparison of a@1 on 2026-11-01",
        ),
        (lambda s: s.add_candidate("/models/a", model_id="a@1", added_at=T0), "register candidate /models/a"),
        (lambda s: s.remove_candidate("/models/a"), "remove candidate /models/a"),
        (lambda s: s.candidates(), "read the candidates"),
        (lambda s: s.comparisons("a@1"), "read the comparisons of a@1"),
        (lambda s: s.alerts("m@1"), "read the alerts"),
        (lambda s: s.class_images(SOURCE, "cat", {"$lte": T0}), f"read class 'cat' of {SOURCE}"),
        (lambda s: s.walk_class(SOURCE, "cat", {"$lte": T0}, 0.5, 3), f"draw class 'cat' of {SOURCE}"),
        (lambda s: s.usable_labels(SOURCE), f"read the classes of {SOURCE}"),
        (lambda s: s.evaluated("m@1"), "read the images m@1 evaluated"),
        (lambda s: s.dates("class_health", "m@1"), "read the dates of class_health"),
        (lambda s: s.models_on("class_health", "2026-11-01"), "read the models of 2026-11-01"),
        (lambda s: s.rows("class_health", "m@1"), "read class_health of m@1"),
        (lambda s: s.replace_day("class_health", "m@1", "2026-11-01", []), "write class_health of m@1 on 2026-11-01"),
        (lambda s: s.sample(SOURCE, "2026-11-01"), "read the sample of 2026-11-01"),
        (lambda s: s.update_run(SOURCE, "2026-11-01", {"model_id": "m@1"}), "record the run of 2026-11-01"),
        (
            lambda s: s.record_stage(SOURCE, "2026-11-01", "index", {}, finished_at=T0),
            "record the index stage of 2026-11-01",
        ),
        (lambda s: s.withdraw_alerts("m@1", "2026-11-01", set()), "withdraw alerts of m@1 on 2026-11-01"),
        (lambda s: s.counts(), "count documents"),
        (lambda s: s.ensure_indexes(), "create indexes"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_failing_mongodb_is_a_store_error_that_names_the_operation_and_the_cause(
    operation: Callable[[Store], Any], what: str | None
) -> None:
    store = MongoStore(db=_DownDatabase(), description="MongoDB at 127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(StoreError) as err:
        operation(store)
    message = str(err.value)
    assert message.startswith(f"could not {what} on MongoDB at 127.0.0.1: " if what else "could not ")
    assert message.endswith("127.0.0.1:27017: [Errno 111] Connection refused")


# --- the sampling walk at its edges (closing mutants of scripts/mutation.sh) ---------------------------


def test_the_walk_starts_at_an_image_whose_key_equals_the_pivot_on_both(opener: Callable[[], Store]) -> None:
    # Stored out of key order: the walk must sort by the key, not return the documents as stored.
    docs = [image(f"cat/{i}.png", key=i / 8) for i in (5, 2, 7, 0, 4, 1, 6, 3)] + [image("dog/0.png", key=0.5)]
    with opener() as store:
        store.write_images(SOURCE, docs, [])
        window = {"$lte": T0}
        assert [d["path"] for d in store.walk_class(SOURCE, "cat", window, 4 / 8, 3)] == [
            "cat/4.png",
            "cat/5.png",
            "cat/6.png",
        ]
        assert [d["sample_key"] for d in store.walk_class(SOURCE, "cat", window, 7 / 8, 3)] == [7 / 8, 0.0, 1 / 8]


def test_the_walk_cost_on_the_embedded_store_counts_every_document_fetched_and_each_query(settings: Settings) -> None:
    late = T0 + dt.timedelta(days=3)
    # keys 0/8 .. 7/8; the images at 5/8 and 6/8 arrived after the window
    docs = [image(f"cat/{i}.png", key=i / 8, created=late if i in (5, 6) else T0) for i in range(8)] + [
        image("dog/0.png", key=0.55)
    ]
    with open_store(settings) as store:
        store.write_images(SOURCE, docs, [])
        window = {"$lte": T0 + dt.timedelta(days=1)}
        # From 4/8: 4 passes, 5 and 6 do not, 7 passes (4 fetched, 2 found), wrap: 0 passes (third found): 5 documents, 2 queries.
        assert store.walk_cost(SOURCE, "cat", window, 4 / 8, 3) == (5, 0, 2)
        # Enough before the end of the key range: one query.
        assert store.walk_cost(SOURCE, "cat", window, 0.0, 2) == (2, 0, 1)
        assert [d["path"] for d in store.walk_class(SOURCE, "cat", window, 4 / 8, 3)] == [
            "cat/4.png",
            "cat/7.png",
            "cat/0.png",
        ]


def test_listings_keep_their_documented_order_filters_and_fields_on_both(opener: Callable[[], Store]) -> None:
    with opener() as store:
        for source in ("gs://z-bucket/val", "file:///a/val"):
            store.record_stage(source, "2026-11-02", "index", {"listed": 1}, finished_at=T0)
        store.register_model("m@1", name="m", checksum="abc", labels=["cat"], date="2026-11-02")
        base = {"model_id": "m@1", "kind": "needs_retraining", "delivered": False}
        # Added newest first: the listings must sort, not keep the insertion order.
        for label, date, seconds in (("cat", "2026-11-03", 0), ("dog", "2026-11-01", 1), ("eel", "2026-11-01", 5)):
            store.add_alert({**base, "label": label, "date": date, "created_at": T0 + dt.timedelta(seconds=seconds)})
        store.replace_day("class_health", "m@1", "2026-11-01", [{"label": "a", "verdict": "healthy"}])
        store.replace_day(
            "class_health",
            "m@1",
            "2026-11-05",
            [{"label": "a", "verdict": "watch"}, {"label": "c", "verdict": "watch"}],
        )
        store.commit()
    with opener() as store:
        assert [run["source"] for run in store.runs_on("2026-11-02")] == ["file:///a/val", "gs://z-bucket/val"]
        (model,) = store.models()
        assert "_id" not in model and "checksum" not in model
        assert [a["label"] for a in store.pending_alerts()] == [
            "dog",
            "eel",
            "cat",
        ]  # oldest first: date, then creation
        assert [a["label"] for a in store.alerts("m@1")] == ["cat", "eel", "dog"]  # newest first
        assert [a["label"] for a in store.alerts("m@1", start="2026-11-02")] == ["cat"]
        assert [a["label"] for a in store.alerts("m@1", end="2026-11-02")] == ["eel", "dog"]
        latest = store.latest_rows_before("class_health", "m@1", "2026-11-04", ["a", "c"])
        assert {label: row["date"] for label, row in latest.items()} == {
            "a": "2026-11-01"
        }  # nothing on or after the date


def test_the_walk_cost_on_mongodb_sums_explain_of_each_query_until_enough_are_returned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = iter(
        [
            {"executionStats": {"totalDocsExamined": 4, "totalKeysExamined": 6, "nReturned": 2}},
            {"executionStats": {"totalDocsExamined": 3, "totalKeysExamined": 5, "nReturned": 1}},
        ]
    )
    asked: list[int] = []

    def explain(cursor: Any) -> dict[str, Any]:
        asked.append(cursor._limit)
        return next(answers)

    monkeypatch.setattr(
        mongomock.collection.Cursor, "explain", explain, raising=False
    )  # mongomock has none: MongoDB's answers
    store = MongoStore(
        db=mongomock.MongoClient(tz_aware=True)[f"monitor_test_{uuid.uuid4().hex[:12]}"], description="mongomock"
    )
    store.ensure_indexes()
    store.write_images(SOURCE, [image(f"cat/{i}.png", key=i / 8) for i in range(8)], [])

    # 3 wanted: the query from the pivot returns 2, the wrapped-around one is asked for the 1 left.
    assert store.walk_cost(SOURCE, "cat", {"$lte": T0}, 0.5, 3) == (7, 11, 2)
    assert asked == [3, 1]


def test_present_images_are_path_and_label_of_one_source_only_on_both(opener: Callable[[], Store]) -> None:
    with opener() as store:
        store.write_images(
            SOURCE,
            [image("cat/a.png"), image("dog/b.png"), image("cat/gone.png", status="missing", reason="vanished")],
            [],
        )
        store.write_images("gs://other/val", [{**image("cat/z.png"), "source": "gs://other/val"}], [])
        assert sorted(store.present_images(SOURCE), key=lambda d: d["path"]) == [
            {"path": "cat/a.png", "label": "cat"},
            {"path": "dog/b.png", "label": "dog"},
        ]
        assert store.count_images(SOURCE) == 3 and store.count_images(SOURCE, present_only=True) == 2
        assert store.usable_labels("gs://other/val") == ["cat"]


def test_present_images_are_streamed_not_gathered_into_a_list(settings: Settings) -> None:
    """The vanished-blob check reads every present path of a source: a million-image index must not become one list."""
    import tracemalloc

    with open_store(settings) as store:
        store.write_images(SOURCE, [image(f"c{i % 4}/{i:06d}.png") for i in range(40_000)], [])
        store.commit()
    with open_store(settings, read_only=True) as store:
        assert sum(1 for _ in store.present_images(SOURCE)) == 40_000  # partitions decoded and kept by the store
        stream = store.present_images(SOURCE)
        tracemalloc.start()
        try:
            seen = sum(1 for _ in stream)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert seen == 40_000
    # A list of 40,000 {path, label} dicts takes ~9 MB; one at a time, a few kB.
    assert peak < 1_000_000, peak


def test_the_store_info_says_its_commit_partitions_and_backups(settings: Settings) -> None:
    with open_store(settings) as store:
        for day in ("2026-11-01", "2026-11-02"):
            store.replace_day("class_metrics", "m@1", day, [metric("a")])
            store.commit()
    with open_store(settings) as store:  # what the files say, not the writer's memory
        info = store.info()
    assert info["partitions"] == 2 and info["bytes"] > 0 and info["commit"] >= 2
    assert dt.datetime.fromisoformat(info["committed_at"]).tzinfo is not None
    assert info["backups"] and all(name.startswith("manifest.json.") for name in info["backups"])


def test_an_update_alone_is_committed_with_its_partition(settings: Settings) -> None:
    with open_store(settings) as store:
        store.write_images(SOURCE, [image("cat/a.png")], [])
    with open_store(settings) as store:  # a later run changes one image and writes nothing else
        store.write_images(
            SOURCE, [], [({"source": SOURCE, "path": "cat/a.png", "label": "cat"}, {"$set": {"size": 99}})]
        )
    with open_store(settings) as store:
        assert find(store, "images", {"path": "cat/a.png"})[0]["size"] == 99


def test_a_store_no_commit_of_which_reads_is_not_restored_and_says_why_for_each(settings: Settings) -> None:
    root = settings.store_dir / settings.mongo_db
    with open_store(settings) as store:
        for day in (1, 2):
            store.replace_day("class_health", "m@1", "2026-11-01", [{"label": "a", "verdict": f"v{day}"}])
            store.commit()
    for part in root.rglob("*.bson"):
        part.write_bytes(b"garbage")
    (root / "manifest.json.1").write_text("{damaged")

    with pytest.raises(
        StoreError,
        match=r"no commit of the embedded store .* reads \(manifest\.json: .*not BSON \((?!None\))[^)]+\).*; manifest\.json\.1: ",
    ) as err:
        restore(root)
    assert "move" in str(err.value) and not (root / "manifest.json.bad").exists()


def test_a_commit_writes_each_changed_partition_once_and_says_how_many(settings: Settings) -> None:
    db = EmbeddedDB(settings.store_dir / settings.mongo_db, writable=True)
    try:
        for day in ("2026-11-01", "2026-11-02"):
            key = ("m@1", day)
            db.touched("class_health", key)
            db.collection("class_health", key).insert_one({"model_id": "m@1", "date": day, "label": "a"})
        assert db.commit() == 2
        assert db.commit() == 0  # nothing changed since
        assert db.info()["partitions"] == 2
    finally:
        db.close()


# --- what the mutation run found untested at the store layer (scripts/mutation.sh store) ----------------


def test_class_images_are_the_usable_images_of_one_class_and_source_created_in_the_window_on_both(
    opener: Callable[[], Store],
) -> None:
    late = T0 + dt.timedelta(days=5)
    docs = [
        image("cat/0.png", key=0.1),
        image("cat/1.png", key=0.2, created=late),
        image("cat/x.txt", status="unusable", reason="not_an_image_extension"),
        image("cat/gone.png", status="missing", reason="vanished"),
        image("dog/0.png"),
    ]
    with opener() as store:
        store.write_images(SOURCE, docs, [])
        store.write_images("gs://other/val", [{**image("cat/9.png"), "source": "gs://other/val"}], [])
        store.commit()
    with opener() as store:
        early = store.class_images(SOURCE, "cat", {"$lte": T0 + dt.timedelta(days=1)})
        assert early == [
            {"path": "cat/0.png", "label": "cat", "sample_key": 0.1, "created": T0, "checksum": "c"}
        ]  # the sampling fields only: no status, no _id
        later = store.class_images(SOURCE, "cat", {"$gte": T0 + dt.timedelta(days=1), "$lte": late})
        assert [d["path"] for d in later] == ["cat/1.png"]
        assert store.class_images(SOURCE, "eel", {"$lte": late}) == []


def test_models_fall_back_to_the_measured_ones_until_one_is_registered_on_both(opener: Callable[[], Store]) -> None:
    with opener() as store:
        assert store.models() == []
        store.replace_day("class_metrics", "m@2", "2026-11-01", [metric("a")])
        assert store.models() == [{"model_id": "m@2"}]
        store.register_model("m@1", name="m", checksum="abc", labels=["a"], date="2026-11-01")
        assert [m["model_id"] for m in store.models()] == ["m@1"]


def test_alerts_are_filtered_by_label_and_pending_on_both(opener: Callable[[], Store]) -> None:
    base = {"model_id": "m@1", "date": "2026-11-02", "kind": "needs_retraining", "created_at": T0}
    with opener() as store:
        store.add_alert({**base, "label": "cat", "delivered": False})
        store.add_alert({**base, "label": "dog", "delivered": True})
        store.add_alert({**base, "label": "eel", "delivered": False, "model_id": "m@2"})
        assert [a["label"] for a in store.alerts("m@1", labels=["dog", "fox"])] == ["dog"]
        assert store.alerts("m@1", labels=[]) == []
        assert [a["label"] for a in store.alerts("m@1", pending_only=True)] == ["cat"]
        assert sorted(a["label"] for a in store.alerts(labels=["cat", "eel"])) == ["cat", "eel"]  # every model


def test_rows_come_in_date_then_label_order_whatever_order_they_were_written_in_on_both(
    opener: Callable[[], Store],
) -> None:
    with opener() as store:
        store.replace_day("class_metrics", "m@1", "2026-11-02", [metric("b"), metric("a")])
        store.replace_day("class_metrics", "m@1", "2026-11-01", [metric("c")])
        store.commit()
    with opener() as store:
        rows = store.rows("class_metrics", "m@1")
        assert [(r["date"], r["label"]) for r in rows] == [
            ("2026-11-01", "c"),
            ("2026-11-02", "a"),
            ("2026-11-02", "b"),
        ]
        assert all("_id" not in r for r in rows)


def test_stored_images_are_those_of_the_source_asked_for_when_another_source_has_the_same_path_on_both(
    opener: Callable[[], Store],
) -> None:
    with opener() as store:
        store.write_images(SOURCE, [image("cat/a.png")], [])
        store.write_images("gs://other/val", [{**image("cat/a.png"), "source": "gs://other/val", "size": 99}], [])
        store.commit()
    with opener() as store:
        assert store.stored_images(SOURCE, {"cat": ["cat/a.png"]}, ["size"]) == {
            "cat/a.png": {"path": "cat/a.png", "size": 10}
        }


def test_day_versions_name_a_new_file_only_for_the_days_that_changed(settings: Settings) -> None:
    with open_store(settings) as store:
        for day in ("2026-11-01", "2026-11-02"):
            store.replace_day("class_health", "m@1", day, [{"label": "a", "verdict": "healthy"}])
        store.replace_day("class_health", "m@2", "2026-11-03", [{"label": "a", "verdict": "healthy"}])
        store.commit()
        first = store.day_versions("class_health", "m@1")
        assert first is not None and sorted(first) == ["2026-11-01", "2026-11-02"]
        assert all(token.startswith("class_health/") and token.endswith(".bson") for token in first.values())
        assert len(set(first.values())) == 2
        store.replace_day("class_health", "m@1", "2026-11-02", [{"label": "a", "verdict": "watch"}])
        assert store.day_versions("class_health", "m@1") is None  # changed since the last commit: no version yet
        store.commit()
        second = store.day_versions("class_health", "m@1")
    assert second is not None and second["2026-11-01"] == first["2026-11-01"]
    assert second["2026-11-02"] != first["2026-11-02"]
    with open_store(settings, read_only=True) as reader:
        assert reader.day_versions("class_health", "m@1") == second
        assert reader.day_versions("class_health", "m@9") == {}
        with pytest.raises(ValueError, match="not a per-day collection"):
            reader.day_versions("alerts", "m@1")
    mongodb = _mongodb(f"monitor_test_{uuid.uuid4().hex[:12]}")
    mongodb.replace_day("class_health", "m@1", "2026-11-01", [{"label": "a", "verdict": "healthy"}])
    assert mongodb.day_versions("class_health", "m@1") is None  # no commits: a reader re-reads everything


def test_a_reader_refreshing_drops_only_the_partitions_whose_file_changed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def version(store: Store, day: str) -> Any:
        sample = store.sample(SOURCE, day)
        assert sample is not None
        return sample["version"]

    with open_store(settings) as writer:
        for day in ("2026-11-01", "2026-11-02"):
            writer.save_sample({"source": SOURCE, "date": day, "version": 1})
        writer.commit()
        reader = open_store(settings, read_only=True)
        try:
            assert [version(reader, day) for day in ("2026-11-01", "2026-11-02")] == [1, 1]
            writer.save_sample({"source": SOURCE, "date": "2026-11-01", "version": 2})
            writer.commit()
            read: list[str] = []
            original = embedded_module.read_part_file

            def counted(path: Path, kind: str, key: tuple[str, ...], *args: Any) -> list[dict[str, Any]]:
                read.append("/".join(key))
                return original(path, kind, key, *args)

            monkeypatch.setattr(embedded_module, "read_part_file", counted)
            assert reader.refresh() and not reader.refresh()  # the new commit once, then nothing new
            assert [version(reader, day) for day in ("2026-11-01", "2026-11-02")] == [2, 1]
            assert read == [f"{SOURCE}/2026-11-01"]  # the unchanged partition stays loaded
        finally:
            reader.close()


def test_a_reader_three_commits_behind_follows_the_latest_commit_when_its_files_are_gone(settings: Settings) -> None:
    with open_store(settings) as writer:
        for day in ("2026-11-01", "2026-11-02"):
            writer.replace_day("class_health", "m@1", day, [{"label": "a", "verdict": "v1"}])
        writer.commit()
        # Both at commit 1, nothing read yet: one reads a partition since emptied first, the other one since rewritten.
        readers = [open_store(settings, read_only=True) for _ in range(2)]
        try:
            writer.replace_day("class_health", "m@1", "2026-11-01", [])
            for version in range(2, 6):  # four commits: commit 1's files are no backup's any more
                writer.replace_day("class_health", "m@1", "2026-11-02", [{"label": "a", "verdict": f"v{version}"}])
                writer.commit()
            assert [(r["date"], r["verdict"]) for r in readers[0].rows("class_health", "m@1")] == [("2026-11-02", "v5")]
            assert [r["verdict"] for r in readers[1].rows("class_health", "m@1", start="2026-11-02")] == ["v5"]
        finally:
            for reader in readers:
                reader.close()


def test_open_mongodb_pings_connects_tz_aware_and_creates_the_indexes(monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.store import mongo as mongo_module

    made: list[dict[str, Any]] = []

    def client(uri: str, **options: Any) -> Any:
        made.append({"uri": uri, **options})
        return mongomock.MongoClient(**options)

    monkeypatch.setattr(mongo_module.pymongo, "MongoClient", client)
    settings = Settings(mongo_uri="mongodb://u:Pw7Qx9Stor@db.example:27017/?authSource=admin", mongo_timeout_ms=1234)
    store = mongo_module.open_mongodb(settings)
    assert made == [
        {
            "uri": "mongodb://u:Pw7Qx9Stor@db.example:27017/?authSource=admin",
            "serverSelectionTimeoutMS": 1234,
            "tz_aware": True,
        }
    ]
    assert store.description == "MongoDB mongodb://***@db.example:27017/?authSource=***"
    assert "sampling" in store._db["images"].index_information()
    store.write_images(SOURCE, [image("cat/a.png")], [])
    (doc,) = find(store, "images")
    assert doc["created"] == T0 and doc["created"].tzinfo is not None  # times come back as they were written
    store.close()


def test_open_mongodb_on_an_unreachable_server_is_one_store_error_without_the_password() -> None:
    from monitor.store.mongo import open_mongodb

    settings = Settings(mongo_uri="mongodb://u:Pw7Qx9Stor@127.0.0.1:9/?authSource=admin", mongo_timeout_ms=100)
    with pytest.raises(StoreError, match=r"^MongoDB at mongodb://\*\*\*@127\.0\.0\.1:9/\S* is unreachable: \S") as err:
        open_mongodb(settings)
    assert "Pw7Qx9Stor" not in str(err.value) and "\n" not in str(err.value)


def test_mongodb_keeps_the_image_another_indexer_inserted_first_and_inserts_the_rest() -> None:
    store = _mongodb(f"monitor_test_{uuid.uuid4().hex[:12]}")
    store.write_images(SOURCE, [image("cat/a.png")], [])
    store.write_images(SOURCE, [{**image("cat/a.png"), "size": 99}, image("cat/b.png")], [])
    assert sorted((d["path"], d["size"]) for d in find(store, "images")) == [("cat/a.png", 10), ("cat/b.png", 10)]


def test_the_walk_cost_on_mongodb_explains_the_queries_of_the_walk_and_counts_what_explain_leaves_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[Any, Any, int]] = []

    def explain(cursor: Any) -> dict[str, Any]:
        # mongomock keeps the filter with its times made naive: the window is checked on its own
        spec = dict(cursor._spec)
        created = spec.pop("created")
        assert list(created) == ["$lte"] and created["$lte"].replace(tzinfo=UTC) == T0
        asked.append((spec, cursor._sort, cursor._limit))
        return {}  # no executionStats (a plan-only answer): nothing counted but the queries

    monkeypatch.setattr(mongomock.collection.Cursor, "explain", explain, raising=False)  # type: ignore[attr-defined]
    store = _mongodb(f"monitor_test_{uuid.uuid4().hex[:12]}")
    window = {"$lte": T0}
    assert store.walk_cost(SOURCE, "cat", window, 0.5, 3) == (0, 0, 2)
    base = {"source": SOURCE, "status": "ok", "label": "cat"}
    assert asked == [
        ({**base, "sample_key": {"$gte": 0.5}}, [("sample_key", 1)], 3),
        ({**base, "sample_key": {"$lt": 0.5}}, [("sample_key", 1)], 3),
    ]


class _DownPartitions:
    """The embedded store's partitions behind a mongomock that fails as a driver does (the engine's error path)."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            import pymongo.errors

            raise pymongo.errors.OperationFailure("the query failed")

        return fail


@pytest.mark.parametrize(
    ("operation", "what"),
    [
        (lambda s: s.rows("class_health", None), "read class_health of every model"),
        (lambda s: s.rows("class_health", "m@1"), "read class_health of m@1"),
        (lambda s: s.count_images(SOURCE), f"count the indexed images of {SOURCE}"),
        (lambda s: s.stored_images(SOURCE, {"cat": ["cat/a.jpg"]}, ["size"]), f"read indexed images of {SOURCE}"),
        (lambda s: s.usable_labels(SOURCE), f"read the classes of {SOURCE}"),
        (lambda s: list(s.present_images(SOURCE)), f"read the indexed images of {SOURCE}"),
        (lambda s: s.evaluated("m@1"), "read the images m@1 evaluated"),
        (lambda s: s.dates("class_health"), "read the dates of class_health"),
        (lambda s: s.models_on("class_health", "2026-11-01"), "read the models of 2026-11-01"),
        (lambda s: s.measured_models(), "read the measured models"),
        (lambda s: s.write_images(SOURCE, [image("cat/a.png")], []), f"write 1 image documents of {SOURCE}"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_failing_embedded_engine_is_a_store_error_that_names_the_operation_and_the_store(
    operation: Callable[[Store], Any], what: str, settings: Settings
) -> None:
    store = open_store(settings)
    partitions, store._db = store._db, _DownPartitions()  # type: ignore[attr-defined]
    try:
        with pytest.raises(StoreError) as err:
            operation(store)
    finally:
        store._db = partitions  # type: ignore[attr-defined]
        store.close()
    root = settings.store_dir / settings.mongo_db
    assert str(err.value) == f"could not {what} on embedded store {root}: the query failed"
