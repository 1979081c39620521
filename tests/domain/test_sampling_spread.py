"""The spread of per-image draw rates in a class much larger than the walked run (the pivot walk, without ``seen``).

A class of M = 200 images, N = 2 a day, drawn on 400 dates with the keys fixed. The module docstring of
``monitor/domain/sampling.py`` says how often each image is drawn: the walk from the pivot ``u`` reads the first
``L = oversample * N`` images at or after ``u`` in key order (wrapping around), and ``N`` of those ``L`` are
picked by a date-keyed priority. So image ``i`` is drawn on a date with probability ``N / L`` times the key arc
from its ``L``-th predecessor to itself (circular): the pivot must fall there for ``i`` to be in the run. These
tests check that exact rate for each image (any slip in the walk, its length, its start or its wrap moves it),
and that the rates are near uniform at the default oversampling and plainly not at ``oversample = 1``.

(``tests/domain/test_sampling.py`` reads a small class whole, where every walk covers the class and the walk's
mistakes do not show.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from monitor.core.settings import load_settings
from monitor.domain.indexing import sample_key
from monitor.domain.sampling import DEFAULT_OVERSAMPLE, draw_sample
from monitor.store import open_store

SOURCE = "gs://bucket/val"
LABEL = "cat"
M, N, DATES = 200, 2, 400
#: The first dates used for the uniformity check: few enough that the key-arc spread at L = 20 (about 1/sqrt(20)
#: relative) stays below what chi-square sees. The spread at L = N = 2 (1/sqrt(2)) is checked over all DATES: over
#: 200 dates chi-square misses it (p >= 1e-4) for 2 % of 1,000 simulated key sets, these keys among them (p = 0.0014);
#: over 400 for none of them (these keys: p = 8e-25).
UNIFORM_DATES = 200
BEFORE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _paths() -> list[str]:
    return [f"{LABEL}/img_{i:05d}.jpg" for i in range(M)]


@pytest.fixture(scope="module")
def draws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, list[list[int]]]]:
    """Per oversample (the default and 1), the image numbers drawn on each of DATES dates (seed fixed)."""
    data_dir: Path = tmp_path_factory.mktemp("spread") / "data"
    data_dir.mkdir()
    with open_store(load_settings(data_dir=data_dir)) as store:
        store.write_images(
            SOURCE,
            [
                {
                    "source": SOURCE,
                    "path": path,
                    "label": LABEL,
                    "size": 100,
                    "checksum": f"100-{i}",
                    "created": BEFORE,
                    "updated": BEFORE,
                    "first_seen": BEFORE,
                    "last_seen": BEFORE,
                    "sample_key": sample_key(path),
                    "status": "ok",
                    "reason": None,
                }
                for i, path in enumerate(_paths())
            ],
            [],
        )
        dates = [dt.date(2026, 3, 10) + dt.timedelta(days=k) for k in range(DATES)]
        out: dict[int, list[list[int]]] = {}
        for oversample in (DEFAULT_OVERSAMPLE, 1):
            out[oversample] = [
                [
                    int(item.image_path[-9:-4])
                    for item in draw_sample(store, SOURCE, date, N, seed=1, labels=[LABEL], oversample=oversample).items
                ]
                for date in dates
            ]
        yield out


def _counts(days: list[list[int]]) -> np.ndarray:
    return np.bincount(np.concatenate([np.asarray(d, dtype=np.int64) for d in days]), minlength=M)


def _expected_rates(run: int) -> np.ndarray:
    """Each image's draw probability on a date, from the keys alone: ``N / run`` times its circular key arc over ``run`` predecessors."""
    keys = np.array([sample_key(path) for path in _paths()])
    order = np.argsort(keys)
    ordered = keys[order]
    arcs = np.empty(M)
    arcs[order] = (ordered - np.roll(ordered, run)) % 1.0  # from the run-th key below (wrapping) up to the image's own
    return N / run * arcs


def test_the_class_is_much_larger_than_the_walk_and_each_date_draws_n_distinct_images(draws) -> None:
    assert M >= 10 * N * DEFAULT_OVERSAMPLE  # the walk (L = 20) covers a tenth of the class at most
    for days in draws.values():
        assert all(len(set(d)) == len(d) == N for d in days)


@pytest.mark.parametrize("oversample", [DEFAULT_OVERSAMPLE, 1])
def test_each_image_is_drawn_at_the_rate_its_key_arc_gives(draws, oversample: int) -> None:
    """Observed draws per image against the documented rate (chi-square goodness of fit, scipy)."""
    rates = _expected_rates(N * oversample)
    assert rates.sum() == pytest.approx(N)  # every pivot starts one run of L images: N drawn a date
    observed = _counts(draws[oversample])
    assert observed.sum() == DATES * N
    # Draws without replacement make the statistic conservative, so a rejection is a real defect.
    assert stats.chisquare(observed, DATES * rates).pvalue > 0.001


def test_draw_rates_are_near_uniform_with_the_default_oversampling_and_not_with_a_single_run(draws) -> None:
    """Each image of the class equally often over the dates (chi-square against uniform); the N keys after the
    pivot alone (oversample=1) draw images behind wide key gaps far more often."""
    oversampled = _counts(draws[DEFAULT_OVERSAMPLE][:UNIFORM_DATES])
    single = _counts(draws[1])
    assert oversampled.sum() == UNIFORM_DATES * N and single.sum() == DATES * N
    assert stats.chisquare(oversampled).pvalue > 0.001
    assert stats.chisquare(single).pvalue < 1e-4
