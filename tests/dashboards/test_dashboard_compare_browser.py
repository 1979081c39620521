"""The comparison page in headless Chromium, over the demo run with its candidate (better on "eight", worse on "three").

The page reads the comparison the compare stage stored; before one is stored it names the command that stores it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dashboards import ids
from monitor.orchestration.demo import CANDIDATE_WORSE
from tests.fixtures.browser import dashboard_browser, figure_data, open_page, wait_until
from tests.fixtures.demo import DEMO_DEGRADED

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.spark,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:selenium.*"),
]


@pytest.fixture(scope="module")
def browser(demo_candidate_run: tuple[Any, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with dashboard_browser(demo_candidate_run[0], str(tmp_path_factory.mktemp("downloads"))) as composite:
        yield composite


def test_the_comparison_page_shows_the_verdict_the_differences_with_intervals_and_the_discordant_images(
    browser: Any, demo_candidate_run: tuple[Any, dict[str, Any]]
) -> None:
    from monitor.orchestration.compare_stage import run_compare
    from monitor.store import open_store

    settings, result = demo_candidate_run
    assert result["candidate"]
    # Nothing stored yet: the page computes nothing and names the command that stores the comparison.
    open_page(browser, ids.PATH_COMPARE, f"#{ids.COMPARE_VERDICT}")
    hint = browser.find_element(f"#{ids.COMPARE_VERDICT}").text
    assert "no comparison stored" in hint and f"monitor compare --candidate {result['candidate']} --since " in hint
    assert f"--until {result['last_date']}" in hint and not browser.find_elements(f"#{ids.COMPARE_CHART}")

    run_compare(settings, result["last_date"])  # the compare stage, as the DAG runs it after health
    with open_store(settings, read_only=True) as store:
        (expected,) = store.comparisons(result["candidate"])
    assert expected["date"] == expected["end"] == result["last_date"]
    # The demo's candidate: better on the degraded class, worse on another, so the verdict names that one (a class it
    # now confuses with the degraded one may join it, depending on the images sampled).
    assert expected["verdict"] == "reject" and CANDIDATE_WORSE in expected["worse"]
    assert DEMO_DEGRADED in expected["improved"]

    open_page(browser, ids.PATH_COMPARE, f"#{ids.COMPARE_CHART} .js-plotly-plot")
    verdict = browser.find_element(f"#{ids.COMPARE_VERDICT}").text
    assert verdict.startswith("reject") and f"{CANDIDATE_WORSE} (" in verdict
    # The verdict badge is readable: white text on the reject colour, not white on white.
    badge = browser.find_element(f"#{ids.COMPARE_VERDICT} .badge")
    assert badge.value_of_css_property("background-color") == "rgba(198, 40, 40, 1)"
    assert badge.value_of_css_property("color") == "rgba(255, 255, 255, 1)"
    (trace,) = figure_data(browser, ids.COMPARE_CHART)
    by_class = dict(zip(trace["x"], trace["y"]))
    rows = {row["label"]: row for row in expected["classes"]}
    assert set(by_class) == {label for label, row in rows.items() if row["n"]}
    assert by_class[DEMO_DEGRADED] == pytest.approx(rows[DEMO_DEGRADED]["difference"]) and by_class[DEMO_DEGRADED] > 0
    assert (
        by_class[CANDIDATE_WORSE] == pytest.approx(rows[CANDIDATE_WORSE]["difference"])
        and by_class[CANDIDATE_WORSE] < 0
    )
    # The interval bars are drawn (Plotly's error_y arrays) around each point.
    bars = browser.driver.execute_script(
        f"const p = document.querySelector('#{ids.COMPARE_CHART} .js-plotly-plot'); const e = p._fullData[0].error_y;"
        " return [Array.from(e.array), Array.from(e.arrayminus)];"
    )
    assert len(bars[0]) == len(trace["x"]) and all(v >= 0 for v in bars[0] + bars[1])
    table_text = browser.find_element(f"#{ids.COMPARE_TABLE}").text
    assert "worse" in table_text and "improved" in table_text
    images = browser.find_elements(f"#{ids.COMPARE_GALLERY} img")
    assert images
    assert wait_until(
        lambda: all(
            browser.driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
            for img in images[:6]
        ),
        "the discordant thumbnails to load",
    )
    captions = browser.find_element(f"#{ids.COMPARE_GALLERY}").text
    assert "candidate right" in captions and "production right" in captions
    assert len(images) == len(expected["discordant"])
