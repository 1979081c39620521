"""Fetching at the limit: many reads in flight, in order, bounded, retried; through the real GCS client.

The GCS tests talk to ``tests/fixtures/gcs_latency.py`` (GCS's JSON API on 127.0.0.1, many requests
at once, a chosen latency, injected 429/5xx) through the unmodified google-cloud-storage client, the
way a run does: ``STORAGE_EMULATOR_HOST`` points at it and ``GCSSource`` builds its own client. No
test asserts a duration (``benchmarks/bench_fetch.py`` measures speed).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import evaluation.predict as predict_module
from evaluation.model import LoadedModel, load_model
from evaluation.predict import fetch_batches, in_flight_limit, predict_images
from evaluation.predictions import FETCH_FAILED
from monitor.core.errors import SourceError
from monitor.core.settings import SHIPPED_MODEL_DIR, Settings
from monitor.core.sources import MAX_CONNECTIONS, GCSSource, LocalSource, open_source
from monitor.domain.digits import LABELS, encode_digit, load_digits_images
from tests.fixtures.gcs_latency import LatencyGCSServer

DATE = "2026-12-01"
RUN = dict(date=DATE, top_k=3, max_pixels=10_000_000)
#: Retry budget and first back-off for tests: an always-failing blob gives up in about a second.
FAST_RETRY = dict(retry_timeout_s=1.0, retry_initial_s=0.01)


@pytest.fixture(scope="module")
def shipped() -> LoadedModel:
    return load_model(SHIPPED_MODEL_DIR, "cpu")


def digit_blobs(count: int) -> dict[str, bytes]:
    """``{"<label>/digit_<i>.jpg": JPEG}``: the demo's renderings of the first ``count`` digits."""
    images, targets = load_digits_images()
    return {f"{LABELS[targets[i]]}/digit_{i:05d}.jpg": encode_digit(images[i]) for i in range(count)}


def items_of(blobs: dict[str, bytes]) -> list[tuple[str, str]]:
    return [(path, path.split("/")[0]) for path in blobs]


def seed(server: LatencyGCSServer, bucket: str, blobs: dict[str, bytes], prefix: str = "val") -> GCSSource:
    server.put(bucket, {f"{prefix}/{path}": data for path, data in blobs.items()})
    source = open_source(f"gs://{bucket}/{prefix}")
    assert isinstance(source, GCSSource)
    return source


class CountingRead:
    """A source's ``read`` over a dict that counts reads started and finished (thread-safe), with an optional delay."""

    def __init__(self, blobs: dict[str, bytes], delay: Callable[[str], float] = lambda path: 0.0) -> None:
        self.blobs = blobs
        self.delay = delay
        self.started = 0
        self.finished = 0
        self._lock = threading.Lock()

    def __call__(self, path: str) -> bytes:
        with self._lock:
            self.started += 1
        try:
            time.sleep(self.delay(path))
            if path not in self.blobs:
                raise SourceError(f"{path} does not exist in memory://test")
            return self.blobs[path]
        finally:
            with self._lock:
                self.finished += 1


# --- retries on 429 / 5xx, through the real client -----------------------------------------------


@pytest.mark.parametrize("statuses", [[429], [503], [500, 502, 504], [429, 503, 429]])
def test_transient_statuses_are_retried_until_the_read_succeeds(latency_gcs, statuses: list[int]) -> None:
    server, bucket = latency_gcs
    source = seed(server, bucket, {"Cat/a.jpg": b"cat bytes"})
    server.inject(bucket, "val/Cat/a.jpg", statuses)

    assert GCSSource(bucket, "val", **FAST_RETRY).read("Cat/a.jpg") == b"cat bytes"
    # every injected answer was served, then the one that succeeded (a loaded machine may add a retry of its own:
    # the client gives up waiting on a slow answer and asks again)
    assert server.object_hits["val/Cat/a.jpg"] >= len(statuses) + 1
    assert source.read("Cat/a.jpg") == b"cat bytes"


def test_a_blob_that_always_fails_gives_up_after_the_retry_budget_with_a_source_error(latency_gcs) -> None:
    server, bucket = latency_gcs
    seed(server, bucket, {"Cat/a.jpg": b"x"})
    server.inject(bucket, "val/Cat/a.jpg", always=503)
    with pytest.raises(SourceError, match=r"gave up after retrying for 1 s\) while reading Cat/a.jpg"):
        GCSSource(bucket, "val", **FAST_RETRY).read("Cat/a.jpg")
    assert server.object_hits["val/Cat/a.jpg"] > 2, "retried with back-off, not tried once"


def test_reads_use_the_clients_retry_policy_with_exponential_back_off() -> None:
    from google.api_core.retry import Retry

    retry = GCSSource("bkt", "val", retry_timeout_s=7.0, retry_initial_s=0.5)._retry(7.0)
    assert isinstance(retry, Retry)
    assert (retry._initial, retry._multiplier, retry._timeout) == (0.5, 2.0, 7.0)
    from google.api_core import exceptions as gexc

    assert retry._predicate(gexc.TooManyRequests("429")) and retry._predicate(gexc.ServiceUnavailable("503"))
    assert not retry._predicate(gexc.NotFound("404"))


@pytest.mark.slow
def test_retries_keep_the_order_and_a_blob_that_always_fails_is_one_failed_row(
    latency_gcs, shipped: LoadedModel
) -> None:
    server, bucket = latency_gcs
    blobs = digit_blobs(40)
    source = GCSSource(bucket, "val", **FAST_RETRY)
    seed(server, bucket, blobs)
    paths = list(blobs)
    broken = paths[7]
    server.inject(bucket, f"val/{broken}", always=503)
    for path in paths[::5]:  # these answer late (after back-off), so they complete out of order
        if path != broken:
            server.inject(bucket, f"val/{path}", [429, 503])
    server.inject(bucket, f"val/{paths[1]}", [500, 500, 502])

    frame = predict_images(items_of(blobs), source.read, shipped, batch_size=8, fetch_workers=6, **RUN)
    reference = predict_images(items_of(blobs), blobs.__getitem__, shipped, batch_size=8, fetch_workers=6, **RUN)

    assert list(frame["image_path"]) == paths
    failed = frame[frame["status"] != "ok"]
    assert list(failed["image_path"]) == [broken]
    assert list(failed["error"]) == [FETCH_FAILED]
    ok = frame["status"] == "ok"
    assert ok.sum() == len(paths) - 1
    assert list(frame.loc[ok, "pred"]) == list(reference.loc[ok, "pred"])


def test_the_latency_server_pages_listings_as_gcs_does(latency_gcs) -> None:
    server, bucket = latency_gcs
    names = {f"Cat/{i:02d}.jpg": b"c" for i in range(25)} | {"Dog/": b""}
    seed(server, bucket, names)
    server.put(bucket, {"train/Cat/x.jpg": b"elsewhere"})
    listed = [info.path for info in GCSSource(bucket, "val", page_size=10).list()]
    assert listed == [
        f"Cat/{i:02d}.jpg" for i in range(25)
    ]  # the folder placeholder skipped, nothing outside the prefix
    assert server.requests["GET list"] == 3


# --- many reads in flight, in order ----------------------------------------------------------------


def flat(batches) -> list:  # type: ignore[no-untyped-def]
    return [content for batch in batches for content in batch]


def test_fetch_batches_yield_in_the_order_asked_whatever_order_the_reads_finish_in() -> None:
    blobs = {f"p{i}": f"bytes {i}".encode() for i in range(200)}
    jitter = random.Random(0)
    delays = {path: jitter.uniform(0, 0.01) for path in blobs}
    read = CountingRead(blobs, delay=lambda path: delays.get(path, 0.0))
    paths = list(blobs) + ["missing"]
    with ThreadPoolExecutor(16) as pool:
        got = flat(fetch_batches(paths, read, pool, batch_size=10, limit=32))
    assert got == [blobs[p] for p in blobs] + [FETCH_FAILED]


def test_fetch_batches_groups_in_order_with_a_short_last_batch() -> None:
    blobs = {f"p{i}": bytes([i]) for i in range(10)}
    with ThreadPoolExecutor(3) as pool:
        batches = list(fetch_batches(list(blobs), blobs.__getitem__, pool, batch_size=4, limit=8))
    assert batches == [
        [bytes([0]), bytes([1]), bytes([2]), bytes([3])],
        [bytes([4]), bytes([5]), bytes([6]), bytes([7])],
        [bytes([8]), bytes([9])],
    ]


def test_the_gcs_server_sees_fetch_workers_requests_at_once(latency_gcs) -> None:
    server, bucket = latency_gcs
    blobs = {f"Cat/{i}.jpg": bytes([i % 256]) * 100 for i in range(120)}
    source = seed(server, bucket, blobs)
    server.latency_s = 0.05
    with ThreadPoolExecutor(24) as pool:
        got = flat(fetch_batches(list(blobs), source.read, pool, batch_size=24, limit=48))
    assert got == list(blobs.values())
    # 24 threads each holding one request open: the server saw most of them at once (not timed: counted)
    assert server.max_in_flight >= 12


def test_default_fetch_workers_fit_gcs_and_every_worker_gets_a_kept_alive_connection() -> None:
    field = Settings.model_fields["fetch_workers"]
    assert 32 <= field.default <= 64
    largest = next(m.le for m in field.metadata if hasattr(m, "le"))
    assert MAX_CONNECTIONS >= largest


# --- back-pressure: a slow consumer stops the fetching, not the memory ---------------------------------


def test_a_slow_consumer_keeps_fetched_but_unconsumed_blobs_bounded() -> None:
    blobs = {f"p{i}": b"x" * 10 for i in range(300)}
    read = CountingRead(blobs)
    limit, batch_size = 20, 5
    ahead = []
    consumed = 0
    with ThreadPoolExecutor(8) as pool:
        for batch in fetch_batches(list(blobs), read, pool, batch_size=batch_size, limit=limit):
            consumed += len(batch)
            time.sleep(0.01)  # the slow consumer: reads have every chance to run ahead
            ahead.append(read.finished - consumed)
            assert read.started <= consumed + limit
    assert max(ahead) <= limit
    assert max(ahead) >= limit // 2, "the reads did run ahead of the consumer (within the limit)"
    assert read.finished == len(blobs)


def test_closing_the_stream_early_cancels_the_reads_not_started() -> None:
    blobs = {f"p{i}": b"x" for i in range(500)}
    read = CountingRead(blobs, delay=lambda path: 0.001)
    with ThreadPoolExecutor(4) as pool:
        stream = fetch_batches(list(blobs), read, pool, batch_size=5, limit=16)
        for _ in range(2):
            next(stream)
        stream.close()
    assert read.started <= 10 + 16


@pytest.mark.slow
def test_predict_images_with_a_slow_model_holds_a_few_batches_not_the_sample(
    shipped: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = digit_blobs(30)
    many = {
        f"{path.split('/')[0]}/copy{n}_{path.split('/')[1]}": data for n in range(4) for path, data in blobs.items()
    }  # 120 images
    read = CountingRead(many)
    batch_size, workers = 8, 4
    real_forward = predict_module.forward_probs

    def slow_forward(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.02)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(predict_module, "forward_probs", slow_forward)
    done = [0]
    ahead = []

    def progress(count: int) -> None:
        done[0] += count
        ahead.append(read.finished - done[0])

    frame = predict_images(
        items_of(many), read, shipped, batch_size=batch_size, fetch_workers=workers, progress=progress, **RUN
    )

    assert list(frame["image_path"]) == list(many)
    assert (frame["status"] == "ok").all()
    # Fetched but not yet predicted: the in-flight reads, the batch being prepared and the one in the model.
    bound = in_flight_limit(batch_size, workers) + 2 * batch_size
    assert max(ahead) <= bound < len(many)


# --- end to end through the real client ---------------------------------------------------------------


@pytest.mark.slow
def test_a_bucket_and_a_folder_with_the_same_images_give_the_same_bytes_and_predictions(
    latency_gcs, shipped: LoadedModel, tmp_path: Path
) -> None:
    server, bucket = latency_gcs
    blobs = digit_blobs(50)
    blobs["Cat/not-an-image.jpg"] = b"not a jpeg"
    for path, data in blobs.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    gcs = seed(server, bucket, blobs)
    local = LocalSource(tmp_path)
    server.latency_s = 0.005

    listed = sorted(info.path for info in gcs.list())
    assert listed == sorted(info.path for info in local.list()) == sorted(blobs)
    items = items_of(blobs) + [("Cat/missing.jpg", "Cat")]
    from_gcs = predict_images(items, gcs.read, shipped, batch_size=16, fetch_workers=8, **RUN)
    from_folder = predict_images(items, local.read, shipped, batch_size=16, fetch_workers=8, **RUN)

    assert all(gcs.read(path) == local.read(path) for path in blobs)
    pd.testing.assert_frame_equal(from_gcs, from_folder)
    assert dict(zip(from_gcs["image_path"], from_gcs["error"]))["Cat/missing.jpg"] == FETCH_FAILED
    assert (from_gcs["status"] == "ok").sum() == 50
    assert (
        np.mean(from_gcs.loc[from_gcs["status"] == "ok", "pred"] == from_gcs.loc[from_gcs["status"] == "ok", "label"])
        > 0.8
    )
    # one media request per read: no metadata lookup before each download
    assert server.requests["GET media"] == len(items) + len(blobs)
    assert server.requests["GET object"] == 0


def test_the_client_gcs_source_builds_keeps_connections_and_reads_the_proxy_environment_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = GCSSource("bkt", max_connections=77)._get_client()._http
    assert session.adapters["http://"]._pool_maxsize == 77
    assert session.adapters["https://"]._pool_maxsize == 77
    # The same proxy requests would have looked up per request, looked up once.
    assert session.trust_env is False
    assert session.proxies.get("http") == "http://proxy.invalid:3128"
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert "http" not in GCSSource("bkt")._get_client()._http.proxies


def test_many_threads_asking_for_the_client_at_once_get_one_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    source = GCSSource("bkt")
    with ThreadPoolExecutor(16) as pool:
        clients = list(pool.map(lambda _: source._get_client(), range(64)))
    assert len({id(c) for c in clients}) == 1
