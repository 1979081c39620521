"""Login on the dashboard server: with users configured nothing is served to a stranger (pages, callbacks, thumbnails,
the API, /metrics), a browser signs in on /login, a script with HTTP Basic; a proxy's header in header mode."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from werkzeug.security import generate_password_hash

from dashboards import ids
from monitor.core.settings import Settings
from tests.fixtures.dashboard import production_client

PASSWORD = "Tr0ub4dor-login"
USERS = {"ana": generate_password_hash(PASSWORD)}
HTML = {"Accept": "text/html,application/xhtml+xml"}


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _client(settings: Settings, **update: Any) -> Any:
    return production_client(settings.model_copy(update={"dashboard_users": USERS, **update}))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/models"),
        ("get", "/metrics"),
        ("get", "/thumb?date=2024-03-31&path=a/b.jpg"),
        ("post", "/_dash-update-component"),
        ("get", "/_dash-layout"),
    ],
)
def test_nothing_is_served_to_a_stranger(history, settings, method: str, path: str) -> None:
    response = getattr(_client(settings), method)(path)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Basic")
    assert b"ant" not in response.get_data()  # no stored class leaks into the refusal


def test_a_page_sends_a_browser_to_the_login_form_and_back_after_signing_in(history, settings) -> None:
    client = _client(settings)
    first = client.get("/class?classes=cat", headers=HTML)
    assert first.status_code == 302 and first.headers["Location"] == "/login?next=/class?classes=cat"
    form = client.get(first.headers["Location"])
    assert form.status_code == 200 and b'name="password"' in form.get_data()

    wrong = client.post("/login?next=/class", data={"username": "ana", "password": "nope"})
    assert wrong.status_code == 401 and b"Wrong user or password" in wrong.get_data()
    assert client.get("/api/v1/models").status_code == 401  # no cookie from a failed attempt

    signed = client.post("/login?next=/class?classes=cat", data={"username": "ana", "password": PASSWORD})
    assert signed.status_code == 302 and signed.headers["Location"] == "/class?classes=cat"
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/api/v1/models").status_code == 200 and client.get("/", headers=HTML).status_code == 200

    client.get("/logout")
    assert client.get("/api/v1/models").status_code == 401


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x"])
def test_the_login_never_redirects_off_the_server(history, settings, target: str) -> None:
    response = _client(settings).post(f"/login?next={target}", data={"username": "ana", "password": PASSWORD})
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_a_script_and_prometheus_sign_in_with_basic_credentials(history, settings) -> None:
    client = _client(settings)
    assert client.get("/metrics", headers=_basic("ana", PASSWORD)).status_code == 200
    models = client.get("/api/v1/models", headers=_basic("ana", PASSWORD))
    assert models.status_code == 200 and json.loads(models.get_data())["models"]
    for user, password in (("ana", "wrong"), ("bob", PASSWORD), ("", "")):
        assert client.get("/api/v1/models", headers=_basic(user, password)).status_code == 401


def test_header_mode_trusts_only_the_proxys_header(history, settings) -> None:
    client = production_client(settings.model_copy(update={"dashboard_user_header": "X-Forwarded-User"}))
    refused = client.get("/api/v1/models")
    assert refused.status_code == 401 and b"X-Forwarded-User" in refused.get_data()
    assert client.get("/api/v1/models", headers={"X-Forwarded-User": "ana@example.com"}).status_code == 200
    assert client.get("/login").status_code == 401  # no form: the proxy signs people in


def test_without_users_nothing_is_asked(history, settings) -> None:
    assert production_client(settings).get("/api/v1/models").status_code == 200


def test_a_password_instead_of_a_hash_is_refused_and_hashes_are_never_shown(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from monitor.orchestration.cli import app

    with pytest.raises(ValidationError, match="is not a password hash: give the output of `monitor hash-password`"):
        Settings(dashboard_users={"ana": PASSWORD})
    env = {
        "MONITOR_CONFIG": None,
        "MONITOR_DATA_DIR": str(tmp_path),
        "MONITOR_DASHBOARD_USERS": json.dumps(USERS),
        "MONITOR_DASHBOARD_SECRET_KEY": "k3y-that-signs-cookies",
    }
    shown = CliRunner(env=env).invoke(app, ["settings", "--json"])
    assert shown.exit_code == 0, shown.stderr
    values = json.loads(shown.stdout)
    assert values["dashboard_users"] == {"ana": "***"} and values["dashboard_secret_key"] == "***"
    assert USERS["ana"].split("$")[-1] not in shown.stdout and "k3y-that-signs-cookies" not in shown.stdout

    hashed = CliRunner().invoke(app, ["hash-password"], input=PASSWORD + "\n")
    assert hashed.exit_code == 0 and PASSWORD not in hashed.stdout
    assert Settings(dashboard_users={"ana": hashed.stdout.strip()}).dashboard_users["ana"].startswith("scrypt:")
    from werkzeug.security import check_password_hash

    assert check_password_hash(hashed.stdout.strip(), PASSWORD)
    short = CliRunner().invoke(app, ["hash-password"], input="short\n")
    assert short.exit_code == 2 and "shorter than 8" in short.stderr


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning:selenium.*")
def test_a_browser_signs_in_on_the_form_and_sees_the_overview(history, settings, tmp_path: Path) -> None:
    from tests.fixtures.browser import WAIT_S, dashboard_browser, wait_until

    secured = settings.model_copy(update={"dashboard_users": USERS})
    with dashboard_browser(secured, str(tmp_path), navigate=False) as browser:
        browser.driver.get(browser.server.url + "/")
        browser.wait_for_element("#username", timeout=WAIT_S)
        assert "/login" in browser.driver.current_url
        browser.find_element("#username").send_keys("ana")
        browser.find_element("#password").send_keys("wrong password")
        browser.find_element("#sign-in").click()
        browser.wait_for_element("#login-error", timeout=WAIT_S)
        browser.find_element("#username").send_keys("ana")
        browser.find_element("#password").send_keys(PASSWORD)
        browser.find_element("#sign-in").click()
        browser.wait_for_element(f"#{ids.OVERVIEW_HEATMAP} .js-plotly-plot", timeout=WAIT_S)
        wait_until(lambda: "/login" not in browser.driver.current_url, "the overview after signing in")
        assert "cat" in browser.find_element(f"#{ids.FLAGGED}").text
