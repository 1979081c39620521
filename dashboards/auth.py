"""Login for the dashboard server: its pages, their callbacks, the JSON API and ``/metrics``, when configured.

Two modes (:class:`~monitor.core.settings.Settings`):

- ``dashboard_users`` (``{"user": "<hash>"}``, hashes from ``monitor hash-password``, checked by werkzeug): a
  browser signs in on ``/login`` and gets a signed session cookie (``HttpOnly``, ``SameSite=Lax``, signed with
  ``dashboard_secret_key``); a script or Prometheus sends HTTP Basic credentials with each request instead;
- ``dashboard_user_header`` (e.g. ``X-Forwarded-User``): a reverse proxy (oauth2-proxy, an OIDC gateway) has
  signed the user in and names them in that header; a request without it is refused. Only safe when nothing but
  the proxy can reach the dashboard.

Unconfigured, nothing is asked (the default binds to 127.0.0.1 only). A refused page request is sent to
``/login``; any other refused request is a 401 (with ``WWW-Authenticate: Basic`` in password mode).
"""

from __future__ import annotations

import html
import logging
import secrets
from urllib.parse import urlsplit

from flask import Flask, Response, redirect, request, session
from werkzeug.security import check_password_hash

from monitor.core.settings import Settings

log = logging.getLogger(__name__)

LOGIN, LOGOUT = "/login", "/logout"
_REALM = 'Basic realm="class-health", charset="UTF-8"'
#: A hash to check when the user is unknown, so that a wrong name costs as long as a wrong password.
_DUMMY = "scrypt:32768:8:1$dummysaltdummysa$" + "0" * 128

_FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Class health: sign in</title>
<style>body{{font-family:system-ui,sans-serif;background:#f4f5f7;display:flex;justify-content:center;padding-top:12vh}}
form{{background:#fff;padding:2rem 2.5rem;border-radius:8px;box-shadow:0 1px 4px #0002;min-width:18rem}}
label{{display:block;margin:.8rem 0 .3rem}}input{{width:100%;padding:.4rem;box-sizing:border-box}}
button{{margin-top:1.2rem;padding:.5rem 1.2rem}}.error{{color:#b00020}}</style></head>
<body><form method="post" action="{action}"><h1>Class health</h1>{error}
<label for="username">User</label><input id="username" name="username" autocomplete="username" autofocus required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button id="sign-in" type="submit">Sign in</button></form></body></html>"""


def _valid(users: dict[str, str], user: str, password: str) -> bool:
    hashed = users.get(user)
    ok = check_password_hash(hashed or _DUMMY, password)
    return hashed is not None and ok


def _local(target: str | None) -> str:
    """``target`` if it is a path of this server (no scheme, no host), else ``/``: no open redirect."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _wants_page() -> bool:
    """A browser navigating to a page (not a callback, an asset, the API or a scrape)."""
    return request.method == "GET" and "text/html" in request.headers.get("Accept", "")


def install(server: Flask, settings: Settings) -> None:
    """Require a signed-in user on every route of ``server`` when ``settings`` configure a login."""
    users, header = dict(settings.dashboard_users), settings.dashboard_user_header
    if not users and not header:
        return
    server.secret_key = settings.dashboard_secret_key or secrets.token_hex(32)
    server.config.update(
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_NAME="class_health"
    )

    def user() -> str | None:
        if header:
            return request.headers.get(header) or None
        signed = session.get("user")
        if isinstance(signed, str) and signed in users:
            return signed
        basic = request.authorization
        if basic is not None and basic.type == "basic" and basic.username and basic.password is not None:
            if _valid(users, basic.username, basic.password):
                return basic.username
        return None

    @server.before_request
    def require_login() -> Response | None:
        if not header and request.path in (LOGIN, LOGOUT):
            return None
        if user() is not None:
            return None
        if header:
            return Response(f"sign in through the proxy (no {header} header)\n", 401, mimetype="text/plain")
        if _wants_page():
            return redirect(f"{LOGIN}?next={request.full_path.rstrip('?')}")  # type: ignore[return-value]
        return Response("sign in first\n", 401, {"WWW-Authenticate": _REALM}, mimetype="text/plain")

    if header:
        return

    @server.route(LOGIN, methods=["GET", "POST"])
    def login() -> Response:
        target = _local(request.args.get("next"))
        action = html.escape(f"{LOGIN}?next={target}", quote=True)
        if request.method == "GET":
            return Response(_FORM.format(action=action, error=""), mimetype="text/html")
        name = request.form.get("username", "")[:200]
        if _valid(users, name, request.form.get("password", "")[:1000]):
            session.clear()
            session["user"] = name
            log.info("dashboard: %s signed in", name)
            return redirect(target)  # type: ignore[return-value]
        log.warning("dashboard: a sign-in as %r failed", name)
        error = '<p class="error" id="login-error">Wrong user or password.</p>'
        return Response(_FORM.format(action=action, error=error), 401, mimetype="text/html")

    @server.route(LOGOUT, methods=["GET", "POST"])
    def logout() -> Response:
        session.clear()
        return redirect(LOGIN)  # type: ignore[return-value]
