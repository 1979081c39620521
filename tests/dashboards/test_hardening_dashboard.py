"""The dashboard never answers 500: odd shared links render with a notice, malformed callback requests get a 4xx or no update.

Served through the Flask test client of the real app with debug off and exceptions not propagated
(as in production), so an unhandled error shows up as the 500 a user would get.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dashboards import guards, ids
from dashboards.state import (
    MAX_CLASSES,
    MAX_PAGE,
    MAX_QUERY_CHARS,
    ViewState,
    clamp_range,
    page_number,
    parse_query,
    state_from_controls,
)
from tests.fixtures.dashboard import (
    MODEL,
    assert_no_server_error,
    click_body,
    controls_body,
    day,
    page_text,
    post,
    production_client,
    render_body,
)


@pytest.fixture
def client(settings, history) -> Any:
    return production_client(settings)


# --- URL state -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pathname", "search", "notice"),
    [
        ("/", "?end=0001-01-03", "outside the evaluated dates"),
        ("/class", "?end=0001-01-01", "outside the evaluated dates"),
        ("/errors", "?start=9999-12-31", "outside the evaluated dates"),
        ("/", "?page=%D9%A3", "is not a page number"),  # Arabic-Indic three: int() reads it, the URL must not
        ("/", "?page=%C2%B2", "is not a page number"),  # superscript two: isdigit() but int() raises
        ("/", "?page=" + "9" * 5000, "is not a page number"),  # int() refuses more than 4,300 digits
        ("/", "?page=0", "is not a page number"),
        ("/", "?page=-3", "is not a page number"),
        ("/", "?start=2024-02-30", "is not a YYYY-MM-DD date"),
        ("/run", "?date=0001-01-01", "No run of"),
        ("/", "?grain=%00", "is not one of"),
        ("/", "?classes=%ED%A0%80", "no results for class"),  # an encoded lone surrogate
        (
            "/",
            "?" + "&".join(f"classes=c{i}" for i in range(MAX_CLASSES + 500)),
            f"only the first {MAX_CLASSES:,} are shown",
        ),
        ("/", "?classes=ant&x=" + "y" * (MAX_QUERY_CHARS + 10), f"only its first {MAX_QUERY_CHARS:,} were read"),
        ("/nowhere/" + "x" * 5000, "", "No page at"),
    ],
)
def test_an_odd_shared_link_renders_its_page_with_a_notice(client, pathname: str, search: str, notice: str) -> None:
    response = post(client, render_body(pathname, search))
    assert_no_server_error(response)
    assert response.status_code == 200
    assert notice in page_text(response)


def test_a_lone_surrogate_in_the_address_is_replaced_not_sent_back(client) -> None:
    response = post(client, render_body("/", "?classes=\ud800"))
    assert_no_server_error(response)
    assert "no results for class '?'" in page_text(response)


def test_a_link_choosing_sixty_thousand_classes_is_read_up_to_the_bound(client) -> None:
    search = "?" + "&".join(f"classes=c{i}" for i in range(60_000))
    assert len(json.dumps(render_body("/", search))) < guards.MAX_BODY_BYTES  # it reaches the app, as in the probe
    response = post(client, render_body("/", search))
    assert response.status_code == 200
    text = page_text(response)
    assert f"only its first {MAX_QUERY_CHARS:,} were read" in text  # the 890 KB address is cut at a parameter
    assert f"classes; only the first {MAX_CLASSES:,} are shown" in text  # and of the classes in that part, 1,000 kept
    assert "and 990 more" in text  # the unknown ones are counted, not listed one by one
    # Every nav link carried the 60,000 classes (4.9 MB); now the whole answer is bounded by the 1,000 kept.
    assert len(response.data) < 300_000


@pytest.mark.parametrize(
    ("text", "page"),
    [
        ("1", 1),
        ("42", 42),
        (str(MAX_PAGE), MAX_PAGE),
        (7, 7),
        ("0", None),
        (str(MAX_PAGE + 1), None),
        ("٣", None),
        ("²", None),
        ("३", None),
        ("1.0", None),
        (" 2", None),
        ("", None),
        (None, None),
        (True, None),
        ([2], None),
        ("9" * 5000, None),
    ],
)
def test_a_page_number_is_ascii_digits_within_bounds(text: Any, page: int | None) -> None:
    assert page_number(text) == page


def test_parse_query_keeps_the_first_classes_in_order_without_duplicates() -> None:
    state = parse_query("?" + "&".join(f"classes=c{i % 1500}" for i in range(3000)))
    assert len(state.classes) == MAX_CLASSES and state.classes[:3] == ("c0", "c1", "c2")
    assert any("1,500 classes" in p for p in state.problems)
    assert parse_query("?classes=b&classes=a&classes=b").classes == ("b", "a")


def test_a_cut_address_drops_only_the_parameter_it_cut() -> None:
    head = "?grain=week&" + "&".join(f"classes={'x' * 90}{i}" for i in range(MAX_QUERY_CHARS // 100))
    state = parse_query(head + "&sort=name")
    assert state.grain == "week" and state.sort == "worst"  # the cut tail is ignored
    assert all(
        label.startswith("x" * 90) and label[90:].isdigit() for label in state.classes
    )  # no half-read class name


@pytest.mark.parametrize("search", [None, 5, ["?page=2"], {"page": "2"}])
def test_parse_query_of_something_that_is_not_text_is_the_default_state(search: Any) -> None:
    assert parse_query(search) == ViewState()


@pytest.mark.parametrize("end", ["0001-01-01", "0001-01-03", "0001-12-31"])
def test_a_range_ending_near_the_first_day_of_the_calendar_is_clamped_not_overflowed(end: str) -> None:
    start, stop, notices = clamp_range(ViewState(end=end), "2024-03-02", "2024-03-31")
    assert (start, stop) == ("2024-03-02", "2024-03-02")
    assert any("outside the evaluated dates" in n for n in notices)


@pytest.mark.parametrize(
    ("params", "start", "expected"),
    [
        ({ids.Q_CLASSES: 5}, None, ViewState(model=MODEL)),
        ({ids.Q_CLASSES: "abc"}, None, ViewState(model=MODEL)),
        ({ids.Q_CLASSES: [1, 2]}, None, ViewState(model=MODEL)),
        ({ids.Q_CLASSES: ["b", "a", "b"]}, None, ViewState(model=MODEL, classes=("b", "a"))),
        ({ids.Q_PAGE: "²"}, None, ViewState(model=MODEL)),
        ({ids.Q_PAGE: "3"}, None, ViewState(model=MODEL, page=3)),
        ({ids.Q_MODEL: {"x": 1}, ids.Q_SORT: ["name"]}, None, ViewState(model=MODEL)),
        ({}, "0001-01-01T00:00:00", ViewState(model=MODEL, start="0001-01-01")),
        ({}, "not a date", ViewState(model=MODEL)),
        ({}, 20240101, ViewState(model=MODEL)),
    ],
)
def test_controls_of_the_wrong_type_are_ignored(params: dict[str, Any], start: Any, expected: ViewState) -> None:
    assert state_from_controls(ViewState(model=MODEL), params, start, None) == expected


# --- malformed callback requests -------------------------------------------------------------------------------------


def _pattern_entry(cid: Any, value: Any = "x", prop: str = "value") -> dict[str, Any]:
    return {"id": cid, "property": prop, "value": value}


MALFORMED: dict[str, Any] = {
    "empty object": {},
    "null": None,
    "a list": [],
    "a string": "render",
    "an unknown output": {**render_body(), "output": "nowhere.children"},
    "an output that is not text": {**render_body(), "output": ["url.search"]},
    "outputs missing": {k: v for k, v in render_body().items() if k != "outputs"},
    "outputs of another callback": {**render_body(), "outputs": {"id": ids.URL, "property": "search"}},
    "inputs missing": {k: v for k, v in render_body().items() if k != "inputs"},
    "inputs not a list": {**render_body(), "inputs": {"pathname": "/"}},
    "one input short": {**render_body(), "inputs": render_body()["inputs"][:1]},
    "an input of another component": {
        **render_body(),
        "inputs": [_pattern_entry("nav", "/", "pathname"), render_body()["inputs"][1]],
    },
    "an input of another property": {
        **render_body(),
        "inputs": [_pattern_entry(ids.URL, "/", "href"), render_body()["inputs"][1]],
    },
    "an input without a property": {
        **render_body(),
        "inputs": [{"id": ids.URL, "value": "/"}, render_body()["inputs"][1]],
    },
    "an input that is a number": {**render_body(), "inputs": [5, render_body()["inputs"][1]]},
    "state not a list": {**render_body(), "state": "x"},
    "a wildcard state that is one entry": {**render_body(), "state": [_pattern_entry(ids.param(ids.Q_MODEL)), [], []]},
    "a pattern id without its keys": {**controls_body([]), "inputs": [[_pattern_entry({"type": ids.PARAM})], [], []]},
    "a pattern id with an extra key": {
        **controls_body([]),
        "inputs": [[_pattern_entry({**ids.param(ids.Q_PAGE), "x": 1})], [], []],
    },
    "a pattern id of another type": {
        **controls_body([]),
        "inputs": [[_pattern_entry({"type": "other", "name": ids.Q_PAGE})], [], []],
    },
    "a pattern id that is a string": {**controls_body([]), "inputs": [[_pattern_entry(ids.PARAM)], [], []]},
    "a wildcard key that is a list": {
        **controls_body([]),
        "inputs": [[_pattern_entry({"type": ids.PARAM, "name": [1, [2]]})], [], []],
    },
    "too many controls": {
        **controls_body([]),
        "inputs": [[_pattern_entry(ids.param(f"p{i}")) for i in range(guards.MAX_PATTERN_ITEMS + 1)], [], []],
    },
    "a changed prop id of no input": {**click_body({"points": [{"y": "ant"}]}), "changedPropIds": ["url.search"]},
    "a changed prop id that is deep JSON": {
        **controls_body([(ids.Q_PAGE, "2")]),
        "changedPropIds": ["[" * 500 + "]" * 500 + ".value"],
    },
    "a changed prop id repeated": {
        **click_body({"points": [{"y": "ant"}]}),
        "changedPropIds": ["overview-heatmap.clickData"] * 2,
    },
    "changed prop ids not a list": {
        **click_body({"points": [{"y": "ant"}]}),
        "changedPropIds": "overview-heatmap.clickData",
    },
    "a value nested 100 deep": click_body(json.loads("[" * 100 + "]" * 100)),
    "a body nested 10,000 deep": "[" * 10_000 + "]" * 10_000,
    "an output nested 10,000 deep": '{"output": ' + "[" * 10_000 + "]" * 10_000 + "}",
    "not JSON": "{'output': 1",
    "a number too large for a float": '{"output": 1e999999}',
}


@pytest.mark.parametrize("body", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_callback_request_gets_400_with_a_reason(client, body: Any) -> None:
    response = post(client, body)
    assert_no_server_error(response)
    assert response.status_code == 400
    if response.is_json:  # Flask's own refusal of text that is not JSON is HTML
        assert response.get_json()["error"]


NO_UPDATE: dict[str, Any] = {
    "a search that is a number": render_body("/", 5),
    "a pathname that is a list": render_body(["/"], ""),
    "a pathname that is an object": render_body({"path": "/"}, ""),
    "click data that is text": click_body("x"),
    "click data without points": click_body({"x": 1}),
    "click points that are text": click_body({"points": "x"}),
    "a click point that is a number": click_body({"points": [5]}),
    "an empty click": click_body({"points": []}),
    "a click whose class is a list": click_body({"points": [{"y": ["ant"]}]}),
    "a click whose class is true": click_body({"points": [{"y": True}]}),
    "a click with a search that is a list": click_body({"points": [{"y": "ant"}]}, search=["?"]),
    "a page control of superscript two": controls_body([(ids.Q_PAGE, "²")]),
    "a classes control that is a number": controls_body([(ids.Q_CLASSES, 5)]),
    "a classes control that is text": controls_body([(ids.Q_CLASSES, "abc")]),
    "a model control that is an object": controls_body([(ids.Q_MODEL, {})]),
    "a date picker sending a number": controls_body([], start=20240101),
    "a controls search that is a number": controls_body([(ids.Q_SORT, "name")], search=7),
}


@pytest.mark.parametrize("body", list(NO_UPDATE.values()), ids=list(NO_UPDATE))
def test_a_callback_value_of_the_wrong_type_is_no_update(client, body: Any) -> None:
    response = post(client, body)
    assert_no_server_error(response)
    # Dash answers PreventUpdate with 204, and a callback that returned no_update with 200 and nothing to change.
    assert response.status_code in (200, 204)
    if response.status_code == 200:
        assert response.get_json()["response"] == {}


def test_well_formed_requests_still_work(client) -> None:
    click = post(client, click_body({"points": [{"y": "cat", "x": day(0)}]}, search="?sort=name"))
    assert click.get_json()["response"] == {ids.URL: {"href": "/class?classes=cat&sort=name"}}
    numeric = post(client, click_body({"points": [{"y": 7}]}))
    assert numeric.get_json()["response"] == {ids.URL: {"href": "/class?classes=7"}}
    page = post(client, controls_body([(ids.Q_PAGE, "2")], search="?sort=name"))
    assert page.get_json()["response"] == {ids.URL: {"search": "?sort=name&page=2"}}
    picked = post(client, controls_body([], start=f"{day(5)}T00:00:00"))
    assert picked.get_json()["response"] == {ids.URL: {"search": f"?start={day(5)}"}}
    rendered = post(
        client, render_body("/class", "?classes=cat", values=[(ids.Q_MODEL, MODEL), (ids.Q_CLASSES, ["cat"])])
    )
    assert rendered.status_code == 200 and "cat" in page_text(rendered)


# --- the other routes ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "status"),
    [
        (ids.PATH_THUMB, 404),
        (f"{ids.PATH_THUMB}?date=%00&path=x", 404),
        (f"{ids.PATH_THUMB}?date=2024-13-01&path=a.png", 404),
        (f"{ids.PATH_THUMB}?date=0001-01-01&path=a.png", 404),
        (f"{ids.PATH_THUMB}?date=%D9%A3%D9%A3%D9%A3%D9%A3-01-01&path=a.png", 404),
        (f"{ids.PATH_THUMB}?date={'9' * 5000}&path=a.png", 404),
        (f"{ids.PATH_THUMB}?date=2024-03-31&path=%ED%A0%80", 404),
        ("/_dash-component-suites/nope/x.js", 404),
        ("/_dash-component-suites/dash/../../../etc/passwd", 404),
        ("/_dash-component-suites/dash/deps/nope.js", 404),
    ],
)
def test_other_routes_answer_bad_parameters_with_4xx(client, url: str, status: int) -> None:
    response = client.get(url)
    assert_no_server_error(response)
    assert response.status_code == status
    assert "registered paths" not in response.get_data(as_text=True)  # Dash's own error lists every file it serves


def test_a_body_over_the_bound_is_refused_before_it_is_read(client) -> None:
    response = post(client, render_body("/", "?" + "x" * guards.MAX_BODY_BYTES))
    assert response.status_code == 413


def test_a_refusal_quotes_the_bad_value_shortened(client) -> None:
    response = client.get(ids.PATH_THUMB, query_string={"date": "9" * 50_000, "path": "a.png"})
    assert response.status_code == 404
    assert (
        "date &#39;99999" in response.get_data(as_text=True) and len(response.data) < 2_000
    )  # HTML-escaped by werkzeug
