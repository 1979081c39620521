"""The Dash app: ``create_app(settings)`` builds it (no queries, no globals at import), ``run()`` serves it.

Pages (a single-page router on ``dcc.Location``; the state lives in the query string):

- ``/``        overview: class x day/week/month heatmap, verdict counts, flagged classes with evidence
- ``/class``   class health over time: accuracy with its interval band, pooled estimate, target, verdict changes
- ``/errors``  what goes wrong: confusion pairs over time and a gallery of misclassified images
- ``/run``     run detail: per-class table of a date, skipped and failed images

Thumbnails come from ``/thumb?date=D&path=P``: only paths in the predictions file of ``D`` are
served, read through the configured image source (which itself refuses paths outside its root).
``/api/v1/...`` answers the same reads as JSON (:mod:`dashboards.api`); ``/metrics`` serves the store's class health, stage runs and pending alerts to Prometheus
(:mod:`dashboards.exposition`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

from dash import Dash
from flask import Response, abort, request
from prometheus_client.exposition import choose_encoder

from dashboards import auth, guards, ids
from dashboards.api import blueprint as api_blueprint
from dashboards.callbacks import register_callbacks
from dashboards.data import DashboardData
from dashboards.exposition import registry_for
from dashboards.pages import render_page
from dashboards.shell import app_shell
from dashboards.state import ViewState
from dashboards.style import INDEX_STRING
from monitor.core.errors import DataError, MonitorError, SourceError
from monitor.core.settings import Settings

log = logging.getLogger(__name__)

#: Where the app keeps its :class:`DashboardData` on the Flask server (``app.server.extensions``).
EXTENSION = "class_health_data"


def create_app(settings: Settings, *, data: DashboardData | None = None) -> Dash:
    """A Dash app over the store and image source of ``settings``; nothing is read until a page is requested."""
    if data is None:
        data = DashboardData(settings, background_reload=True)
        # After a pipeline run rewrites the store, pre-compute the default overview on the reload thread.
        data.on_reload = partial(render_page, data, ids.PATH_OVERVIEW, ViewState())
    app = Dash(
        __name__,
        title="Class health",
        update_title=None,  # type: ignore[arg-type]  # None turns the "Updating..." title off
        suppress_callback_exceptions=True,  # page components appear only when their page is rendered
        serve_locally=True,  # the dashboard works on machines without internet access
    )
    app.index_string = INDEX_STRING
    app.layout = app_shell
    register_callbacks(app, data)
    server = app.server
    auth.install(server, settings)  # first of all: pages, callbacks, thumbnails, the API and /metrics
    guards.install(app)  # malformed callback requests get a 400 before Dash reads them
    server.extensions[EXTENSION] = data

    @server.route(ids.PATH_THUMB)
    def thumbnail() -> Response:
        date = request.args.get("date", "")
        path = request.args.get("path", "")
        try:
            body = data.thumbnail(date, path)
        except DataError as exc:
            log.info("thumbnail refused: %s", exc)
            abort(404, description=str(exc))
        except SourceError as exc:
            log.warning("thumbnail unavailable: %s", exc)
            abort(502, description=str(exc))
        response = Response(body, mimetype="image/jpeg")
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response

    @server.route(ids.PATH_REPORT)
    def report() -> Response:
        from dashboards.report import render_report
        from dashboards.state import shown

        date = request.args.get("date") or None
        try:
            if date is not None:
                from dashboards.records import iso_date

                date = iso_date(date)
            body = render_report(data, date, request.args.get("model") or None)
        except DataError as exc:
            abort(404, description=str(exc) if date is None else f"{exc} (date {shown(date)})")
        return Response(body, mimetype="text/html")

    server.register_blueprint(api_blueprint(data))
    metrics_registry = registry_for(data)

    @server.route(ids.PATH_METRICS)
    def metrics() -> Response:
        # OpenMetrics when the scraper asks for it (Prometheus does), the classic text format otherwise.
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        try:
            body = encoder(metrics_registry)
        except MonitorError as exc:
            log.warning("metrics unavailable: %s", exc)
            abort(503, description=str(exc))
        return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})

    return app


def warm_up(app: Dash) -> float:
    """Load the store and render the default overview once, so the first visitor does not wait; returns the seconds spent.

    Also pays Plotly's one-off cost of building its figure validators (about a second).
    """
    data: DashboardData = app.server.extensions[EXTENSION]
    started = time.perf_counter()
    data.warm()
    render_page(data, ids.PATH_OVERVIEW, ViewState())
    elapsed = time.perf_counter() - started
    log.info("dashboard over %s ready in %.2f s", data.describe(), elapsed)
    return elapsed


def run(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8050,
    debug: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard (blocking) on ``host:port``; 127.0.0.1 and debug off unless asked.

    Served by waitress, a production WSGI server (threads, no debugger, bounded request sizes);
    ``debug`` uses Dash's development server with its debugger instead. The address is bound before
    the store is read: a port in use or an address that is not this host's is one ConfigError line.
    """
    app = create_app(settings)
    if debug:
        _check_bind(host, port)
        warm_up(app)
        app.run(host=host, port=port, debug=True)
        return
    from waitress.server import create_server

    try:
        server = create_server(
            app.server, host=host, port=port, threads=8, ident="class-health", max_request_body_size=1 << 20
        )
    except (OSError, ValueError, OverflowError) as exc:
        raise _bind_error(host, port, exc) from exc
    try:
        warm_up(app)
        address = f"http://{host}:{port}"
        log.info("dashboard on %s (waitress)", address)
        if on_ready is not None:  # the CLI says where to look, as a line of its own (not a log record)
            on_ready(address)
        server.run()
    finally:
        server.close()


def _bind_error(host: str, port: int, exc: BaseException) -> Exception:
    """One readable line for an address the dashboard cannot listen on, with what to change."""
    import errno
    import socket

    from monitor.core.errors import ConfigError

    if isinstance(exc, (socket.gaierror, ValueError)):  # waitress turns a name that does not resolve into a ValueError
        reason = f"{host!r} is not a known host name or address"
    elif getattr(exc, "errno", None) == errno.EADDRINUSE:
        reason = f"port {port} is in use (another dashboard or program listens there)"
    elif getattr(exc, "errno", None) == errno.EADDRNOTAVAIL:
        reason = f"{host!r} is not an address of this machine"
    elif getattr(exc, "errno", None) == errno.EACCES:
        reason = f"port {port} needs privileges this process lacks"
    else:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return ConfigError(
        f"cannot serve the dashboard on {host}:{port}: {reason}; choose another --host/--port (MONITOR_DASHBOARD_HOST/PORT)"
    )


def _check_bind(host: str, port: int) -> None:
    """Bind ``host:port`` once and let go, so that the development server's failure is the same one line."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except (OSError, ValueError, OverflowError) as exc:
        raise _bind_error(host, port, exc) from exc
