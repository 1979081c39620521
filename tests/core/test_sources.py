"""Image sources: local folders and GCS (emulator on loopback, and a paging HTTP transport) behind one interface."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from monitor.core.errors import ConfigError, SourceError
from monitor.core.sources import (
    CHECK_RETRY_TIMEOUT_S,
    LIST_PAGES_AHEAD,
    GCSSource,
    ImageSource,
    LocalSource,
    open_source,
)

ESCAPING_PATHS = [
    "../outside.jpg",
    "/etc/passwd",
    "Cat/../../outside.jpg",
    "Cat/./a.jpg",
    "Cat//a.jpg",
    "",
    "Cat/a.jpg\x00",
]


def _write(root: Path, rel: str, data: bytes, when: dt.datetime | None = None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if when is not None:
        os.utime(path, (when.timestamp(), when.timestamp()))
    return path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- local folders -------------------------------------------------------------------------------


def test_local_source_lists_every_file_with_relative_paths_sizes_and_times(tmp_path: Path) -> None:
    when = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    _write(tmp_path, "Cat/a.jpg", b"abc", when)
    _write(tmp_path, "Dog/b.png", b"12345", when)
    _write(tmp_path, "notes.txt", b"x", when)
    _write(tmp_path, "Dog/deeper/c.jpg", b"", when)

    blobs = {blob.path: blob for blob in LocalSource(tmp_path).list()}

    assert sorted(blobs) == ["Cat/a.jpg", "Dog/b.png", "Dog/deeper/c.jpg", "notes.txt"]
    assert blobs["Dog/b.png"].size == 5
    assert blobs["Cat/a.jpg"].created == when == blobs["Cat/a.jpg"].updated
    assert blobs["Cat/a.jpg"].created.tzinfo is not None


def test_local_checksum_changes_when_a_file_is_rewritten(tmp_path: Path) -> None:
    _write(tmp_path, "Cat/a.jpg", b"abc", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    source = LocalSource(tmp_path)
    before = next(iter(source.list())).checksum
    _write(tmp_path, "Cat/a.jpg", b"abd", dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    after = next(iter(source.list())).checksum
    assert before != after


def test_local_source_reads_bytes_by_listed_path(tmp_path: Path) -> None:
    _write(tmp_path, "Cat/a.jpg", b"\xff\xd8 jpeg bytes")
    source = LocalSource(tmp_path)
    assert [source.read(blob.path) for blob in source.list()] == [b"\xff\xd8 jpeg bytes"]


@pytest.mark.parametrize("path", ESCAPING_PATHS)
def test_local_read_refuses_paths_outside_the_root(tmp_path: Path, path: str) -> None:
    (tmp_path / "outside.jpg").write_bytes(b"secret")
    root = tmp_path / "root"
    _write(root, "Cat/a.jpg", b"x")
    with pytest.raises(SourceError, match="path"):
        LocalSource(root).read(path)


def test_symlinks_are_listed_as_links_never_followed_and_never_read_outside(tmp_path: Path) -> None:
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.jpg").write_bytes(b"b")
    root = tmp_path / "root"
    _write(root, "Cat/a.jpg", b"x")
    (root / "Cat" / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    (root / "Dog").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    source = LocalSource(root)
    # Listed (so the indexer counts them as skipped), flagged as links, and a linked folder is not entered.
    assert [(blob.path, blob.symlink) for blob in source.list()] == [
        ("Cat/a.jpg", False),
        ("Cat/link.jpg", True),
        ("Dog", True),
    ]
    with pytest.raises(SourceError, match="outside"):
        source.read("Cat/link.jpg")


def test_local_read_of_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="Cat/gone.jpg does not exist"):
        LocalSource(tmp_path).read("Cat/gone.jpg")


def test_missing_local_folder_is_a_source_error(tmp_path: Path) -> None:
    source = LocalSource(tmp_path / "nowhere")
    with pytest.raises(SourceError, match="nowhere does not exist"):
        source.check()
    with pytest.raises(SourceError, match="does not exist"):
        list(source.list())


# --- open_source ------------------------------------------------------------------------------------


def test_plain_paths_and_file_uris_open_the_same_canonical_local_source(tmp_path: Path) -> None:
    folder = tmp_path / "with space"
    folder.mkdir()
    plain = open_source(str(folder))
    from_uri = open_source(folder.as_uri())
    assert isinstance(plain, LocalSource) and isinstance(from_uri, LocalSource)
    assert plain.uri == from_uri.uri == folder.as_uri()
    assert plain.uri.startswith("file:///")
    assert isinstance(plain, ImageSource)


@pytest.mark.parametrize(
    ("uri", "bucket", "canonical"),
    [
        ("gs://bkt/val/images/", "bkt", "gs://bkt/val/images"),
        ("gs://bkt", "bkt", "gs://bkt"),
        ("gs://bkt/", "bkt", "gs://bkt"),
    ],
)
def test_gs_uris_open_a_gcs_source_with_a_normalised_prefix(uri: str, bucket: str, canonical: str) -> None:
    source = open_source(uri)
    assert isinstance(source, GCSSource)
    assert source.bucket == bucket
    assert source.uri == canonical


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://b/p", "unsupported scheme"),
        ("gs:///p", "names no bucket"),
        ("", "empty"),
        ("file://host/x", "remote host"),
    ],
)
def test_malformed_source_uris_are_config_errors(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_source(uri)


@pytest.mark.parametrize("path", ESCAPING_PATHS)
def test_gcs_read_refuses_paths_outside_the_prefix_before_any_request(path: str) -> None:
    with pytest.raises(SourceError, match="path"):
        GCSSource("bkt", "val").read(path)


# --- GCS paging, against the real client over a paging HTTP transport -------------------------------


class PagingTransport(requests.adapters.BaseAdapter):
    """Answers the JSON API's object listing with real pages (maxResults / pageToken), as GCS does.

    The emulator ignores page size and returns every object at once, so this transport is how
    the client's paging is exercised: it records each listing request it serves.
    """

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = sorted(names)
        self.listings: list[dict[str, list[str]]] = []

    def _resource(self, name: str) -> dict[str, object]:
        data = name.encode()
        return {
            "kind": "storage#object",
            "name": name,
            "bucket": "bkt",
            "size": str(len(data)),
            "md5Hash": base64.b64encode(hashlib.md5(data).digest()).decode(),
            "crc32c": "AAAAAA==",
            "generation": "1700000000000001",
            "timeCreated": "2026-01-02T03:04:05.678Z",
            "updated": "2026-01-02T03:04:05.678Z",
        }

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        url = urlsplit(request.url)
        query = parse_qs(url.query)
        if not url.path.endswith("/o"):
            # The client looks up bucket metadata in the background (for tracing); not a listing.
            return self._reply(request, {"kind": "storage#bucket", "name": "bkt", "location": "EU"})
        self.listings.append(query)
        prefix = query.get("prefix", [""])[0]
        size = int(query.get("maxResults", ["1000"])[0])
        start = int(query.get("pageToken", ["0"])[0])
        matching = [n for n in self.names if n.startswith(prefix)]
        body: dict[str, object] = {
            "kind": "storage#objects",
            "items": [self._resource(n) for n in matching[start : start + size]],
        }
        if start + size < len(matching):
            body["nextPageToken"] = str(start + size)
        return self._reply(request, body)

    def _reply(self, request, body: dict[str, object]) -> requests.Response:  # type: ignore[no-untyped-def]
        response = requests.Response()
        response.status_code = 200
        response._content = json.dumps(body).encode()
        response.headers["Content-Type"] = "application/json"
        response.url = request.url
        response.request = request
        return response

    def close(self) -> None:
        pass


def _paging_client(transport: PagingTransport):  # type: ignore[no-untyped-def]
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    session = requests.Session()
    session.mount("http://", transport)
    return storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        _http=session,
        client_options={"api_endpoint": "http://paging.invalid"},
    )


def test_gcs_listing_streams_page_by_page_with_the_page_size_sent_to_the_api() -> None:
    names = [f"val/Cat/{i:02d}.jpg" for i in range(7)] + ["val/Dog/", "other/Cat/x.jpg"]
    transport = PagingTransport(names)
    source = GCSSource("bkt", "val", client=_paging_client(transport), page_size=3)

    listing = source.list()
    first = next(listing)
    rest = list(listing)

    assert len(transport.listings) == 3
    assert all(q["maxResults"] == ["3"] and q["prefix"] == ["val/"] for q in transport.listings)
    assert [q.get("pageToken") for q in transport.listings] == [None, ["3"], ["6"]]
    # the folder placeholder "val/Dog/" is skipped, nothing outside the prefix is listed
    assert [first.path] + [b.path for b in rest] == [f"Cat/{i:02d}.jpg" for i in range(7)]
    assert rest[-1].created == dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    assert rest[-1].checksum.endswith("@1700000000000001")


def test_gcs_listing_requests_the_next_pages_ahead_but_only_a_bounded_few() -> None:
    names = [f"val/Cat/{i:03d}.jpg" for i in range(60)]
    transport = PagingTransport(names)
    source = GCSSource("bkt", "val", client=_paging_client(transport), page_size=3)  # 20 pages

    listing = source.list()
    assert next(listing).path == "Cat/000.jpg"
    deadline = time.monotonic() + 10
    while len(transport.listings) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(transport.listings) >= 2, "the next page is requested while the caller works on this one"
    time.sleep(0.3)  # time enough for an unbounded producer to list all 20 pages
    # the page being consumed, LIST_PAGES_AHEAD waiting, and one more held by the thread until there is room
    assert len(transport.listings) <= 1 + LIST_PAGES_AHEAD + 1

    listing.close()  # stopping early stops the listing thread: no more requests
    stopped_at = len(transport.listings)
    time.sleep(0.2)
    assert len(transport.listings) == stopped_at
    assert not any(t.name == "list-bkt" for t in threading.enumerate())


def test_gcs_listing_errors_in_the_listing_thread_reach_the_caller_as_source_errors() -> None:
    from google.api_core import exceptions as gexc

    class Failing:
        def list_blobs(self, *args: object, **kwargs: object) -> object:
            raise gexc.Forbidden("caller does not have storage.objects.list access")

    source = GCSSource("bkt", "val", client=Failing(), page_size=3)  # type: ignore[arg-type]
    with pytest.raises(SourceError, match="listing objects") as info:
        list(source.list())
    assert "storage.objects.list" in str(info.value)


# --- GCS against the emulator ---------------------------------------------------------------------------


@pytest.mark.gcs
def test_gcs_source_lists_and_reads_objects_under_its_prefix(gcs_emulator, gcs_bucket: str) -> None:
    gcs_emulator.upload(
        gcs_bucket, {"val/Cat/a.jpg": b"cat bytes", "val/Dog/b.png": b"dog", "train/Cat/c.jpg": b"no", "val/Cat/": b""}
    )
    source = open_source(f"gs://{gcs_bucket}/val")
    source.check()

    blobs = {blob.path: blob for blob in source.list()}

    assert sorted(blobs) == ["Cat/a.jpg", "Dog/b.png"]
    assert blobs["Cat/a.jpg"].size == len(b"cat bytes")
    assert blobs["Cat/a.jpg"].checksum.startswith(base64.b64encode(hashlib.md5(b"cat bytes").digest()).decode())
    assert blobs["Cat/a.jpg"].created.tzinfo is not None
    assert source.read("Cat/a.jpg") == b"cat bytes"


@pytest.mark.gcs
def test_gcs_checksum_changes_when_an_object_is_rewritten(gcs_emulator, gcs_bucket: str) -> None:
    source = GCSSource(gcs_bucket, "val")
    gcs_emulator.upload(gcs_bucket, {"val/Cat/a.jpg": b"one"})
    before = next(iter(source.list())).checksum
    gcs_emulator.upload(gcs_bucket, {"val/Cat/a.jpg": b"two"})
    assert next(iter(source.list())).checksum != before


@pytest.mark.gcs
def test_gcs_read_of_a_missing_object_names_it(gcs_emulator, gcs_bucket: str) -> None:
    with pytest.raises(SourceError, match="Cat/gone.jpg does not exist"):
        GCSSource(gcs_bucket, "val").read("Cat/gone.jpg")


@pytest.mark.gcs
def test_missing_bucket_is_a_source_error_naming_it(gcs_emulator) -> None:
    source = GCSSource("no-such-bucket-here", "val")
    with pytest.raises(SourceError, match="bucket gs://no-such-bucket-here does not exist"):
        source.check()
    with pytest.raises(SourceError, match="does not exist"):
        list(source.list())


def _unreachable_client():  # type: ignore[no-untyped-def]
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": f"http://127.0.0.1:{_closed_port()}"},
    )


def test_unreachable_gcs_endpoint_fails_with_a_source_error_instead_of_hanging() -> None:
    source = GCSSource("bkt", "val", client=_unreachable_client())
    # The check retries for a bounded budget, not the client's default two minutes, and says so.
    assert CHECK_RETRY_TIMEOUT_S < 120
    with pytest.raises(SourceError, match=rf"unreachable \(gave up after retrying for {CHECK_RETRY_TIMEOUT_S:g} s\)"):
        source.check()


def test_unreachable_gcs_endpoint_listing_and_reading_give_up_after_the_retry_budget() -> None:
    source = GCSSource("bkt", "val", client=_unreachable_client(), retry_timeout_s=1.0)
    with pytest.raises(SourceError, match="unreachable.*listing"):
        list(source.list())
    with pytest.raises(SourceError, match="unreachable.*reading Cat/a.jpg"):
        source.read("Cat/a.jpg")
