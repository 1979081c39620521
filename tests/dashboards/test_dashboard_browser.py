"""The dashboard in headless Chromium, over the store of a real pipeline run (the demo: digits, class "eight" degraded).

One pipeline run, one server and one browser for the module: each test navigates to a URL and
reads what the page shows (the Plotly figures' data, table text, loaded images).
"""

from __future__ import annotations

import io
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from dashboards import ids
from tests.fixtures.browser import WAIT_S, dashboard_browser, figure_data, open_page, wait_until
from tests.fixtures.demo import DEMO_DEGRADED

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.spark,
    # selenium 4.2 (pinned by dash[testing]) calls urllib3 APIs that warn on every request.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:selenium.*"),
]

DEGRADED = DEMO_DEGRADED


@pytest.fixture(scope="module")
def demo(demo_run: tuple[Any, dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """A real run (tests/fixtures/demo.py): demo source from digits, index, sample, predict, Spark metrics, health, alerts."""
    return demo_run


@pytest.fixture(scope="module")
def browser(demo: tuple[Any, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with dashboard_browser(demo[0], str(tmp_path_factory.mktemp("downloads"))) as composite:
        yield composite


def test_overview_shows_every_real_class_and_flags_the_degraded_one(
    browser: Any, demo: tuple[Any, dict[str, Any]]
) -> None:
    from monitor.domain.digits import LABELS

    _, result = demo
    open_page(browser, "/", f"#{ids.OVERVIEW_HEATMAP} .js-plotly-plot")
    heatmap = figure_data(browser, ids.OVERVIEW_HEATMAP)[0]
    assert sorted(heatmap["y"]) == sorted(LABELS)
    assert heatmap["y"][0] == DEGRADED  # worst first
    assert len(heatmap["x"]) == len(result["daily"])  # one column per day of a short range
    summary = browser.find_element(f"#{ids.SUMMARY}").text
    assert result["model"] in summary and f"{result['first_date']} → {result['last_date']}" in summary
    flagged_rows = browser.find_elements(f"#{ids.FLAGGED} tbody tr")
    flagged = {row.find_element("css selector", "td").text: row.text for row in flagged_rows}
    assert DEGRADED in flagged and "needs retraining" in flagged[DEGRADED]
    assert all("needs retraining" not in text for label, text in flagged.items() if label != DEGRADED)


def test_at_1440_by_900_the_flagged_class_and_its_next_steps_are_above_the_fold(browser: Any) -> None:
    """What a team must act on is on the first screen of a laptop, without scrolling: measured in the browser."""
    original = browser.driver.get_window_size()
    browser.driver.set_window_size(1440, 900)
    try:
        open_page(browser, "/", f"#{ids.FLAGGED} tbody tr")
        browser.driver.execute_script("window.scrollTo(0, 0)")
        fold = browser.driver.execute_script("return window.innerHeight")
        assert fold >= 700  # the window really is a laptop screen, so the check below can fail

        def bottom(selector: str) -> float:
            rect = browser.driver.execute_script(
                "const e = document.querySelector(arguments[0]); return e && e.getBoundingClientRect().toJSON();",
                selector,
            )
            assert rect and rect["height"] > 0, f"{selector} is not shown"
            return float(rect["bottom"])

        rows = browser.find_elements(f"#{ids.FLAGGED} tbody tr")
        degraded = next(row for row in rows if row.find_element("css selector", "td").text == DEGRADED)
        assert degraded.rect["y"] + degraded.rect["height"] <= fold
        assert bottom(f"#{ids.SUMMARY}") <= fold
        assert bottom(f"#{ids.NEXT_STEPS}") <= fold, "the next steps for the flagged class are below the fold"
    finally:
        browser.driver.set_window_size(original["width"], original["height"])


def test_choosing_a_class_shows_its_time_series_with_the_interval_band(
    browser: Any, demo: tuple[Any, dict[str, Any]]
) -> None:
    _, result = demo
    open_page(browser, "/", f"#{ids.FLAGGED} a.class-link")
    link = next(a for a in browser.find_elements(f"#{ids.FLAGGED} a.class-link") if a.text == DEGRADED)
    link.click()
    wait_until(lambda: browser.driver.current_url.split("?")[0].endswith(ids.PATH_CLASS), "the class page")
    assert f"{ids.Q_CLASSES}={DEGRADED}" in browser.driver.current_url
    traces = {trace["name"]: trace for trace in figure_data(browser, f"{ids.CLASS_TIMESERIES}-0")}
    band = traces["95% interval (day)"]
    upper = traces["95% interval (day) upper"]
    daily = traces["accuracy per day"]
    assert band["fill"] == "tonexty"
    assert len(daily["y"]) == len(result["daily"])
    assert all(low <= acc <= high for low, acc, high in zip(band["y"], daily["y"], upper["y"]))
    expected = {day["date"]: day["accuracy"][DEGRADED] for day in result["daily"]}
    assert dict(zip(daily["x"], daily["y"])) == pytest.approx(expected)
    assert any(name.startswith("target ") for name in traces)
    assert any(name.startswith("pooled ") for name in traces)
    changes = traces["became needs retraining"]
    assert all(text.endswith("→ needs retraining") for text in changes["text"])
    assert result["first_flagged"][DEGRADED] in changes["x"]
    # The legend names each verdict a change led to (one entry per marker colour), all under one group title.
    legend = browser.find_element(f"#{ids.CLASS_TIMESERIES}-0 .legend").text
    assert "verdict changes" in legend and "became needs retraining" in legend


def test_a_filter_change_is_written_to_the_url_and_redraws_the_page(browser: Any) -> None:
    open_page(browser, "/?color=verdict", f"#{ids.OVERVIEW_HEATMAP} .js-plotly-plot")
    assert figure_data(browser, ids.OVERVIEW_HEATMAP)[0]["name"] == "verdict"
    label = next(el for el in browser.find_elements(".radio label") if el.text.strip() == "name")
    label.click()
    wait_until(lambda: "sort=name" in browser.driver.current_url, "sort=name in the URL")
    names = wait_until(
        lambda: (y := figure_data(browser, ids.OVERVIEW_HEATMAP)[0]["y"]) == sorted(y) and y,
        "the heatmap sorted by name",
    )
    assert "color=verdict" in browser.driver.current_url  # the other state is kept
    browser.driver.refresh()
    browser.wait_for_element(f"#{ids.OVERVIEW_HEATMAP} .js-plotly-plot", timeout=WAIT_S)
    assert figure_data(browser, ids.OVERVIEW_HEATMAP)[0]["y"] == names


def test_the_gallery_shows_the_misclassified_images_of_the_class(
    browser: Any, demo: tuple[Any, dict[str, Any]]
) -> None:
    _, result = demo
    open_page(browser, f"{ids.PATH_ERRORS}?{ids.Q_CLASSES}={DEGRADED}", f"#{ids.GALLERY} img")
    images = browser.find_elements(f"#{ids.GALLERY} img")
    # Until its thumbnail arrives, a box says it is loading instead of standing empty.
    assert "loading" in images[0].value_of_css_property("background-image")
    assert images
    loaded = wait_until(
        lambda: all(
            browser.driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
            for img in images
        ),
        "every thumbnail to load",
    )
    assert loaded
    for img in images[:3]:
        src = img.get_attribute("src")
        assert f"date={result['last_date']}" in src
        with urllib.request.urlopen(src, timeout=10) as response:  # noqa: S310 - our own local server
            assert response.headers.get_content_type() == "image/jpeg"
            picture = Image.open(io.BytesIO(response.read()))
            assert picture.format == "JPEG" and picture.size[0] > 0
    confusions = browser.find_element(f"#{ids.CONFUSION_TABLE}").text
    assert "predicted as" in confusions
