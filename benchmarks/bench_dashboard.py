"""Dashboard page load and server memory for a long history: 100 classes x 365 days of class_metrics + class_health
(targets: < 2 s a load, the server's peak memory <= 1 GB).

Synthesises the history in an embedded store (written through the store layer, as the pipeline
writes it, in a temporary data dir, by a child process so that its memory is not the server's):
every class ~95% accurate on 10 images a day, a few classes drifting down late in the year, and
per-day health rows whose window evidence is pooled from those counts. Then, in one run:

- **start-up**: ``monitor dashboard``'s warm-up before it serves (store opened, default overview);
- **server**: the overview's page callback over HTTP (``POST /_dash-update-component``, the
  request the browser makes), warm (median of several); then a writer commits the last day again,
  as a pipeline run does: the request right after the commit (the first on the new commit: the
  model's history is read again), the time until ``on_reload`` has pooled the default overview on
  its thread, and a request after that;
- **browser**: headless Chromium loading ``/`` until the heatmap is drawn and the flagged list is
  on the page (navigation start to ready): the first load of a new browser, loads with the cache
  cleared (every JS bundle fetched and compiled) and warm loads; skipped without chromedriver;
- **memory**: the peak resident set of this process, which is the server (the store read, the
  histories kept, every request above; the browser is another process): after the start-up and at
  the end, against the 1 GB goal.

    .venv/bin/python benchmarks/bench_dashboard.py            # 100 classes x 365 days
    .venv/bin/python benchmarks/bench_dashboard.py --quick    # 30 classes x 120 days (< 1 minute)
    .venv/bin/python benchmarks/bench_dashboard.py --classes 1000 --days 365 --data-dir /tmp/bd1000 --json

Figures are for the embedded store (partitioned BSON files behind a manifest); a real MongoDB was
not available here. At 1,000 classes x 365 days (2026-12-07, 2 cores under a load average of 14 to 16
from other jobs): the server's peak memory went from 2.50 GB, when the store kept every decoded
document of the year, to 0.80 GB (0.73 GB after the start-up): the store keeps at most 50,000
decoded documents, and the dashboard reads only the columns it shows, a few weeks at a time, with
repeated text shared. The browser figures are the page's own (navigation start to ready, noted in
the page); before 2026-12-07 they were seen by WebDriver polling every 0.5 s, up to 0.5 s later.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import multiprocessing
import os
import platform
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboards import ids  # noqa: E402
from dashboards.app import EXTENSION, create_app, warm_up  # noqa: E402
from monitor.core.settings import Settings, load_settings  # noqa: E402
from monitor.core.stats import wilson_intervals  # noqa: E402
from monitor.store import open_store  # noqa: E402

TARGET_S = 2.0
#: The server's peak resident memory goal (1 GB).
MEMORY_GOAL_MB = 1000.0
MODEL = "bench-resnet@0123456789ab"


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MB (10^6 bytes): Linux reports KiB, macOS bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def synthesise(classes: int, days: int, end: dt.date, settings: Settings, seed: int = 0) -> int:
    """Write ``classes`` x ``days`` class_metrics and class_health documents into the embedded store (one commit)."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    labels = [f"class_{i:04d}" for i in range(classes)]
    dates = [(end - dt.timedelta(days=days - 1 - k)).isoformat() for k in range(days)]
    p = np.full((days, classes), 0.95)
    drifting = rng.choice(classes, size=max(1, classes // 20), replace=False)
    for c in drifting:  # a drop late in the year for 5% of the classes
        p[int(days * 0.8) :, c] = rng.uniform(0.5, 0.8)
    n = np.full((days, classes), 10)
    correct = rng.binomial(n, p)
    low, high = wilson_intervals(correct.ravel(), n.ravel(), 0.95)
    window = 14
    cn, cc = np.cumsum(n, axis=0), np.cumsum(correct, axis=0)
    pn, pc = cn.copy(), cc.copy()
    pn[window:] -= cn[:-window]
    pc[window:] -= cc[:-window]
    plow, phigh = wilson_intervals(pc.ravel(), pn.ravel(), 0.95)
    prob = stats.beta.cdf(0.9, pc + 1, pn - pc + 1)
    verdict = np.where(
        pn < 20,
        "insufficient_data",
        np.where(prob > 0.995, "needs_retraining", np.where(prob > 0.95, "watch", "healthy")),
    )
    metrics: list[dict[str, Any]] = []
    health: list[dict[str, Any]] = []
    for d, date in enumerate(dates):
        start = dates[max(0, d - window + 1)]
        for c, label in enumerate(labels):
            i = d * classes + c
            k, m = int(correct[d, c]), int(n[d, c])
            wrong = m - k
            metrics.append(
                {
                    "model_id": MODEL,
                    "date": date,
                    "label": label,
                    "n": m,
                    "correct": k,
                    "failed": 0,
                    "accuracy": k / m,
                    "ci_low": float(low[i]),
                    "ci_high": float(high[i]),
                    "tp": k,
                    "fp": wrong,
                    "fn": wrong,
                    "precision": 0.9,
                    "recall": k / m,
                    "f1": 0.9,
                    "confusions": [{"pred": labels[(c + 1) % classes], "count": wrong}] if wrong else [],
                }
            )
            health.append(
                {
                    "model_id": MODEL,
                    "date": date,
                    "label": label,
                    "verdict": str(verdict[d, c]),
                    "target": 0.9,
                    "window_days": window,
                    "window_start": start,
                    "pooled_n": int(pn[d, c]),
                    "pooled_correct": int(pc[d, c]),
                    "pooled_accuracy": float(pc[d, c] / pn[d, c]),
                    "ci_low": float(plow[i]),
                    "ci_high": float(phigh[i]),
                    "prob_below_target": float(prob[d, c]),
                    "cusum": 0.0,
                    "cusum_threshold": 5.0,
                    "method": "synthetic",
                    "reason": f"{label}: {pc[d, c]}/{pn[d, c]} correct over {window} days; P(below 90%) = {prob[d, c]:.2f}",
                }
            )
    with open_store(settings) as store:
        for kind, docs in (("class_metrics", metrics), ("class_health", health)):
            for d, date in enumerate(dates):
                store.replace_day(kind, MODEL, date, docs[d * classes : (d + 1) * classes])
        for date in (dates[0], dates[-1]):
            store.register_model(MODEL, name="bench-resnet", checksum="0123456789ab", labels=labels, date=date)
        store.commit()
    return len(metrics) + len(health)


def synthesise_apart(classes: int, days: int, end: dt.date, settings: Settings) -> int:
    """:func:`synthesise` in a child process: the year it builds (GBs of documents at 1,000 classes) is not counted
    in this process's peak memory, which is the server's."""
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        return int(pool.apply(synthesise, (classes, days, end, settings)))


def recommit_last_day(settings: Settings) -> None:
    """What a pipeline run does to the history: replace one day's class metrics, then commit."""
    with open_store(settings) as store:
        last = store.dates("class_metrics", MODEL)[-1]
        rows = store.rows("class_metrics", MODEL, start=last, end=last)
        store.replace_day(
            "class_metrics",
            MODEL,
            last,
            [{k: v for k, v in row.items() if k not in ("model_id", "date")} for row in rows],
        )
        store.commit()


def store_size_mb(settings: Settings) -> float:
    root = settings.store_dir / settings.mongo_db
    return sum(path.stat().st_size for path in root.rglob("*.bson")) / 1e6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def page_request() -> dict[str, Any]:
    """The body the browser posts to render the overview (the router callback: URL -> nav, filters, page)."""
    outputs = [
        {"id": ids.NAV, "property": "children"},
        {"id": ids.FILTERS, "property": "children"},
        {"id": ids.PAGE, "property": "children"},
    ]
    return {
        "output": "...".join(f"{o['id']}.{o['property']}" for o in outputs).join(["..", ".."]),
        "outputs": outputs,
        "inputs": [
            {"id": ids.URL, "property": "pathname", "value": "/"},
            {"id": ids.URL, "property": "search", "value": ""},
        ],
        "changedPropIds": [f"{ids.URL}.pathname", f"{ids.URL}.search"],
        "state": [[], [], []],
    }


def timed_post(url: str, body: dict[str, Any]) -> tuple[float, int]:
    import urllib.request

    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - our own local server
        payload = response.read()
        status = response.status
    elapsed = time.perf_counter() - started
    if status != 200 or ids.OVERVIEW_HEATMAP.encode() not in payload:
        raise SystemExit(f"the overview callback answered {status} without a heatmap: {payload[:300]!r}")
    return elapsed, len(payload)


#: Run in every page before its own scripts: the time (``performance.now()``, from navigation start) at which the
#: heatmap is drawn and the flagged list is present, noted by the page itself, so no polling rounds it up.
READY_SCRIPT = """
(() => {
  const ready = () => document.querySelector(%(heatmap)s) && document.getElementById(%(flagged)s);
  new MutationObserver((_, observer) => {
    if (window.__benchReadyMs === undefined && ready()) {
      window.__benchReadyMs = performance.now();
      observer.disconnect();
    }
  }).observe(document, {childList: true, subtree: true});
})();
"""


def browser_loads(url: str, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Per kind of load, in headless Chromium: ``page``, the seconds from navigation start to the heatmap drawn and the
    flagged list present, as the page notes it (:data:`READY_SCRIPT`); ``wall``, the same seen from here (WebDriver's
    round trips and a 50 ms poll included); ``cpu``, the page's main-thread CPU seconds (Chrome's ``TaskDuration`` in
    thread time: what a machine busy with other jobs does not inflate).

    ``first``: the first navigation of a newly started browser (its own start-up included);
    ``cold``: the browser cache cleared before each load (every JS bundle fetched and compiled);
    ``warm``: a reload with the cache as a returning user has it.
    """
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options)
    driver.execute_cdp_cmd("Performance.enable", {"timeDomain": "threadTicks"})
    heatmap = f"#{ids.OVERVIEW_HEATMAP} .js-plotly-plot .heatmaplayer"
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {"source": READY_SCRIPT % {"heatmap": json.dumps(heatmap), "flagged": json.dumps(ids.FLAGGED)}},
    )

    def load() -> tuple[float, float, float]:
        started = time.perf_counter()
        driver.get(url)
        for selector in (heatmap, f"#{ids.FLAGGED}"):
            WebDriverWait(driver, 60, poll_frequency=0.05).until(
                expected_conditions.presence_of_element_located((By.CSS_SELECTOR, selector))
            )
        wall = time.perf_counter() - started
        page_ms = driver.execute_script("return window.__benchReadyMs")
        metrics = {m["name"]: m["value"] for m in driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}
        page = float(page_ms) / 1000 if page_ms is not None else float("nan")
        return page, wall, float(metrics.get("TaskDuration", float("nan")))  # per document: this load's main thread

    loads: dict[str, dict[str, list[float]]] = {
        name: {"first": [], "cold": [], "warm": []} for name in ("page", "wall", "cpu")
    }
    try:
        for kind, count in (("first", 1), ("cold", repeats), ("warm", repeats)):
            for _ in range(count):
                if kind == "cold":
                    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
                for name, value in zip(("page", "wall", "cpu"), load(), strict=True):
                    loads[name][kind].append(value)
    finally:
        driver.quit()
    return loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeats", type=int, default=5, help="warm server requests / browser loads")
    parser.add_argument("--quick", action="store_true", help="30 classes x 120 days, 3 repeats")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (the figures, in seconds) instead of the lines"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep the synthesised store here and reuse it on the next run of the same size (1,000 x 365 takes minutes to write)",
    )
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request would bury the figures
    if args.quick:
        args.classes, args.days, args.repeats = 30, 120, 3
    say = (lambda *_: None) if args.json else print
    say(
        f"bench_dashboard: {args.classes} classes x {args.days} days, {platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    result: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": dt.date.today().isoformat(),
        "classes": args.classes,
        "days": args.days,
        "load_average_before": round(os.getloadavg()[0], 1),
    }
    with contextlib.ExitStack() as stack:
        root = (
            args.data_dir
            if args.data_dir
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-dashboard-")))
        )
        settings = load_settings(data_dir=root / "data")
        marker = root / "bench-dashboard.json"
        size_key = {"classes": args.classes, "days": args.days, "seed": 0}
        started = time.perf_counter()
        if args.data_dir and marker.is_file() and json.loads(marker.read_text()) == size_key:
            say(f"reusing the store in {root} ({store_size_mb(settings):.1f} MB of store files)")
        else:
            if args.data_dir and (root / "data").exists():
                shutil.rmtree(root / "data")
            docs = synthesise_apart(args.classes, args.days, dt.date(2025, 12, 31), settings)
            if args.data_dir:
                marker.write_text(json.dumps(size_key))
            say(
                f"synthesised {docs:,} documents ({store_size_mb(settings):.1f} MB of store files) in {time.perf_counter() - started:.1f} s"
            )
        result["store_mb"] = round(store_size_mb(settings), 1)

        from werkzeug.serving import make_server

        app = create_app(settings)
        data = app.server.extensions[EXTENSION]
        port = _free_port()
        server = make_server("127.0.0.1", port, app.server, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        try:
            start_s = warm_up(app)
            startup_peak_mb = peak_rss_mb()
            cpu = time.process_time()
            warm = [timed_post(base + "/_dash-update-component", page_request())[0] for _ in range(args.repeats)]
            warm_cpu_s = (
                time.process_time() - cpu
            ) / args.repeats  # the server's CPU per request: robust to a busy machine
            warm_s = statistics.median(warm)
            # A pipeline run commits: the served app sees the commit on its next request (its cached
            # answers dropped), and on_reload pre-computes the default overview on a thread.
            reloaded = threading.Event()
            warm_overview = data.on_reload

            def on_reload() -> None:
                if warm_overview is not None:
                    warm_overview()
                reloaded.set()

            data.on_reload = on_reload
            recommit_last_day(settings)
            written = time.perf_counter()
            after_commit_s, size = timed_post(base + "/_dash-update-component", page_request())
            if not reloaded.wait(300):
                raise SystemExit("the dashboard never followed the new commit")
            reload_s = time.perf_counter() - written
            fresh_s = timed_post(base + "/_dash-update-component", page_request())[0]
            say(f"start-up warm-up (store read + render)  {start_s:6.2f} s   (monitor dashboard, before serving)")
            say(
                f"overview callback, warm (median of {args.repeats})   {warm_s:6.2f} s   ({size / 1e3:.0f} kB response; {warm_cpu_s:.2f} s of server CPU)"
            )
            say(
                f"overview callback right after a commit  {after_commit_s:6.2f} s   (the first request on the new commit)"
            )
            say(
                f"new commit followed + overview pooled   {reload_s:6.2f} s   after the commit, on_reload on its thread"
            )
            say(f"overview callback after that            {fresh_s:6.2f} s")
            result.update(
                startup_s=round(start_s, 2),
                response_kb=round(size / 1e3),
                server_warm_cpu_s=round(warm_cpu_s, 3),
                reload_s=round(reload_s, 2),
            )
            figures = {"server_warm": warm_s, "after_commit": after_commit_s, "on_new_data": fresh_s}
            if args.no_browser or shutil.which("chromedriver") is None:
                say(
                    "browser: skipped (no chromedriver on PATH)"
                    if not args.no_browser
                    else "browser: skipped (--no-browser)"
                )
                result["browser"] = "skipped"
            else:
                loads = browser_loads(base + "/", args.repeats)
                page, wall, main_thread = loads["page"], loads["wall"], loads["cpu"]
                cold, warm_load = statistics.median(page["cold"]), statistics.median(page["warm"])
                cold_cpu, warm_cpu = statistics.median(main_thread["cold"]), statistics.median(main_thread["warm"])
                cold_wall, warm_wall = statistics.median(wall["cold"]), statistics.median(wall["warm"])
                say(
                    f"browser, first load of a new browser    {page['first'][0]:6.2f} s   (browser start-up included; {wall['first'][0]:.2f} s seen by WebDriver)"
                )
                say(
                    f"browser load, cache cleared (median)    {cold:6.2f} s   (navigation to heatmap drawn, all JS fetched; {cold_cpu:.2f} s main-thread CPU; {cold_wall:.2f} s seen by WebDriver)"
                )
                say(
                    f"browser load, warm cache (median)       {warm_load:6.2f} s   ({warm_cpu:.2f} s main-thread CPU; {warm_wall:.2f} s seen by WebDriver)"
                )
                say(
                    f"  each load, cache cleared: {', '.join(f'{v:.2f}' for v in page['cold'])} s; warm: {', '.join(f'{v:.2f}' for v in page['warm'])} s"
                )
                result["browser_first_s"] = round(page["first"][0], 2)
                result["browser_cold_loads_s"] = [round(v, 2) for v in page["cold"]]
                result["browser_warm_loads_s"] = [round(v, 2) for v in page["warm"]]
                result["browser_cold_webdriver_s"] = round(cold_wall, 2)
                result["browser_warm_webdriver_s"] = round(warm_wall, 2)
                result["browser_cold_main_thread_cpu_s"] = round(cold_cpu, 2)
                result["browser_warm_main_thread_cpu_s"] = round(warm_cpu, 2)
                figures["browser_cold"] = cold
                figures["browser_warm"] = warm_load
            for name, value in figures.items():
                verdict = "meets" if value < TARGET_S else "MISSES"
                say(f"  {name:14s} {value:5.2f} s = {value / TARGET_S:4.2f} x the {TARGET_S:.0f} s target: {verdict}")
            result.update({f"{name}_s": round(value, 2) for name, value in figures.items()})
            peak_mb = peak_rss_mb()
            memory_verdict = "meets" if peak_mb <= MEMORY_GOAL_MB else "MISSES"
            say(
                f"server peak memory (this process)       {peak_mb:6.0f} MB = {peak_mb / MEMORY_GOAL_MB:4.2f} x the 1 GB goal: {memory_verdict} ({startup_peak_mb:.0f} MB after the start-up)"
            )
            result.update(
                server_peak_rss_mb=round(peak_mb),
                server_startup_peak_rss_mb=round(startup_peak_mb),
                memory_goal_mb=MEMORY_GOAL_MB,
                memory_ratio=round(peak_mb / MEMORY_GOAL_MB, 2),
            )
            result["load_average_after"] = round(os.getloadavg()[0], 1)
            result["target_s"] = TARGET_S
            result["misses"] = sorted(name for name, value in figures.items() if value >= TARGET_S) + (
                ["server_memory"] if peak_mb > MEMORY_GOAL_MB else []
            )
            say(
                f"load average {result['load_average_before']} before, {result['load_average_after']} after ({os.cpu_count()} cores): above the core count, the figures are inflated"
            )
            if args.json:
                print(json.dumps(result, indent=2))
        finally:
            server.shutdown()
            data.close()


if __name__ == "__main__":
    main()
