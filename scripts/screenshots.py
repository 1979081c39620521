"""Screenshots of every dashboard page in headless Chromium, for the README (docs/screenshots/*.png).

Uses the store under MONITOR_DATA_DIR (or MONITOR_MONGO_URI) when it holds results; otherwise
builds the demo (digits, one class degraded) in a temporary folder first. Then serves the app on
127.0.0.1, opens each page, waits until its figures are drawn and saves a full-page PNG.

    .venv/bin/python scripts/screenshots.py                    # demo data, 14 days
    MONITOR_DATA_DIR=data .venv/bin/python scripts/screenshots.py
    .venv/bin/python scripts/screenshots.py --days 21 --out docs/screenshots
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboards import ids  # noqa: E402
from dashboards.app import EXTENSION, create_app, warm_up  # noqa: E402
from dashboards.data import DashboardData  # noqa: E402
from dashboards.status import class_status  # noqa: E402
from monitor.core.settings import Settings, load_settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_with_data(days: int, tmp: Path) -> Settings:
    """The configured store if it has results, else a fresh demo run in ``tmp``."""
    settings = load_settings()
    if DashboardData(settings).models():
        print(f"using the results in {DashboardData(settings).describe()}")
        return settings
    from monitor.orchestration.demo import run_demo

    demo_settings = load_settings(data_dir=tmp / "data")
    print(
        f"no results in {DashboardData(settings).describe()}: running the {days}-day demo in {demo_settings.data_dir} ..."
    )
    started = time.perf_counter()
    result = run_demo(demo_settings, days=days)  # the demo's fixed dates, as `monitor demo` runs it
    print(
        f"demo done in {time.perf_counter() - started:.0f} s: flagged {result['flagged']} (drop on {result['drop_date']})"
    )
    return demo_settings


def focus_class(data: DashboardData) -> str | None:
    """The class the detail pages show: the most urgent one."""
    model = data.model(None)
    if model is None:
        return None
    status = class_status(data.health(model.model_id))
    if status.empty:
        labels = data.labels(model.model_id)
        return labels[0] if labels else None
    order = {"needs_retraining": 0, "watch": 1, "insufficient_data": 2, "healthy": 3}
    ranked = sorted(
        status.index,
        key=lambda label: (order.get(status.loc[label, "verdict"], 9), -(status.loc[label, "prob_below_target"] or 0)),
    )
    return str(ranked[0])


def viewport(driver: Any, width: int, height: int) -> None:
    """Set the page's viewport exactly (a window size would include the browser's own frame)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--days", type=int, default=14, help="demo days when the demo has to be built")
    parser.add_argument("--width", type=int, default=1400)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait
    from werkzeug.serving import make_server

    with tempfile.TemporaryDirectory(prefix="screenshots-") as tmp:
        settings = settings_with_data(args.days, Path(tmp))
        app = create_app(settings)
        warm_up(app)
        data: DashboardData = app.server.extensions[EXTENSION]
        label = focus_class(data)
        port = _free_port()
        server = make_server("127.0.0.1", port, app.server, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{port}"
        chosen = f"?{ids.Q_CLASSES}={label}" if label else ""
        pages = [
            ("overview.png", "/", f"#{ids.OVERVIEW_HEATMAP} .js-plotly-plot .heatmaplayer"),
            ("class-health.png", ids.PATH_CLASS + chosen, f"#{ids.CLASS_TIMESERIES}-0 .js-plotly-plot .scatterlayer"),
            ("what-goes-wrong.png", ids.PATH_ERRORS + chosen, f"#{ids.CONFUSION_CHART} .js-plotly-plot"),
            ("run-detail.png", ids.PATH_RUN, f"#{ids.RUN_TABLE}"),
        ]
        options = webdriver.ChromeOptions()
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--window-size={args.width},1000",
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options)
        args.out.mkdir(parents=True, exist_ok=True)
        try:
            for name, path, ready in pages:
                viewport(driver, args.width, 900)
                driver.get(base + path)
                WebDriverWait(driver, 60).until(
                    expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ready))
                )
                # Thumbnails load after the page; wait until every image is decoded.
                WebDriverWait(driver, 30).until(
                    lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)")
                )
                time.sleep(1.0)  # Plotly's last layout pass
                height = int(
                    driver.execute_script(
                        "return Math.ceil(document.querySelector('.shell').getBoundingClientRect().bottom) + 16"
                    )
                )
                viewport(driver, args.width, max(600, height))
                time.sleep(0.5)
                target = args.out / name
                driver.save_screenshot(str(target))
                print(f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}  ({base}{path})")
        finally:
            driver.quit()
            server.shutdown()
            data.close()


if __name__ == "__main__":
    main()
