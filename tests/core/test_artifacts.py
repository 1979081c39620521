"""The artifact store on both engines (a local folder, a bucket on the GCS emulator): the same behaviour, key by key."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.core.artifacts import (
    ArtifactMissing,
    Artifacts,
    GCSArtifacts,
    LocalArtifacts,
    artifacts_for,
    open_artifacts,
)
from monitor.core.errors import ConfigError, DataError, SourceError
from monitor.core.settings import Settings


@pytest.fixture(params=["local", "gcs"])
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Artifacts]:
    if request.param == "local":
        yield LocalArtifacts(tmp_path / "artifacts")
    else:
        emulator = request.getfixturevalue("gcs_emulator")
        bucket = f"art-{uuid.uuid4().hex[:12]}"
        emulator.create_bucket(bucket)
        yield GCSArtifacts(bucket, "runs/prod", client=emulator.client())


def test_what_is_written_reads_back_byte_for_byte_from_a_second_handle(artifacts: Artifacts) -> None:
    data = bytes(range(256)) * 40
    where = artifacts.write("predictions/2026-11-20.parquet", data, what="predictions file")
    assert where == artifacts.location("predictions/2026-11-20.parquet")
    # Another "host": a new handle on the same URI sees the file.
    other = open_artifacts(artifacts.uri) if isinstance(artifacts, LocalArtifacts) else artifacts
    assert other.read("predictions/2026-11-20.parquet", what="predictions file") == data
    assert other.exists("predictions/2026-11-20.parquet") and not other.exists("predictions/2026-11-21.parquet")


def test_a_missing_artifact_is_one_error_naming_where_it_was_looked_for(artifacts: Artifacts) -> None:
    with pytest.raises(ArtifactMissing) as caught:
        artifacts.read("samples/2026-11-20.csv", what="sample file")
    assert str(caught.value) == f"sample file {artifacts.location('samples/2026-11-20.csv')} does not exist"
    assert isinstance(caught.value, DataError) and artifacts.stamp("samples/2026-11-20.csv") is None


def test_the_stamp_changes_when_the_file_is_rewritten_and_not_when_it_is_read(artifacts: Artifacts) -> None:
    artifacts.write("cache/x.json", b"{}", what="cache")
    first = artifacts.stamp("cache/x.json")
    artifacts.read("cache/x.json", what="cache")
    assert artifacts.stamp("cache/x.json") == first
    artifacts.write("cache/x.json", b'{"a": 1}', what="cache")
    assert artifacts.stamp("cache/x.json") not in (None, first)


def test_listing_names_only_the_files_and_folders_directly_in_a_folder(artifacts: Artifacts) -> None:
    for key in (
        "predictions/2026-11-20.parquet",
        "predictions/2026-11-21.parquet",
        "predictions/notes.txt",
        "predictions/candidates/a@1/2026-11-20.parquet",
        "predictions/candidates/b@2/2026-11-21.parquet",
        "predictionsX/2026-11-22.parquet",
    ):
        artifacts.write(key, b"x", what="file")
    assert artifacts.names("predictions", ".parquet") == ["2026-11-20.parquet", "2026-11-21.parquet"]
    assert artifacts.folders("predictions") == ["candidates"]
    assert artifacts.folders("predictions/candidates") == ["a@1", "b@2"]
    assert artifacts.names("nothing/here", ".parquet") == [] and artifacts.folders("nothing") == []


def test_a_file_over_the_bound_is_refused_before_it_is_read_whole(artifacts: Artifacts) -> None:
    artifacts.write("samples/big.csv", b"x" * 1000, what="sample file")
    with pytest.raises(DataError, match=r"^cannot read the sample file .*big\.csv: it (is )?.*(1000|more than 999)"):
        artifacts.read("samples/big.csv", what="sample file", max_bytes=999)
    assert len(artifacts.read("samples/big.csv", what="sample file", max_bytes=1000)) == 1000


@pytest.mark.parametrize("key", ["../escape", "/abs/path", "a/../../b", "a\\b", "", "a/./b"])
def test_a_key_that_could_leave_the_root_is_refused(artifacts: Artifacts, key: str) -> None:
    with pytest.raises(ConfigError, match="is not a relative path of plain names"):
        artifacts.write(key, b"x", what="file")


def test_a_local_reader_never_sees_half_a_file_while_a_writer_rewrites_it(tmp_path: Path) -> None:
    store = LocalArtifacts(tmp_path)
    old, new = b"a" * 4_000_000, b"b" * 4_000_000
    store.write("predictions/d.parquet", old, what="file")
    reads: list[int] = []
    odd: list[int] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            data = store.read("predictions/d.parquet", what="file")
            reads.append(len(data))
            if data not in (old, new):
                odd.append(len(data))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(20):
            store.write("predictions/d.parquet", new, what="file")
            store.write("predictions/d.parquet", old, what="file")
    finally:
        done.set()
        thread.join()
    assert reads and odd == []
    assert [p.name for p in (tmp_path / "predictions").iterdir()] == ["d.parquet"]  # no temporary file left


def test_a_local_reader_refuses_a_fifo_in_place_of_a_file_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "samples").mkdir()
    os.mkfifo(tmp_path / "samples" / "2026-11-20.csv")
    with pytest.raises(DataError, match="FIFO"):
        LocalArtifacts(tmp_path).read("samples/2026-11-20.csv", what="sample file")


def test_a_bucket_that_does_not_exist_is_a_source_error_naming_it(gcs_emulator) -> None:
    store = GCSArtifacts("no-such-bucket-" + uuid.uuid4().hex[:8], "p", client=gcs_emulator.client())
    with pytest.raises(SourceError, match=r"^bucket gs://no-such-bucket-\w+ does not exist"):
        store.folders("predictions/candidates")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("gs://bucket/a/b/", "gs://bucket/a/b"),
        ("GS://bucket", "gs://bucket"),
        ("file:///srv/artifacts", "/srv/artifacts"),
    ],
)
def test_the_setting_takes_a_bucket_a_file_uri_or_a_folder(uri: str, expected: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", artifacts_uri=uri)
    assert settings.artifacts_uri == expected and artifacts_for(settings).uri == expected
    assert (settings.local_artifacts_dir is None) == expected.startswith("gs://")


def test_the_default_is_the_data_dir_and_a_relative_folder_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings(data_dir=tmp_path / "data").artifacts_uri == str(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=tmp_path / "data", artifacts_uri="shared/art")
    assert settings.artifacts_uri == str(tmp_path / "shared" / "art")
    assert settings.samples_dir == tmp_path / "shared" / "art" / "samples"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://bucket/x", "scheme 's3' is not supported"),
        ("gs:///x", "names no bucket"),
        ("gs://bucket/x?generation=1", "must not carry a query"),
        ("file://host/x", "names a host"),
    ],
)
def test_an_artifacts_uri_that_names_no_usable_place_is_refused_at_load(uri: str, message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        Settings(artifacts_uri=uri)


@pytest.mark.parametrize(
    ("source", "artifacts"),
    [("gs://b/val", "gs://b/val/artifacts"), ("gs://b/val", "gs://b/val"), ("SOURCE", "SOURCE/art")],
)
def test_artifacts_inside_the_image_source_are_refused_since_they_would_be_indexed_as_a_class(
    source: str, artifacts: str, tmp_path: Path
) -> None:
    from pydantic import ValidationError

    source, artifacts = (v.replace("SOURCE", str(tmp_path / "val")) for v in (source, artifacts))
    with pytest.raises(ValidationError, match="lies inside the image source"):
        Settings(data_dir=tmp_path / "data", source_uri=source, artifacts_uri=artifacts)
    # Beside the source, or holding it (the default: the data dir holds the demo source), is fine.
    assert Settings(data_dir=tmp_path / "data", source_uri=source, artifacts_uri="gs://b/valx").artifacts_uri
    assert Settings(data_dir=tmp_path / "data").artifacts_uri == str(tmp_path / "data")
