"""Alerts on verdict transitions (into ``needs_retraining``, and the recovery), stored first, then sent through apprise.

An alert is stored once per (model, class, date, kind) (unique index ``transition``), so a re-run of a
date raises nothing new; its ``alert_id`` (a hash of those four) is stable and goes out in the message,
so a receiver can drop a repeat. Delivery is separate: every undelivered alert is sent to every
notification URL on each run; a failure is logged, counted in ``attempts`` with its ``last_error``, and
retried on the next run, so an alert is never lost. Each URL that accepted an alert is remembered (by a
hash, in ``sent_to``), so a retry after a partial failure does not send it twice to the same place.

**At most once per recorded send.** Before each send the store records that the send is under way
(``sending``) and persists; right after it, the outcome, persisted again. A process killed in between
leaves ``sending`` behind: the next run does not send that alert to that URL again (it cannot know
whether the receiver got it), marks it ``uncertain`` with a note naming the alert id, and counts it
delivered. Exactly once is impossible across a crash; the window for doubt is the send itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import apprise

from monitor.core import faults
from monitor.core.errors import ConfigError, redact
from monitor.core.secrets import show_url
from monitor.core.verdicts import Verdict
from monitor.store import Store

log = logging.getLogger(__name__)

KINDS = (Verdict.NEEDS_RETRAINING.value, "recovered")  # into the verdict, or out of it


@dataclass(frozen=True)
class DeliveryReport:
    """What one :func:`deliver_pending` call did: alerts delivered now, still pending after it, failed sends."""

    delivered: int
    pending: int
    failed: int = 0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _previous_verdicts(store: Store, model_id: str, date: str, labels: list[str]) -> dict[str, str]:
    """Each class's latest verdict for ``model_id`` before ``date``."""
    return {
        label: str(row["verdict"])
        for label, row in store.latest_rows_before("class_health", model_id, date, labels).items()
    }


def alert_id(model_id: str, label: str, date: str, kind: str) -> str:
    """The stable id of the alert of one transition: the same on every run, machine and store."""
    return hashlib.sha256("\x1f".join((model_id, label, date, kind)).encode()).hexdigest()[:16]


def _message(kind: str, row: dict[str, Any]) -> str:
    head = f"Class {row['label']!r} of model {row['model_id']} "
    if kind == Verdict.NEEDS_RETRAINING:
        return head + f"needs retraining on {row['date']}: {row['reason']}"
    return head + f"recovered on {row['date']} (now {row['verdict']}): {row['reason']}"


def raise_alerts(store: Store, model_id: str, date: str, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Store one alert per class whose verdict moved into or out of ``needs_retraining`` on ``date``.

    The previous verdict is the class's latest stored one for this model before ``date`` (none: not
    flagged). Returns the alerts created by this call (a re-run of the date returns none). An
    undelivered alert of this date that no longer matches a transition (the date was re-evaluated)
    is withdrawn; a delivered one is kept, as it was already sent.
    """
    before = _previous_verdicts(store, model_id, date, sorted({str(row["label"]) for row in rows}))
    created: list[dict[str, Any]] = []
    wanted: set[tuple[str, str]] = set()
    for row in rows:
        label = str(row["label"])
        was = before.get(label) == Verdict.NEEDS_RETRAINING
        now = row["verdict"] == Verdict.NEEDS_RETRAINING
        if was == now:
            continue
        kind = Verdict.NEEDS_RETRAINING.value if now else "recovered"
        wanted.add((label, kind))
        evidence = {k: v for k, v in row.items() if k != "_id"}
        alert = {
            "alert_id": alert_id(model_id, label, date, kind),
            "model_id": model_id,
            "label": label,
            "date": date,
            "kind": kind,
            "message": _message(kind, evidence),
            "evidence": evidence,
            "created_at": _now(),
            "delivered": False,
            "delivered_at": None,
            "attempts": 0,
            "last_error": None,
            "sent_to": [],
            "sending": [],
            "uncertain": [],
        }
        if store.add_alert(alert):
            created.append(dict(alert))
    store.withdraw_alerts(model_id, date, wanted)
    for alert in created:
        log.info("alert: %s", alert["message"])
    return created


def _shown(url: str) -> str:
    """A URL fit for logs and errors: scheme and host only (apprise URLs carry tokens in the path)."""
    return show_url(url)


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def notifiers(urls: list[str]) -> list[tuple[str, apprise.Apprise]]:
    """One apprise object per URL (so each URL's success is known); refuses a URL apprise cannot use."""
    built: list[tuple[str, apprise.Apprise]] = []
    for position, url in enumerate(urls):
        notifier = apprise.Apprise()
        if not url.strip() or not notifier.add(url):
            raise ConfigError(
                f"MONITOR_ALERT_URLS[{position}] ({_shown(url)}) is not a notification URL apprise understands"
            )
        built.append((url, notifier))
    return built


def _send(notifier: apprise.Apprise, alert: dict[str, Any]) -> str | None:
    """Send one alert; None on success, else the reason apprise logged."""
    kind = alert["kind"]
    title = f"[class health] {alert['label']}: {Verdict.NEEDS_RETRAINING.text if kind == Verdict.NEEDS_RETRAINING else 'recovered'} ({alert['date']})"
    ident = alert.get("alert_id") or alert_id(alert["model_id"], alert["label"], alert["date"], kind)
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
        ok = notifier.notify(
            body=f"{alert['message']}\n(alert id {ident}: the same id means the same alert)",
            title=title,
            notify_type=apprise.NotifyType.FAILURE if kind == Verdict.NEEDS_RETRAINING else apprise.NotifyType.SUCCESS,
        )
    if ok:
        return None
    lines = [line.strip() for line in captured.getvalue().splitlines() if line.strip()]
    return redact(" | ".join(lines[-3:]))[:500] or "the notifier reported a failure without a reason"


def deliver_pending(store: Store, urls: list[str]) -> DeliveryReport:
    """Send every undelivered alert to every URL, at most once per URL (see the module docstring).

    Failures stay pending with ``attempts`` and ``last_error``; a send that a killed run left in doubt
    is not repeated but marked ``uncertain``.
    """
    built = notifiers(urls)  # validate before touching the store: a bad URL is a config error, not a failed send
    pending = store.pending_alerts()
    if not built:
        return DeliveryReport(delivered=0, pending=len(pending))
    delivered = failed = 0
    for alert in pending:
        ident = alert.get("alert_id") or alert_id(alert["model_id"], alert["label"], alert["date"], alert["kind"])
        sent_to = set(alert.get("sent_to") or [])
        uncertain = set(alert.get("uncertain") or [])
        in_doubt = set(alert.get("sending") or [])
        errors: list[str] = []
        for url, notifier in built:
            key = _url_key(url)
            if key in sent_to or key in uncertain:
                continue
            if key in in_doubt:  # a run died during this very send: at most once, so not again
                uncertain.add(key)
                log.warning(
                    "alert %s to %s: a previous run stopped while sending it; not sent again (at most once)",
                    ident,
                    _shown(url),
                )
                continue
            _record(store, alert, {"$addToSet": {"sending": key}})
            error = _send(notifier, alert)
            faults.point("after_alert_send")
            if error is None:
                sent_to.add(key)
                _record(store, alert, {"$addToSet": {"sent_to": key}, "$pull": {"sending": key}})
            else:
                _record(store, alert, {"$pull": {"sending": key}})
                errors.append(f"{_shown(url)}: {error}")
                log.warning(
                    "alert %s/%s/%s not delivered to %s: %s",
                    alert["model_id"],
                    alert["label"],
                    alert["date"],
                    _shown(url),
                    error,
                )
        done = not errors
        notes = errors + (
            [
                f"{len(uncertain)} notifier(s) may or may not have received alert id {ident} (a run stopped during the send)"
            ]
            if uncertain
            else []
        )
        _record(
            store,
            alert,
            {
                "$set": {
                    "alert_id": ident,
                    "sent_to": sorted(sent_to),
                    "uncertain": sorted(uncertain),
                    "sending": [],
                    "delivered": done,
                    "delivered_at": _now() if done else None,
                    "last_error": "; ".join(notes) if notes else None,
                },
                "$inc": {"attempts": 1},
            },
        )
        delivered += done
        failed += not done
    return DeliveryReport(delivered=delivered, pending=failed, failed=failed)


def _record(store: Store, alert: dict[str, Any], update: dict[str, Any]) -> None:
    """Record a delivery state and make it durable before anything else happens (at most once)."""
    store.update_alert(alert, update)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k != "_id"}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def list_alerts(store: Store, model_id: str | None = None, pending_only: bool = False) -> list[dict[str, Any]]:
    """Alerts, newest first (by transition date, then creation), JSON-friendly (ISO dates, no ``_id``)."""
    docs = store.alerts(model_id, pending_only=pending_only)
    return [_jsonable({k: v for k, v in doc.items() if k != "sent_to"}) for doc in docs]


def notify_operations(urls: list[str], title: str, body: str) -> list[str]:
    """Send one operational message (a failed or stuck daily run) to every URL; returns the URLs (shown masked)
    that did not take it. Not stored and not retried: the scheduler's run history is its record, and the text
    is masked as every output is (a failure's message may quote a URI)."""
    failed: list[str] = []
    for url, notifier in notifiers(urls):
        with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s"):
            ok = notifier.notify(body=redact(body), title=redact(title), notify_type=apprise.NotifyType.FAILURE)
        if not ok:
            failed.append(_shown(url))
    return failed
