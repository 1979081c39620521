"""Property-based fuzzing of the dashboard's two inputs from the outside: the URL state and the callback requests.

Property: every request is answered below 500 (a page, a 4xx, or no update) and no answer carries a
traceback. Runs a fixed, derandomized budget in CI (no example database, so every run draws the
same inputs); set ``FUZZ_EXAMPLES`` (e.g. 5000) for a longer search.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboards import ids
from dashboards.state import MAX_CLASSES, MAX_PAGE, _valid_date, parse_query
from tests.fixtures.dashboard import (
    MODEL,
    assert_no_server_error,
    click_body,
    controls_body,
    day,
    health_doc,
    metric_doc,
    post,
    production_client,
    render_body,
    write_history,
)
from tests.fixtures.fuzz import fuzz_settings

FUZZ = fuzz_settings(60)

LABELS = ("ant", "bee", "cat")


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[Any]:
    """The production-configured app over 30 days of 3 classes with verdicts (built once: the fuzzers only read)."""
    from monitor.core.settings import load_settings
    from monitor.store import open_store

    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    data_dir.mkdir()
    config = load_settings(data_dir=data_dir)
    with open_store(config) as store:
        dates = [day(k) for k in range(29, -1, -1)]
        write_history(
            store,
            "class_metrics",
            [metric_doc(label, d, 10, 8 if label == "cat" else 10) for d in dates for label in LABELS],
        )
        write_history(
            store,
            "class_health",
            [health_doc(label, d, "watch" if label == "cat" else "healthy") for d in dates for label in LABELS],
        )
        store.register_model(MODEL, name="digits", checksum="0123456789ab", labels=list(LABELS), date=dates[0])
        store.commit()
    yield production_client(config)


# --- strategies --------------------------------------------------------------------------------------------------------

QUERY_NAMES = (
    ids.Q_MODEL,
    ids.Q_START,
    ids.Q_END,
    ids.Q_CLASSES,
    ids.Q_GRAIN,
    ids.Q_DATE,
    ids.Q_COLOR,
    ids.Q_SORT,
    ids.Q_PAGE,
)
PATHS = (ids.PATH_OVERVIEW, ids.PATH_CLASS, ids.PATH_ERRORS, ids.PATH_RUN, ids.PATH_COMPARE)

#: Values that broke or nearly broke parsing: dates at the calendar's ends, digits int() reads differently from isdigit().
TRICKY = (
    "0001-01-01",
    "0001-01-03",
    "9999-12-31",
    "1970-01-01",
    "2024-02-30",
    "2024-W01-1",
    "٣",
    "²",
    "३",
    "0",
    "-1",
    "9" * 5000,
    MODEL,
    *LABELS,
    "week",
    "verdict",
    "name",
    "",
    "%",
    "%ED%A0%80",
    "&",
    "=",
    "\x00",
)

values = st.one_of(
    st.sampled_from(TRICKY),
    st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)).map(dt.date.isoformat),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.text(max_size=30),
    # Lone surrogates (a JSON string can carry them), digits of every script, other numbers (², ½), control characters.
    st.text(st.characters(categories=["Cs", "Nd", "No", "Cc"]), max_size=12),
)
query_strings = st.one_of(
    st.lists(st.tuples(st.one_of(st.sampled_from(QUERY_NAMES), st.text(max_size=8)), values), max_size=12).map(
        lambda pairs: "?" + "&".join(f"{k}={v}" for k, v in pairs)  # raw, as typed into the address bar
    ),
    st.lists(st.tuples(st.sampled_from(QUERY_NAMES), values), max_size=12).map(
        lambda pairs: "?" + urlencode(pairs, errors="surrogatepass")  # percent-encoded, as the app's own links are
    ),
    st.text(max_size=200),
)
pathnames = st.one_of(st.sampled_from(PATHS), st.text(max_size=40))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def valid_bodies() -> list[dict[str, Any]]:
    """One well-formed request of each callback, as the renderer sends them."""
    return [
        render_body("/", "?sort=name", values=[(ids.Q_MODEL, MODEL), (ids.Q_CLASSES, ["cat"])]),
        controls_body([(ids.Q_PAGE, "2"), (ids.Q_CLASSES, ["ant"])], search="?sort=name", start=day(3)),
        click_body({"points": [{"x": day(0), "y": "cat", "z": 0.8}]}),
    ]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path (keys and indexes) into a JSON value, the value itself first."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _replaced(body: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    body = copy.deepcopy(body)
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return body


@st.composite
def mutated_bodies(draw: st.DrawFn) -> Any:
    """A well-formed request with one part replaced by any JSON value, or deleted."""
    body = draw(st.sampled_from(valid_bodies()))
    path = draw(st.sampled_from(list(_paths(body))))
    return _replaced(body, path, draw(json_values), delete=bool(path) and draw(st.booleans()))


@st.composite
def odd_values_in_valid_shapes(draw: st.DrawFn) -> dict[str, Any]:
    """A request of the right shape whose values (URL parts, control values, click data) are anything."""
    kind = draw(st.sampled_from(("render", "controls", "click")))
    if kind == "render":
        controls = draw(
            st.lists(st.tuples(st.sampled_from(QUERY_NAMES), json_values), max_size=4, unique_by=lambda p: p[0])
        )
        return render_body(draw(json_values | pathnames), draw(json_values | query_strings), values=controls)
    if kind == "controls":
        changes = draw(
            st.lists(
                st.tuples(st.sampled_from(QUERY_NAMES), json_values), min_size=1, max_size=4, unique_by=lambda p: p[0]
            )
        )
        return controls_body(changes, search=draw(json_values | query_strings), start=draw(st.none() | json_values))
    point = draw(st.dictionaries(st.sampled_from(("x", "y", "z", "curveNumber")), json_values, max_size=4))
    return click_body(
        draw(st.sampled_from(({"points": [point]}, point, [point]))), search=draw(json_values | query_strings)
    )


# --- properties -----------------------------------------------------------------------------------------------------------


@FUZZ
@given(pathname=pathnames, search=query_strings)
def test_any_shared_link_renders_a_page(client, pathname: str, search: str) -> None:
    response = post(client, render_body(pathname, search))
    assert_no_server_error(response)
    assert response.status_code == 200 and ids.PAGE in response.get_json()["response"]


@settings(FUZZ, max_examples=FUZZ.max_examples * 10)  # pure and fast: ten times the budget
@given(search=query_strings)
def test_parsing_any_query_gives_a_bounded_valid_state(search: str) -> None:
    state = parse_query(search)
    assert 1 <= state.page <= MAX_PAGE
    assert len(state.classes) <= MAX_CLASSES and len(set(state.classes)) == len(state.classes)
    assert all(d is None or _valid_date(d) for d in (state.start, state.end, state.date))


@FUZZ
@given(body=mutated_bodies())
def test_any_mutated_callback_request_is_answered_below_500(client, body: Any) -> None:
    assert_no_server_error(post(client, body))


@FUZZ
@given(body=odd_values_in_valid_shapes())
def test_any_value_in_a_well_formed_callback_request_is_answered_below_500(client, body: dict[str, Any]) -> None:
    assert_no_server_error(post(client, body))


@FUZZ
@given(date=values | st.binary(max_size=12), path=st.text(max_size=40) | st.binary(max_size=40))
def test_any_thumbnail_request_is_answered_below_500(client, date: str | bytes, path: str | bytes) -> None:
    # Encoded here: a URL carries bytes, and a lone surrogate only as the bytes Python would give it.
    query = urlencode({"date": date, "path": path}, errors="surrogatepass")
    response = client.get(f"{ids.PATH_THUMB}?{query}")
    assert_no_server_error(response)
    assert response.status_code == 404  # no predictions file in this store: nothing is ever served


ROUTES = (
    "/",
    "/class",
    "/_dash-layout",
    "/_dash-dependencies",
    "/_dash-component-suites/",
    "/_dash-component-suites/dash/",
    "/_favicon.ico",
    "/assets/",
    "/thumb/",
    "/_dash-update-component/",
)


@FUZZ
@given(
    route=st.sampled_from(ROUTES),
    rest=st.binary(max_size=40),
    query=st.binary(max_size=60),
    method=st.sampled_from(("GET", "HEAD", "POST", "OPTIONS")),
)
def test_any_request_to_any_route_is_answered_below_500(
    client, route: str, rest: bytes, query: bytes, method: str
) -> None:
    response = client.open(f"{route}{quote(rest)}?{quote(query, safe='=&')}", method=method)
    assert_no_server_error(response)
