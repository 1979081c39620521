"""Alerts: one per verdict transition, idempotent per date, delivered through apprise to a real HTTP server."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from monitor.core.errors import ConfigError
from monitor.domain.alerts import deliver_pending, list_alerts, raise_alerts
from monitor.orchestration.health_stage import compute_health
from tests.fixtures.store import find
from tests.fixtures.webhook import Endpoint

START = dt.date(2024, 3, 1)


def day(offset: int) -> str:
    return (START + dt.timedelta(days=offset)).isoformat()


def _store_metrics(store, model_id: str, rows: dict[str, list[tuple[int, int]]]) -> None:
    """class_metrics rows for each label: one (n, correct) per day from START, written one day at a time."""
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for label, series in rows.items():
        for i, (n, c) in enumerate(series):
            by_day[day(i)].append({"label": label, "n": n, "correct": c})
    for date, docs in sorted(by_day.items()):
        store.replace_day("class_metrics", model_id, date, docs)


def _one(store, kind: str, query: dict[str, Any]) -> dict[str, Any]:
    """The one stored document of ``kind`` matching ``query``."""
    found = find(store, kind, query)
    assert len(found) == 1, (kind, query, found)
    return found[0]


def _run_days(store, settings, model_id: str, days: int) -> list[list[dict[str, Any]]]:
    """compute_health + raise_alerts day by day, like the pipeline; returns the new alerts per day."""
    created = []
    for i in range(days):
        rows = compute_health(store, model_id, day(i), settings)
        created.append(raise_alerts(store, model_id, day(i), rows))
    return created


@pytest.fixture
def history(store, settings) -> list[list[dict[str, Any]]]:
    """Class 'seven' drops for 4 days (needs_retraining), then recovers; class 'one' stays perfect."""
    _store_metrics(store, "m@1", {"one": [(10, 10)] * 25, "seven": [(10, 10)] * 6 + [(10, 3)] * 4 + [(10, 10)] * 15})
    return _run_days(store, settings, "m@1", 25)


def test_one_alert_per_transition_into_and_out_of_needs_retraining(store, history) -> None:
    kinds = [(a["label"], a["kind"], a["date"]) for new in history for a in new]
    assert [k[:2] for k in kinds] == [("seven", "needs_retraining"), ("seven", "recovered")]
    flagged = sorted(d["date"] for d in find(store, "class_health", {"label": "seven", "verdict": "needs_retraining"}))
    assert len(flagged) >= 2  # it stayed flagged several days, yet only one alert was raised
    assert kinds[0][2] == flagged[0]
    day_after = (dt.date.fromisoformat(flagged[-1]) + dt.timedelta(days=1)).isoformat()
    assert kinds[1][2] == day_after
    alert = _one(store, "alerts", {"kind": "needs_retraining"})
    assert alert["evidence"]["verdict"] == "needs_retraining" and alert["evidence"]["label"] == "seven"
    assert (alert["delivered"], alert["attempts"], alert["last_error"]) == (False, 0, None)
    assert "seven" in alert["message"] and flagged[0] in alert["message"]


def test_rerunning_a_date_raises_no_duplicate_alert(store, settings, history) -> None:
    first_flag = next(a for new in history for a in new if a["kind"] == "needs_retraining")["date"]
    rows = compute_health(store, "m@1", first_flag, settings)
    assert raise_alerts(store, "m@1", first_flag, rows) == []
    assert len(find(store, "alerts", {})) == 2


def test_delivery_posts_the_alert_to_a_json_webhook(store, history, webhook: Endpoint) -> None:
    report = deliver_pending(store, [webhook.url])
    assert (report.delivered, report.pending) == (2, 0)
    assert [b["path"] for b in webhook.bodies] == ["/hook", "/hook"]
    flag = _one(store, "alerts", {"kind": "needs_retraining"})
    body = webhook.bodies[0]["json"]
    assert "seven" in body["message"] and flag["date"] in body["message"]
    assert "seven" in body["title"] and flag["date"] in body["title"]
    assert all(a["delivered"] and a["attempts"] == 1 and a["delivered_at"] is not None for a in find(store, "alerts"))
    # Nothing is sent twice.
    assert deliver_pending(store, [webhook.url]) == type(report)(delivered=0, pending=0, failed=0)
    assert len(webhook.bodies) == 2


def test_a_failing_endpoint_keeps_the_alert_pending_and_a_later_run_delivers_it(
    store, history, webhook: Endpoint
) -> None:
    webhook.status = 500
    report = deliver_pending(store, [webhook.url])
    assert (report.delivered, report.pending, report.failed) == (0, 2, 2)
    pending = find(store, "alerts", {"delivered": False})
    assert len(pending) == 2
    assert all(a["attempts"] == 1 and a["last_error"] for a in pending)
    assert "127.0.0.1" in pending[0]["last_error"]

    webhook.status = 200
    report = deliver_pending(store, [webhook.url])
    assert (report.delivered, report.pending) == (2, 0)
    done = find(store, "alerts")
    assert all(a["delivered"] and a["attempts"] == 2 and a["last_error"] is None for a in done)
    assert len(webhook.bodies) == 4  # two failed posts, two delivered


def test_without_urls_nothing_is_sent_and_alerts_stay_pending(store, history) -> None:
    report = deliver_pending(store, [])
    assert (report.delivered, report.pending) == (0, 2)
    assert all(a["attempts"] == 0 for a in find(store, "alerts"))


def test_an_invalid_url_is_a_config_error_without_its_secret(store, history) -> None:
    with pytest.raises(ConfigError, match=r"MONITOR_ALERT_URLS\[0\] \(nosuchscheme://…\)") as err:
        deliver_pending(store, ["nosuchscheme://user:hunter2@host/tokenABC"])
    assert "hunter2" not in str(err.value) and "tokenABC" not in str(err.value)


def test_list_alerts_is_json_friendly_newest_first_and_filters(store, history, webhook: Endpoint) -> None:
    rows = list_alerts(store)
    json.dumps(rows)  # dates are ISO strings, no ObjectId
    assert [r["kind"] for r in rows] == ["recovered", "needs_retraining"]
    assert isinstance(rows[0]["created_at"], str) and "_id" not in rows[0]
    assert list_alerts(store, model_id="other@2") == []
    assert len(list_alerts(store, pending_only=True)) == 2
    deliver_pending(store, [webhook.url])
    assert list_alerts(store, pending_only=True) == []


# --- transitions pinned with stored verdicts (no health computation: fast and exact) ---------------


@pytest.fixture(params=["embedded", "mongodb"])
def any_store(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The embedded store (alerts partitioned per model), or mongomock standing in for MongoDB (one collection, unique index)."""
    if request.param == "embedded":
        yield request.getfixturevalue("store")
        return
    import mongomock

    from monitor.store import MongoStore

    name = f"monitor_test_{uuid.uuid4().hex[:12]}"  # mongomock clients of one process may share their databases
    with MongoStore(
        db=mongomock.MongoClient(tz_aware=True)[name], description="mongomock standing in for MongoDB"
    ) as db_store:
        db_store.ensure_indexes()
        yield db_store


def _judge(store, model_id: str, date: str, verdicts: dict[str, str]) -> list[dict[str, Any]]:
    """Store ``verdicts`` (label -> verdict) as the class_health rows of (model, date), then raise its alerts, like the pipeline."""
    rows = [
        {"label": label, "verdict": verdict, "reason": f"{label} is {verdict}"}
        for label, verdict in sorted(verdicts.items())
    ]
    store.replace_day("class_health", model_id, date, rows)
    stored = find(store, "class_health", {"model_id": model_id, "date": date})
    return raise_alerts(store, model_id, date, sorted(stored, key=lambda row: row["label"]))


FLAGGED, FINE = "needs_retraining", "healthy"


def _transitions(store) -> list[tuple[str, str, str, str]]:
    return sorted((a["model_id"], a["label"], a["date"], a["kind"]) for a in find(store, "alerts"))


def test_two_models_flagging_the_same_class_on_the_same_day_each_get_their_own_alert(any_store) -> None:
    for model_id in ("a@1", "b@1"):
        assert _judge(any_store, model_id, day(0), {"seven": FINE}) == []
    new_a = _judge(any_store, "a@1", day(1), {"seven": FLAGGED})
    new_b = _judge(any_store, "b@1", day(1), {"seven": FLAGGED})
    assert [(a["model_id"], a["kind"]) for a in new_a + new_b] == [("a@1", FLAGGED), ("b@1", FLAGGED)]
    assert _transitions(any_store) == [("a@1", "seven", day(1), FLAGGED), ("b@1", "seven", day(1), FLAGGED)]
    ids = {a["model_id"]: a["alert_id"] for a in find(any_store, "alerts")}
    assert ids["a@1"] != ids["b@1"]
    assert [a["alert_id"] for a in any_store.alerts("b@1")] == [ids["b@1"]]  # each model's alert is its own
    assert "b@1" in _one(any_store, "alerts", {"model_id": "b@1"})["message"]


def test_a_class_flagged_again_after_recovering_gets_a_second_alert_and_reruns_add_nothing(any_store) -> None:
    history = {0: FINE, 1: FLAGGED, 2: FLAGGED, 3: FINE, 4: FINE, 5: FLAGGED}
    created = {i: _judge(any_store, "m@1", day(i), {"seven": verdict, "one": FINE}) for i, verdict in history.items()}
    assert {i: [(a["label"], a["kind"]) for a in new] for i, new in created.items() if new} == {
        1: [("seven", FLAGGED)],
        3: [("seven", "recovered")],
        5: [("seven", FLAGGED)],
    }
    expected = [
        ("m@1", "seven", day(1), FLAGGED),
        ("m@1", "seven", day(3), "recovered"),
        ("m@1", "seven", day(5), FLAGGED),
    ]
    assert _transitions(any_store) == expected
    assert len({a["alert_id"] for a in find(any_store, "alerts")}) == 3
    assert [a["date"] for a in any_store.pending_alerts()] == [day(1), day(3), day(5)]
    # Re-running every date (same verdicts) raises nothing new and keeps every alert.
    for i, verdict in history.items():
        assert _judge(any_store, "m@1", day(i), {"seven": verdict, "one": FINE}) == []
    assert _transitions(any_store) == expected


def test_partial_delivery_retries_only_the_url_that_failed(any_store) -> None:
    good, bad = Endpoint(), Endpoint()
    try:
        bad.status = 500
        _judge(any_store, "m@1", day(0), {"seven": FINE})
        [flag] = _judge(any_store, "m@1", day(1), {"seven": FLAGGED})
        bad_port, good_port = bad.server.server_address[1], good.server.server_address[1]

        report = deliver_pending(any_store, [good.url, bad.url])
        assert (report.delivered, report.pending, report.failed) == (0, 1, 1)
        alert = _one(any_store, "alerts", {"alert_id": flag["alert_id"]})
        assert (alert["delivered"], alert["delivered_at"], alert["attempts"]) == (False, None, 1)
        assert f"127.0.0.1:{bad_port}" in alert["last_error"] and f"127.0.0.1:{good_port}" not in alert["last_error"]
        assert len(alert["sent_to"]) == 1 and alert["sending"] == [] and alert["uncertain"] == []
        assert (len(good.bodies), len(bad.bodies)) == (1, 1)
        assert [a["alert_id"] for a in any_store.pending_alerts()] == [flag["alert_id"]]

        bad.status = 200
        report = deliver_pending(any_store, [good.url, bad.url])
        assert (report.delivered, report.pending, report.failed) == (1, 0, 0)
        assert len(good.bodies) == 1  # the webhook that accepted the first time is not sent it again
        assert len(bad.bodies) == 2
        assert flag["alert_id"] in bad.bodies[-1]["json"]["message"]
        alert = _one(any_store, "alerts", {"alert_id": flag["alert_id"]})
        assert (alert["delivered"], alert["attempts"], alert["last_error"]) == (True, 2, None)
        assert alert["delivered_at"] is not None and len(alert["sent_to"]) == 2
        assert any_store.pending_alerts() == []
    finally:
        for server in (good, bad):
            server.server.shutdown()
            server.server.server_close()


def test_re_evaluating_a_date_withdraws_its_stale_undelivered_alert_and_keeps_a_delivered_one(
    any_store, webhook: Endpoint
) -> None:
    _judge(any_store, "m@1", day(0), {"seven": FINE, "three": FINE})
    _judge(any_store, "m@1", day(1), {"seven": FLAGGED, "three": FINE})
    assert deliver_pending(any_store, [webhook.url]).delivered == 1  # seven's alert of day 1 is sent
    _judge(
        any_store, "m@1", day(2), {"seven": FLAGGED, "three": FLAGGED}
    )  # three's alert of day 2: pending, another date
    # Day 1 re-evaluated: three is now flagged there too (a new, undelivered alert) ...
    [late] = _judge(any_store, "m@1", day(1), {"seven": FLAGGED, "three": FLAGGED})
    assert (late["label"], late["date"], late["kind"]) == ("three", day(1), FLAGGED)
    # ... and re-evaluated again: neither class moves on day 1 any more.
    assert _judge(any_store, "m@1", day(1), {"seven": FINE, "three": FINE}) == []
    left = {(a["label"], a["date"], a["kind"]): a["delivered"] for a in find(any_store, "alerts")}
    # three's undelivered alert of day 1 is withdrawn; seven's delivered one stays, as does day 2's pending one.
    assert left == {("seven", day(1), FLAGGED): True, ("three", day(2), FLAGGED): False}
    assert [(a["label"], a["date"]) for a in any_store.pending_alerts()] == [("three", day(2))]
    assert len(webhook.bodies) == 1


def test_a_withdrawn_alert_is_never_sent_and_the_next_date_re_run_raises_the_flag_there(
    any_store, webhook: Endpoint
) -> None:
    _judge(any_store, "m@1", day(0), {"seven": FINE})
    _judge(any_store, "m@1", day(1), {"seven": FLAGGED})
    assert _judge(any_store, "m@1", day(1), {"seven": FINE}) == []  # day 1 re-evaluated: no drop that day after all
    assert find(any_store, "alerts") == []
    report = deliver_pending(any_store, [webhook.url])
    assert (report.delivered, report.pending, report.failed) == (0, 0, 0) and webhook.bodies == []
    # The drop shows on day 2 instead: that date's run raises it (the withdrawn alert did not hide it).
    [moved] = _judge(any_store, "m@1", day(2), {"seven": FLAGGED})
    assert (moved["date"], moved["kind"]) == (day(2), FLAGGED)
    assert deliver_pending(any_store, [webhook.url]).delivered == 1
    assert len(webhook.bodies) == 1 and day(2) in webhook.bodies[0]["json"]["message"]


# --- what a notifier receives (closing mutants that survived scripts/mutation.sh) ------------------


def test_a_flag_and_a_recovery_are_posted_with_their_own_title_and_notification_type(store, webhook: Endpoint) -> None:
    _judge(store, "m@1", day(0), {"seven": FINE})
    _judge(store, "m@1", day(1), {"seven": FLAGGED})
    _judge(store, "m@1", day(2), {"seven": FINE})
    stored = {a["kind"]: a for a in find(store, "alerts")}
    assert stored[FLAGGED]["message"].startswith(f"Class 'seven' of model m@1 needs retraining on {day(1)}: ")
    assert stored["recovered"]["message"].startswith(
        f"Class 'seven' of model m@1 recovered on {day(2)} (now healthy): "
    )
    assert all(
        (a["sent_to"], a["sending"], a["uncertain"]) == ([], [], []) for a in stored.values()
    )  # nothing in flight yet

    assert deliver_pending(store, [webhook.url]).delivered == 2

    posted = sorted(((b["json"]["title"], b["json"]["type"]) for b in webhook.bodies), key=lambda tb: tb[0][-11:])
    assert posted == [
        (f"[class health] seven: needs retraining ({day(1)})", "failure"),
        (f"[class health] seven: recovered ({day(2)})", "success"),
    ]


def test_an_alert_stored_without_its_id_is_sent_and_recorded_with_the_id_of_its_transition(
    store, webhook: Endpoint
) -> None:
    import hashlib

    # Alerts stored before alert ids existed: the id is derived from (model, label, date, kind), as documented.
    legacy = {"model_id": "m@1", "label": "seven", "date": day(1), "kind": FLAGGED, "message": "seven needs retraining"}
    store.add_alert({**legacy, "created_at": dt.datetime(2024, 3, 2, tzinfo=dt.UTC), "delivered": False, "attempts": 0})
    expected = hashlib.sha256("\x1f".join(("m@1", "seven", day(1), FLAGGED)).encode()).hexdigest()[:16]

    assert deliver_pending(store, [webhook.url]).delivered == 1

    assert f"alert id {expected}" in webhook.bodies[0]["json"]["message"]
    assert _one(store, "alerts", {"label": "seven"})["alert_id"] == expected


def test_listed_alerts_do_not_show_the_keys_of_the_urls_they_were_sent_to(store, webhook: Endpoint) -> None:
    _judge(store, "m@1", day(0), {"seven": FINE})
    _judge(store, "m@1", day(1), {"seven": FLAGGED})
    deliver_pending(store, [webhook.url])

    [row] = list_alerts(store)

    assert row["delivered"] is True and "sent_to" not in row


def _url_key(url: str) -> str:
    """The documented key of a notification URL in ``sent_to``/``sending``: the first 16 hex digits of its sha256."""
    import hashlib

    return hashlib.sha256(url.encode()).hexdigest()[:16]


def test_each_send_is_recorded_in_the_store_before_the_next_one_starts(store) -> None:
    import apprise

    seen: list[tuple[list[str], list[str]]] = []

    @apprise.decorators.notify(on="probeflight")
    def _probe(body: str, title: str, notify_type: str, *args: Any, **kwargs: Any) -> bool:
        stored = _one(store, "alerts", {"label": "seven"})
        seen.append((list(stored.get("sending") or []), list(stored.get("sent_to") or [])))
        return True

    _judge(store, "m@1", day(0), {"seven": FINE})
    _judge(store, "m@1", day(1), {"seven": FLAGGED})
    first, second = "probeflight://a", "probeflight://b"

    assert deliver_pending(store, [first, second]).delivered == 1

    # At most once: had the run died inside a send, or between the two, the store would already say so.
    assert seen == [([_url_key(first)], []), ([_url_key(second)], [_url_key(first)])]
    alert = _one(store, "alerts", {"label": "seven"})
    assert (alert["sending"], sorted(alert["sent_to"])) == ([], sorted([_url_key(first), _url_key(second)]))


def test_a_failed_send_is_logged_with_the_alert_and_the_url_host(store, webhook: Endpoint, caplog) -> None:
    webhook.status = 500
    _judge(store, "m@1", day(0), {"seven": FINE})
    _judge(store, "m@1", day(1), {"seven": FLAGGED})

    with caplog.at_level("WARNING", logger="monitor.domain.alerts"):
        deliver_pending(store, [webhook.url])

    import re

    pattern = (
        rf"alert m@1/seven/{day(1)} not delivered to json://127\.0\.0\.1:{webhook.server.server_address[1]}.*: \S.*"
    )
    assert [r.getMessage() for r in caplog.records if re.fullmatch(pattern, r.getMessage())], caplog.text


def test_a_send_a_killed_run_left_in_flight_is_not_repeated_but_reported_uncertain(
    store, webhook: Endpoint, caplog
) -> None:
    _judge(store, "m@1", day(0), {"seven": FINE})
    [flag] = _judge(store, "m@1", day(1), {"seven": FLAGGED})
    [stored] = store.pending_alerts()
    store.update_alert(stored, {"$set": {"sending": [_url_key(webhook.url)]}})  # a run died while sending it here

    with caplog.at_level("WARNING", logger="monitor.domain.alerts"):
        report = deliver_pending(store, [webhook.url])

    assert webhook.bodies == []
    # Done with it (nothing failed), with a note that says the one send is in doubt.
    assert (report.delivered, report.pending) == (1, 0)
    alert = _one(store, "alerts", {"label": "seven"})
    assert (alert["uncertain"], alert["sending"], alert["sent_to"], alert["delivered"]) == (
        [_url_key(webhook.url)],
        [],
        [],
        True,
    )
    assert f"may or may not have received alert id {flag['alert_id']}" in alert["last_error"]
    assert "a previous run stopped while sending it; not sent again (at most once)" in caplog.text
    # A later run sends nothing either.
    deliver_pending(store, [webhook.url])
    assert webhook.bodies == []


# --- at most once across several notifiers: a send in doubt after a crash, and another notifier failing (issue 22) ---


class _Killed(BaseException):
    """A run killed right after a send, before its outcome was recorded (what ``after_alert_send`` does for real)."""


@pytest.mark.parametrize("order", ["doubtful-failing-good", "failing-doubtful-good", "good-failing-doubtful"])
def test_a_send_left_in_doubt_by_a_crash_is_never_repeated_while_another_notifier_fails_and_is_retried(
    any_store, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    from monitor.core import faults

    servers = {name: Endpoint() for name in ("doubtful", "failing", "good")}
    try:
        urls = [servers[name].url for name in order.split("-")]
        doubtful, failing, good = servers["doubtful"], servers["failing"], servers["good"]
        failing.status = 500
        _judge(any_store, "m@1", day(0), {"seven": FINE, "three": FINE})
        [flag] = _judge(any_store, "m@1", day(1), {"seven": FLAGGED, "three": FINE})

        # Run 1 dies right after its send to the doubtful notifier: the receiver got it, the store cannot know.
        def die_after_the_doubtful_send(name: str) -> None:
            if name == "after_alert_send" and len(doubtful.bodies) == 1 and not killed:
                killed.append(name)
                raise _Killed

        killed: list[str] = []
        monkeypatch.setattr(faults, "point", die_after_the_doubtful_send)
        with pytest.raises(_Killed):
            deliver_pending(any_store, urls)
        assert len(doubtful.bodies) == 1
        assert _one(any_store, "alerts", {"alert_id": flag["alert_id"]})["sending"] == [_url_key(doubtful.url)]

        # Run 2: the doubtful send is not repeated, the failing notifier fails, the good one gets it once.
        report = deliver_pending(any_store, urls)
        assert (report.delivered, report.pending, report.failed) == (0, 1, 1)
        alert = _one(any_store, "alerts", {"alert_id": flag["alert_id"]})
        assert (
            alert["uncertain"] == [_url_key(doubtful.url)]
            and alert["sent_to"] == [_url_key(good.url)]
            and alert["sending"] == []
        )
        assert (
            alert["delivered"] is False and "127.0.0.1:" + str(failing.server.server_address[1]) in alert["last_error"]
        )
        assert f"may or may not have received alert id {flag['alert_id']}" in alert["last_error"]
        assert (len(doubtful.bodies), len(good.bodies)) == (1, 1)

        # Run 3: the failing notifier is back; only it is sent the alert, and the alert is done.
        failing.status = 200
        report = deliver_pending(any_store, urls)
        assert (report.delivered, report.pending, report.failed) == (1, 0, 0)
        alert = _one(any_store, "alerts", {"alert_id": flag["alert_id"]})
        assert alert["delivered"] is True and alert["uncertain"] == [_url_key(doubtful.url)]
        assert sorted(alert["sent_to"]) == sorted([_url_key(good.url), _url_key(failing.url)])
        assert flag["alert_id"] in failing.bodies[-1]["json"]["message"]

        # Run 4 sends nothing to anyone: each notifier saw the alert at most once (the failing one: its failed tries, then once).
        deliver_pending(any_store, urls)
        assert (len(doubtful.bodies), len(good.bodies)) == (1, 1)
        names = order.split("-")
        tried_before_the_crash = names.index("failing") < names.index("doubtful")
        assert len(failing.bodies) == (
            3 if tried_before_the_crash else 2
        )  # its 500s (one more if tried before the crash), then one 200
    finally:
        for server in servers.values():
            server.server.shutdown()
            server.server.server_close()
