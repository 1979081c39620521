"""The ``monitor`` command line: parse, load settings, call the library, print a table or JSON.

One concept: the commands (each a few lines of option parsing, one library call and its rendering).

Every command reads its settings from ``MONITOR_*`` environment variables and an optional
TOML file (``--config`` or ``MONITOR_CONFIG``, else ``./monitor.toml``); ``monitor settings``
shows the effective values. Errors print one line on stderr and exit non-zero (2 bad input,
3 source, 4 store, 5 model, 6 missing data, 7 Spark); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text
from typer._click import exceptions as click_errors
from typer._click import globals as click_globals  # typer vendors click: its contexts and usage errors are these

from monitor.core.errors import ConfigError, DataError, MonitorError, redact
from monitor.core.progress import ProgressFactory
from monitor.core.secrets import RedactingFilter, install_log_masking, printable, redact_data
from monitor.core.settings import Settings, load_settings
from monitor.core.verdicts import Verdict


class _OneLineErrors(typer.core.TyperGroup):
    """The top-level group: a usage error (unknown option, bad or missing value) is one line on stderr and exit 2, like every other error."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except (
            click_errors.NoArgsIsHelpError
        ) as exc:  # `monitor` or `monitor store` alone: the help on stdout, one line on stderr
            shown = exc.ctx.get_help()  # typer's rich help prints itself and returns ""
            if shown:
                out.print(shown, markup=False, highlight=False)
            err.print(
                _line(("error:", "bold red"), f" missing command (see `{exc.ctx.command_path} --help`)"),
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            context = getattr(exc, "ctx", None)
            where = context.command_path if context is not None else "monitor"
            message = " ".join(exc.format_message().split())
            if "--json" in (sys.argv[1:] if args is None else args):  # not parsed: the words as given
                _print_json({"error": {"exit_code": exc.exit_code, "type": "UsageError", "message": message}})
            err.print(
                _line(("error:", "bold red"), f" {message} (see `{where} --help`)"), highlight=False, soft_wrap=True
            )
            sys.exit(exc.exit_code)
        except typer.Abort:
            err.print("interrupted", markup=False)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="monitor",
    cls=_OneLineErrors,
    help=(
        "Daily class-health monitoring for an image classifier: index a bucket, sample, evaluate, judge health, alert.\n\n"
        "Exit codes: 0 done; 1 a bug (traceback shown); 2 bad input or settings; 3 image source; 4 store; "
        "5 model; 6 missing data; 7 Spark; 130 interrupted. Errors are one line on stderr (--debug: the traceback, secrets masked)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Nothing a user or the store supplies is read as markup or emoji: values go out as Text (see _safe, _line, _cell).
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)
_state: dict[str, Any] = {"debug": False}

T = TypeVar("T")

DateOption = Annotated[str, typer.Option("--date", "-d", help="Run date YYYY-MM-DD (UTC); not in the future.")]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables (logs stay on stderr).")
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Redo every stage for the date instead of reusing its sample and predictions.")
]


def _show_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import PackageNotFoundError, version

        try:
            shown = version("class-health-monitor")
        except PackageNotFoundError:  # run from a source tree that was never installed
            shown = "unknown (not installed: bash scripts/setup.sh)"
        sys.stdout.write(f"class-health-monitor {shown}\n")
        raise typer.Exit(0)


class LogFormat(StrEnum):
    """How log records are written on stderr (``--log-format``, ``MONITOR_LOG_FORMAT``)."""

    AUTO = "auto"
    TEXT = "text"
    JSON = "json"


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_show_version)
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show info logs on stderr.")] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML settings file (same keys as the MONITOR_ variables, lower case)."),
    ] = None,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            envvar="MONITOR_LOG_FORMAT",
            help="Log lines on stderr: auto (rich on a terminal, plain lines otherwise), text (plain lines) or json "
            "(one JSON object a line: time, level, logger, message; secrets masked).",
        ),
    ] = LogFormat.AUTO,
) -> None:
    """Monitor which classes of an image classifier are getting worse, with statistical evidence."""
    global out, err
    # Made per invocation: rich fixes a console's width from COLUMNS when it is made, and the width of
    # this run's output is the environment of this run (an in-process caller may have changed it since import).
    out, err = _console(stderr=False), _console(stderr=True)
    _state["debug"] = debug
    _state["log_format"] = log_format.value
    if config is not None:
        if not config.is_file():
            what = "is not a regular file (a folder, device or pipe)" if config.exists() else "does not exist"
            _fail(MonitorError(f"config file {config} {what}; give --config a TOML file"), code=2)
        os.environ["MONITOR_CONFIG"] = str(config)
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    handler: logging.Handler
    line_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if log_format is LogFormat.JSON:  # for a log collector: one object a line, never wrapped
        from pythonjsonlogger.json import JsonFormatter

        handler = _PlainStderr()
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "exc_info": "traceback"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    elif err.is_terminal and log_format is LogFormat.AUTO:
        handler = RichHandler(console=err, show_path=False)
        line_format = "%(message)s"
    else:  # a pipe or a file: one plain line a record, never wrapped or padded to a width
        handler = _PlainStderr()
    if handler.formatter is None:
        handler.setFormatter(logging.Formatter(line_format))
    handler.addFilter(RedactingFilter())  # every log line, a library's own included, with secrets masked
    install_log_masking()  # and for every other handler too (records are masked as they are made)
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("py4j", "urllib3", "google", "PIL", "filelock"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # google.auth warns "no project" before the client fails; the error line says it with the remedy.
    logging.getLogger("google.auth").setLevel(logging.DEBUG if debug else logging.ERROR)


#: The width of tables written to a pipe or a file: rich's default of 80 columns cut class names and verdicts
#: ("verdi…") and wrapped alert texts a word a line. COLUMNS, when set, still decides.
PIPED_WIDTH = 240


def _console(stderr: bool) -> Console:
    """A console on stdout or stderr (whichever it is when printing: a test runner swaps them per invocation):
    the terminal's width, or :data:`PIPED_WIDTH` when it is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    wide = not (hasattr(stream, "isatty") and stream.isatty()) and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, emoji=False, width=PIPED_WIDTH if wide else None)


class _PlainStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Log records as plain lines on whatever ``sys.stderr`` is when each comes."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _safe(value: Any) -> str:
    """Any value as text fit to print: secrets masked, bytes that are not UTF-8 (surrogate escapes) shown as escapes."""
    return printable(str(value))


def _line(*parts: str | tuple[str, str]) -> Text:
    """One printed line from plain pieces and ``(text, style)`` pieces; no piece is read as markup."""
    return Text.assemble(*((_safe(part[0]), part[1]) if isinstance(part, tuple) else _safe(part) for part in parts))


def _cell(value: Any, style: str = "") -> Text:
    """A table cell holding ``value`` as literal text (a label like ``[red]`` stays as it is)."""
    return Text(_safe(value), style=style)


def _fail(exc: BaseException, code: int = 1) -> NoReturn:
    message = " ".join(_safe(exc).splitlines()) or type(exc).__name__  # one line, whatever the message holds
    if _json_requested():  # a script reading stdout gets one JSON object, failure or not
        _print_json({"error": {"exit_code": code, "type": type(exc).__name__, "message": message}})
    if _state.get("log_format") == LogFormat.JSON.value:  # a log collector reads the error as one more record
        logging.getLogger("monitor").error(message, extra={"exit_code": code, "error_type": type(exc).__name__})
    else:
        err.print(_line(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _json_requested() -> bool:
    """Whether the command being run was given ``--json`` (its parsed parameters)."""
    context = click_globals.get_current_context(silent=True)
    return bool(context is not None and context.params.get("json_out"))


def _run(fn: Callable[[], T]) -> T:
    """Call the library; a MonitorError becomes one readable line and its exit code."""
    try:
        return fn()
    except MonitorError as exc:
        if _state["debug"]:
            raise
        _fail(exc, exc.exit_code)


def _settings(**overrides: Any) -> Settings:
    return _run(lambda: load_settings(**{k: v for k, v in overrides.items() if v is not None}))


def _progress() -> ProgressFactory:
    """Progress bars on stderr (stdout stays one JSON object under ``--json``)."""
    from monitor.core.progress import rich_progress

    return rich_progress(err)


def _print_json(data: Any) -> None:
    """``data`` as JSON on stdout, every string in it through the masking (before and after encoding, for escaped forms).

    Every object printed carries ``schema_version``: its shape is ``schemas/<output>.v<version>.json``
    (:mod:`monitor.orchestration.schemas`).
    """
    from monitor.orchestration.schemas import versioned

    data = versioned(data) if isinstance(data, dict) else data
    text = redact(json.dumps(redact_data(data), default=lambda value: redact(str(value)), indent=2, ensure_ascii=False))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a name that is not UTF-8 (a surrogate escape): \u escapes keep the JSON valid
        text = redact(
            json.dumps(redact_data(data), default=lambda value: redact(str(value)), indent=2, ensure_ascii=True)
        )
    sys.stdout.write(text + "\n")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


VERDICT_STYLE: dict[str, str] = {
    Verdict.HEALTHY: "green",
    Verdict.WATCH: "yellow",
    Verdict.NEEDS_RETRAINING: "bold red",
    Verdict.INSUFFICIENT_DATA: "dim",
}


def _class_table(title: str, rows: Sequence[Mapping[str, Any]], level: float) -> Table:
    table = Table(title=_cell(title))
    for name, justify in [
        ("class", "left"),
        ("n", "right"),
        ("correct", "right"),
        ("failed", "right"),
        ("accuracy", "right"),
        (f"{level:.0%} interval", "center"),
        ("verdict", "left"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        verdict = row.get("verdict") or ""
        table.add_row(
            _cell(row["label"]),
            _cell(row["n"]),
            _cell(row["correct"]),
            _cell(row.get("failed", 0)),
            _cell(_fmt(row["accuracy"])),
            _cell(f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"),
            _cell(verdict, VERDICT_STYLE.get(verdict, "") if isinstance(verdict, str) else ""),
        )
    return table


@app.command()
def index(json_out: JsonOption = False) -> None:
    """List the image source (MONITOR_SOURCE_URI) and upsert one document per image into the store.

    Incremental and idempotent: only new or changed blobs are written; vanished ones are marked
    missing; unusable files (not an image, zero bytes, wrong depth) are recorded with a reason.
    """
    from monitor.orchestration.index_stage import run_index

    settings = _settings()
    summary = _run(lambda: run_index(settings, progress=_progress()))
    if json_out:
        _print_json(summary)
        return
    if summary["wrote_nothing"]:
        out.print(_line(f"{summary['source']}: {summary['listed']} blobs listed, nothing changed; wrote nothing."))
    else:
        out.print(
            _line(
                f"{summary['source']}: {summary['listed']} listed, {summary['new']} new, {summary['updated']} updated, "
                f"{summary['unchanged']} unchanged, {summary['missing']} vanished, {summary['reappeared']} reappeared."
            )
        )
    if summary["unusable"]:
        out.print(
            _line(
                "unusable: " + ", ".join(f"{reason} {count}" for reason, count in sorted(summary["unusable"].items()))
            )
        )
    out.print(_line("classes: " + ", ".join(f"{label} {count}" for label, count in sorted(summary["labels"].items()))))


@app.command()
def sample(date: DateOption, json_out: JsonOption = False, force: ForceOption = False) -> None:
    """Draw the stratified sample for a date (MONITOR_SAMPLES_PER_CLASS per class, default 10) into samples/DATE.csv.

    Each image counts once per model: only images the production model (MONITOR_MODEL_DIR) has not
    evaluated are drawn, newest arrivals first; a class the model never evaluated draws up to
    MONITOR_FIRST_DRAW (200) at once; a class with nothing unseen left draws nothing (listed as exhausted).
    Reproducible: the same date and MONITOR_SEED give the same images; only images created
    on or before the date are drawn (and within MONITOR_FRESH_DAYS when set). Classes that the
    latest verdicts put on watch (or flagged) get follow-up images beyond N (MONITOR_FOLLOWUP_SAMPLES),
    marked draw=followup in the CSV.
    """
    from monitor.orchestration.sample_stage import run_sample

    settings = _settings()
    summary = _run(lambda: run_sample(settings, date, force=force))
    if json_out:
        _print_json(summary)
        return
    out.print(
        _line(
            f"{summary['images']} images over {len(summary['classes'])} classes -> {summary['samples_csv']}"
            + (" (existing sample reused)" if summary["reused"] else "")
        )
    )
    for label, available in sorted(summary["short_classes"].items()):
        out.print(
            _line(
                (
                    f"class {label!r} has only {available} images available (wanted {settings.samples_per_class})",
                    "yellow",
                )
            )
        )
    if summary["followup"]:
        out.print(
            _line(
                "follow-up images (classes on watch or flagged): "
                + ", ".join(f"{label} +{k}" for label, k in summary["followup"].items())
            )
        )
    if summary.get("exhausted"):
        out.print(
            _line(
                "nothing new to evaluate (every image already evaluated by this model): "
                + ", ".join(summary["exhausted"])
            )
        )


@app.command()
def evaluate(
    date: Annotated[
        str | None, typer.Option("--date", "-d", help="Run date YYYY-MM-DD (UTC); not in the future.")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option("--from", help="Backfill: the first date of a range evaluated in order, resumable (with --to)."),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Backfill: the last date of the range; default today (UTC).")
    ] = None,
    json_out: JsonOption = False,
    force: ForceOption = False,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="local (this process; GPU when present) or spark (predict as a Spark job). Default MONITOR_ENGINE.",
        ),
    ] = None,
) -> None:
    """The main job: everything the date still needs, end to end, then a per-class table.

    With --from D1 --to D2, every date of the range in order (a backfill): a line per date on stderr, dates
    already evaluated skipped, and after a failure the same command goes on from the date that failed.

    Indexes and samples (unless the date already has a sample), predicts with the model
    (MONITOR_MODEL_DIR), computes per-class metrics with Spark SQL (MONITOR_SPARK_MASTER),
    judges class health over the stored history and raises alerts (MONITOR_ALERT_URLS).
    """
    from monitor.orchestration.pipeline import evaluate as run_evaluate

    if engine is not None and engine not in ("local", "spark"):
        _fail(MonitorError(f"--engine {engine!r} is not one of: local, spark"), 2)
    if (date is None) == (start is None) or (end is not None and start is None):
        _fail(ConfigError("give --date D, or --from D1 [--to D2] for a range"), 2)
    settings = _settings(engine=engine)
    if start is not None:
        from monitor.core.dates import today_utc
        from monitor.orchestration.pipeline import evaluate_range

        def line(text: str) -> None:
            err.print(_line(text), highlight=False, soft_wrap=True)

        done = _run(
            lambda: evaluate_range(settings, start, end or today_utc(), force=force, progress=_progress(), report=line)
        )
        if json_out:
            _print_json(done)
            return
        evaluated = [d for d in done["dates"] if d["status"] == "evaluated"]
        out.print(
            _line(
                f"{done['start']}..{done['end']}: {len(evaluated)} date(s) evaluated, "
                f"{len(done['dates']) - len(evaluated)} done before"
            )
        )
        return
    assert date is not None
    result = _run(lambda: run_evaluate(settings, date, force=force, progress=_progress()))
    if json_out:
        _print_json(result)
        return
    out.print(
        _class_table(
            f"{result['date']} · {result['model']} · {result['sampled']} images",
            result["classes"],
            settings.confidence_level,
        )
    )
    out.print(_line(f"sample: {result['samples_csv']}\npredictions: {result['predictions']}"))
    if result["followup"]:
        out.print(
            _line(
                "follow-up images (classes on watch or flagged): "
                + ", ".join(f"{label} +{k}" for label, k in result["followup"].items())
            )
        )
    if result["skipped"]:
        out.print(_line("skipped at index: " + ", ".join(f"{k} {v}" for k, v in sorted(result["skipped"].items()))))
    if result["failed"]:
        out.print(
            _line(
                ("failed at predict:", "yellow"),
                " " + ", ".join(f"{k} {v}" for k, v in sorted(result["failed"].items())),
            )
        )
    if result["flagged"]:
        out.print(_line(("needs retraining:", "bold red"), f" {', '.join(result['flagged'])}"))


def _health_rows(settings: Settings, date: str | None) -> tuple[str, list[dict[str, Any]]]:
    """The stored verdicts of ``date`` (default: the latest judged date), read without locking or writing the store."""
    from monitor.core.dates import days_after, iso_day, parse_run_date
    from monitor.store import open_store

    if date is not None:
        date = parse_run_date(date).isoformat()
    with open_store(settings, read_only=True) as store:
        if date is None:
            judged = store.dates("class_health")
            if not judged:
                raise DataError("the store holds no verdicts yet: run `monitor evaluate --date YYYY-MM-DD` first")
            date = judged[-1]
        rows = sorted(
            store.rows("class_health", None, start=date, end=date),
            key=lambda row: (str(row["label"]), str(row["model_id"])),
        )
        if not rows:
            measured = store.dates("class_metrics", before=days_after(iso_day(date)).isoformat())
            hint = f"run `monitor evaluate --date {date}`" + (
                "" if measured and measured[-1] == date else " (nothing was measured that day)"
            )
            raise DataError(f"no verdicts for {date} in {store.description}: {hint}")
    return date, rows


@app.command()
def health(
    date: Annotated[
        str | None, typer.Option("--date", "-d", help="Date YYYY-MM-DD; default the latest evaluated date.")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Each class's verdict (healthy, watch, needs_retraining, insufficient_data) with the evidence behind it.

    Evidence: pooled counts over the last MONITOR_WINDOW_DAYS days with their interval, the
    target (MONITOR_TARGET_ACCURACY / MONITOR_TARGET_OVERRIDES), the posterior probability of
    being below target, and the CUSUM statistic against its threshold.
    """
    settings = _settings()
    day, rows = _run(lambda: _health_rows(settings, date))
    if json_out:
        _print_json({"date": day, "classes": rows})
        return
    out.print(health_table(day, rows))


def health_table(day: str, rows: list[dict[str, Any]]) -> Table:
    """The health table shared by ``monitor health`` and ``monitor demo``."""
    table = Table(title=_cell(f"class health on {day}" + (f" · {rows[0]['model_id']}" if rows else "")))
    for name in ("class", "verdict", "window", "pooled", "accuracy", "interval", "target", "P(below)", "CUSUM / h"):
        table.add_column(name)
    for row in rows:
        verdict = row.get("verdict")
        table.add_row(
            _cell(row.get("label", "?")),
            _cell(verdict, VERDICT_STYLE.get(verdict, "") if isinstance(verdict, str) else ""),
            _cell(f"{row.get('window_start', '?')}…{day}"),
            _cell(f"{row.get('pooled_correct', 0)}/{row.get('pooled_n', 0)}"),
            _cell(_fmt(row.get("pooled_accuracy"))),
            _cell(f"[{_fmt(row.get('ci_low'))}, {_fmt(row.get('ci_high'))}]"),
            _cell(_fmt(row.get("target"), 2)),
            _cell(_fmt(row.get("prob_below_target"), 2)),
            _cell(f"{_fmt(row.get('cusum'), 1)} / {_fmt(row.get('cusum_threshold'), 1)}"),
        )
    return table


@app.command()
def alerts(
    json_out: JsonOption = False,
    pending: Annotated[bool, typer.Option("--pending", help="Only alerts not delivered yet.")] = False,
) -> None:
    """List alerts (a class moving into needs_retraining, or recovering), with their delivery state."""
    from monitor.domain.alerts import list_alerts
    from monitor.store import open_store

    settings = _settings()

    def fetch() -> list[dict[str, Any]]:
        with open_store(settings, read_only=True) as store:  # a reader: no lock, no write
            return list_alerts(store, pending_only=pending)

    rows = _run(fetch)
    if json_out:
        _print_json({"alerts": rows})
        return
    table = Table(title=f"{len(rows)} alert(s)")
    for name in ("date", "class", "kind", "model", "delivered", "attempts", "message"):
        table.add_column(name)
    for row in rows:
        table.add_row(
            _cell(row.get("date")),
            _cell(row.get("label")),
            _cell(row.get("kind")),
            _cell(row.get("model_id")),
            _cell("yes") if row.get("delivered") else _cell("pending", "yellow"),
            _cell(row.get("attempts", 0)),
            _cell(row.get("message", "")),
        )
    out.print(table)


@app.command()
def demo(
    days: Annotated[int, typer.Option(help="Days to simulate, ending on --end.", min=3, max=365)] = 21,
    end: Annotated[
        str | None,
        typer.Option(
            "--end",
            help="Last simulated day YYYY-MM-DD; default 2026-11-30, fixed so that every run gives the same figures.",
        ),
    ] = None,
    drop_day: Annotated[
        int | None,
        typer.Option(
            help="Day (1-based) from which the degraded class's new images are damaged; default 60% into the run."
        ),
    ] = None,
    degrade: Annotated[str, typer.Option(help="Class whose newly arriving images are degraded.")] = "eight",
    drop_to: Annotated[
        float | None,
        typer.Option(
            help="A moderate drop: damage only the share of the class's new images that brings its accuracy to about this (e.g. 0.8). Default: damage all (about 0.5).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    json_out: JsonOption = False,
    candidate: Annotated[
        bool,
        typer.Option(
            "--candidate",
            help="Also predict a stand-in retrained model every day: better on the degraded class, slightly worse on another (see `monitor compare`).",
        ),
    ] = False,
    source_only: Annotated[
        bool,
        typer.Option(
            "--source-only",
            help="Only build the default image source (all held-out digits, dated 2026-01-01) and stop; set-up runs this.",
        ),
    ] = False,
) -> None:
    """Simulate daily arrivals of new validation images (held-out scikit-learn digits), degrade one class from some day on,
    run every day end to end, and end with the health table: the degraded class, and only it, gets flagged.

    Works in MONITOR_DATA_DIR (default ./data): it (re)builds the demo source there. It works only in a
    folder it created (its .monitor-demo marker) or a new or empty one, and deletes nothing it did not build.
    """
    from monitor.core.dates import parse_run_date
    from monitor.orchestration.demo import build_setup_source, run_demo

    settings = _settings()
    last = _run(lambda: parse_run_date(end)) if end is not None else None
    if source_only:
        built = _run(lambda: build_setup_source(settings))
        if json_out:
            _print_json(built)
        else:
            dated = f", dated {built['dated']}" if built["dated"] else " (already there, left as it is)"
            out.print(_line(f"Image source {built['source']}: {built['images']} images{dated}."))
        return
    result = _run(
        lambda: run_demo(
            settings,
            days=days,
            drop_day=drop_day,
            degrade=degrade,
            drop_to=drop_to,
            end=last,
            candidate=candidate,
            progress=_progress(),
        )
    )
    if json_out:
        _print_json({k: v for k, v in result.items()})
        return
    out.print(health_table(result["last_date"], result["health"]))
    flagged = result["flagged"]
    severity = (
        ""
        if drop_to is None
        else f" to about {drop_to:.2f} ({result['severity']['share']:.0%} of its new images damaged)"
    )
    out.print(
        _line(
            f"Simulated {days} days ({result['first_date']} … {result['last_date']}); class {degrade!r} degraded{severity} from {result['drop_date']}."
        )
    )
    followed = sorted({(label, day["date"]) for day in result["daily"] for label in day["followup"]})
    if followed:
        by_label: dict[str, list[str]] = {}
        for label, day in followed:
            by_label.setdefault(label, []).append(day)
        out.print(
            _line(
                "Follow-up images drawn: "
                + "; ".join(f"{label} on {len(days_)} day(s) from {days_[0]}" for label, days_ in by_label.items())
            )
        )
    if flagged:
        for label, day in sorted(result["first_flagged"].items()):
            out.print(
                _line(
                    (f"{label}: needs retraining", "bold red"),
                    f" since {day} (day {result['days_to_flag'].get(label, '?')} of the drop, which began {result['drop_date']})",
                )
            )
    else:
        out.print(_line(("No class was flagged.", "yellow")))
    if result.get("candidate"):
        out.print(
            _line(
                f"Candidate {result['candidate']} was predicted beside production every day: `monitor compare --candidate {result['candidate']} --since {result['drop_date']}`."
            )
        )
    out.print(_line(f"Data in {settings.data_dir}; see it with `monitor dashboard`."))


@app.command()
def dashboard(
    host: Annotated[str | None, typer.Option(help="Bind address (default MONITOR_DASHBOARD_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default MONITOR_DASHBOARD_PORT, 8050).")] = None,
    debug_mode: Annotated[
        bool,
        typer.Option(
            "--dash-debug",
            help="Dash debug mode: its development server with reloader and dev tools instead of waitress. Off by default.",
        ),
    ] = False,
) -> None:
    """Serve the class-health dashboard (Dash) over the same store the pipeline writes."""
    from dashboards.app import run

    settings = _settings(dashboard_host=host, dashboard_port=port)
    _run(
        lambda: run(
            settings,
            host=settings.dashboard_host,
            port=settings.dashboard_port,
            debug=debug_mode,
            on_ready=lambda address: err.print(f"dashboard on {address} (Ctrl-C stops it)", markup=False),
        )
    )


@app.command()
def compare(
    candidate: Annotated[
        str,
        typer.Option(
            "--candidate", "-c", help="Candidate model id (name@checksum), or its name when only one candidate has it."
        ),
    ],
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="First date YYYY-MM-DD to pool; default the candidate's first day of predictions."
        ),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Last date YYYY-MM-DD to pool; default today (UTC).")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Compare a candidate with production class by class on the same images, and say whether to promote it.

    Per class: the paired counts (both right, only production right, only candidate right, both
    wrong), McNemar's exact test, the accuracy difference with its paired interval. Verdict:
    promote (every flagged class significantly better, no class worse); reject (names the classes
    significantly worse, Holm over all classes, by more than MONITOR_NONINFERIORITY_MARGIN);
    insufficient_data (with the days still needed at the observed rate). Level MONITOR_COMPARE_ALPHA.
    """
    from monitor.core.dates import parse_run_date, today_utc
    from monitor.orchestration.compare_stage import compare_and_save

    settings = _settings()

    def run() -> dict[str, Any]:
        first = parse_run_date(since) if since else None
        last = parse_run_date(until) if until else today_utc()
        if first and first > last:
            raise ConfigError(f"--since {first} is after --until {last}")
        # The result is stored for the dashboard (`comparisons`); a comparison that fails writes nothing.
        return dict(compare_and_save(settings, candidate, since=first, until=last).to_dict())

    result = _run(run)
    if json_out:
        _print_json(result)
        return
    table = Table(
        title=_cell(
            f"{result['candidate']} vs {result['production']} · {result['start']}..{result['end']} ({result['days']} days)"
        )
    )
    for name in (
        "class",
        "n",
        "both right",
        "only prod.",
        "only cand.",
        "both wrong",
        "difference",
        f"{settings.confidence_level:.0%} interval",
        "McNemar p",
        "Holm p (worse)",
        "",
    ):
        table.add_column(name, justify="left" if name in ("class", "") else "right")
    for row in result["classes"]:
        mark = (
            _cell("worse", "bold red")
            if row["worse"]
            else _cell("improved", "green")
            if row["improved"]
            else _cell("flagged" if row["flagged"] else "")
        )
        table.add_row(
            _cell(row["label"]),
            _cell(row["n"]),
            _cell(row["both_right"]),
            _cell(row["only_production"]),
            _cell(row["only_candidate"]),
            _cell(row["both_wrong"]),
            _cell(_fmt(row["difference"])),
            _cell(f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"),
            _cell(_fmt(row["p_mcnemar"], 4)),
            _cell(_fmt(row["p_worse_holm"], 4)),
            mark,
        )
    out.print(table)
    style = {"promote": "bold green", "reject": "bold red"}.get(result["verdict"], "yellow")
    out.print(_line((str(result["verdict"]), style), f": {result['reason']}"))


predictions_app = typer.Typer(
    help="Predictions made outside the service (a model served elsewhere) for the day's sample.", no_args_is_help=True
)
app.add_typer(predictions_app, name="predictions")


@predictions_app.command("import")
def predictions_import(
    file: Annotated[
        Path, typer.Argument(help="CSV or Parquet: image_path, pred, and optionally score, per sampled path.")
    ],
    date: DateOption,
    model_id: Annotated[
        str | None,
        typer.Option("--model-id", help="The id the predictions are stored under; default MONITOR_MODEL_DIR's id."),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Take a team's own predictions of the date's sample (samples/DATE.csv), then compute metrics, health and alerts.

    Every sampled path must be predicted once and no other path; the first row that is not is named. Draw the
    sample first with `monitor sample --date DATE`.
    """
    from monitor.orchestration.import_stage import import_predictions

    settings = _settings()
    done = _run(lambda: import_predictions(settings, date, file, model_id=model_id))
    if json_out:
        _print_json(done)
        return
    out.print(
        _class_table(
            f"{done['date']} · {done['model_id']} · imported {done['rows']} predictions",
            done["classes"],
            settings.confidence_level,
        )
    )
    if done["flagged"]:
        out.print(_line(("needs retraining:", "bold red"), f" {', '.join(done['flagged'])}"))


candidate_app = typer.Typer(
    help="Candidate models, predicted beside production on the same sampled images every day.", no_args_is_help=True
)
app.add_typer(candidate_app, name="candidate")


@candidate_app.command("add")
def candidate_add(
    model_dir: Annotated[Path, typer.Argument(help="A model directory like MONITOR_MODEL_DIR.")],
    json_out: JsonOption = False,
) -> None:
    """Register a candidate model: from the next run on, each day's sample is also predicted with it."""
    from monitor.orchestration.candidates import add_candidate

    settings = _settings()
    done = _run(lambda: add_candidate(settings, model_dir))
    if json_out:
        _print_json(done)
        return
    out.print(_line(f"{'added' if done['added'] else 'already registered'}: {done['model_id']} ({done['model_dir']})"))


@candidate_app.command("remove")
def candidate_remove(
    model_dir: Annotated[Path, typer.Argument(help="The directory given to `monitor candidate add`.")],
    json_out: JsonOption = False,
) -> None:
    """Stop predicting a registered candidate (its stored predictions stay, `monitor compare` still reads them)."""
    from monitor.orchestration.candidates import remove_candidate

    settings = _settings()
    done = _run(lambda: remove_candidate(settings, model_dir))
    if json_out:
        _print_json(done)
        return
    out.print(_line(f"removed: {done['model_dir']}"))


@candidate_app.command("list")
def candidate_list(json_out: JsonOption = False) -> None:
    """The candidates predicted each day: from MONITOR_CANDIDATE_MODEL_DIRS and from `monitor candidate add`."""
    from monitor.orchestration.candidates import list_candidates

    settings = _settings()
    rows = _run(lambda: list_candidates(settings))
    if json_out:
        _print_json({"candidates": rows})
        return
    table = Table(title="candidates")
    for name in ("model dir", "model id", "from"):
        table.add_column(name)
    for row in rows:
        table.add_row(_cell(row["model_dir"]), _cell(row["model_id"] or ""), _cell(row["from"]))
    out.print(table)


@app.command("report")
def report(
    out_path: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write (replaced if it exists).")],
    date: Annotated[
        str | None, typer.Option("--date", "-d", help="Date YYYY-MM-DD; default the latest judged date.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model id; default the latest evaluated.")] = None,
) -> None:
    """Write a self-contained HTML report of a date: verdicts, what the evidence says, next steps, alerts, the run.

    One file with its style inline and no script: it can be mailed or archived. The dashboard serves the same
    report at /report?date=D.
    """
    from dashboards.data import DashboardData
    from dashboards.report import render_report
    from monitor.core.dates import parse_run_date
    from monitor.core.files import atomic_write

    settings = _settings()

    def write() -> Path:
        day = parse_run_date(date).isoformat() if date else None
        data = DashboardData(settings)
        try:
            text = render_report(data, day, model)
        finally:
            data.close()
        return atomic_write(out_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), what="report")

    written = _run(write)
    out.print(_line(f"Wrote {written}."))


@app.command("hash-password")
def hash_password() -> None:
    """Print the hash of a dashboard password, for MONITOR_DASHBOARD_USERS ({"user": "<hash>"}).

    The password is read from standard input (a terminal asks twice, without echo); it is never printed or stored.
    """
    import getpass

    from werkzeug.security import generate_password_hash

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            _fail(ConfigError("the two passwords differ"), code=2)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        _fail(ConfigError("the password is shorter than 8 characters"), code=2)
    out.print(generate_password_hash(password), highlight=False, soft_wrap=True)


@app.command("settings")
def show_settings(json_out: JsonOption = False) -> None:
    """Show the effective settings (environment, config file, defaults); passwords, tokens and webhook URLs masked."""
    from monitor.core.settings import shown_settings

    settings = _settings()
    values = shown_settings(settings)  # the one masked view of the settings: the table and the JSON show the same
    if json_out:
        _print_json(values)
        return
    table = Table(title="settings")
    table.add_column("MONITOR_ variable")
    table.add_column("value")
    table.add_column("meaning")
    for name, field in type(settings).model_fields.items():
        value = values[name]
        shown = (
            json.dumps(value, ensure_ascii=False)
            if isinstance(value, (dict, list))
            else ""
            if value is None
            else str(value)
        )
        table.add_row(_cell(f"MONITOR_{name.upper()}"), _cell(shown), _cell(field.description or ""))
    out.print(table)


store_app = typer.Typer(
    help="The embedded store: what it holds, and going back to its last good commit.", no_args_is_help=True
)
app.add_typer(store_app, name="store")


@store_app.command("info")
def store_info(json_out: JsonOption = False) -> None:
    """Documents per collection and, for the embedded store, its commit, files and backups (read-only)."""
    from monitor.store import open_store

    settings = _settings()

    def fetch() -> dict[str, Any]:
        with open_store(settings, read_only=True) as store:
            return {"store": store.description, **store.info(), "documents": store.counts()}

    info = _run(fetch)
    if json_out:
        _print_json(info)
        return
    table = Table(title=_cell(info["store"]))
    table.add_column("what")
    table.add_column("value")
    for key, value in info.items():
        if key != "store":
            table.add_row(
                _cell(key), _cell(", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else value)
            )
    out.print(table)


@store_app.command("restore")
def store_restore(json_out: JsonOption = False) -> None:
    """Go back to the newest commit of the embedded store whose files all read (after a corrupt file; the last 3 are kept).

    Waits for no writer: it refuses while one runs. The manifest it replaces is kept as manifest.json.bad.
    Re-run `monitor evaluate --date ...` afterwards for whatever the dropped commits had done.
    """
    from monitor.store.embedded import restore

    settings = _settings()

    def go_back() -> dict[str, Any]:
        if settings.mongo_uri:
            raise ConfigError(
                "`monitor store restore` is for the embedded store; MONITOR_MONGO_URI is set (use MongoDB's own backups)"
            )
        return restore(settings.store_dir / settings.mongo_db)

    done = _run(go_back)
    if json_out:
        _print_json(done)
        return
    out.print(
        _line(
            f"restored {done['store']} from {done['restored_from']} (commit {done['commit']} of {done['committed_at']})"
        )
    )
    for skipped in done["skipped"]:
        out.print(_line(("skipped", "yellow"), f" {skipped}"))


def entry() -> None:
    """The ``monitor`` console script: the app, with any traceback (``--debug``, or a bug) printed with secrets masked."""
    import traceback

    try:
        app(standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        err.print("interrupted")
        raise SystemExit(130) from None
    except BaseException as exc:  # noqa: BLE001 (the last line of defence: print it masked, never swallow it)
        sys.stderr.write(redact("".join(traceback.format_exception(exc))))
        raise SystemExit(exc.exit_code if isinstance(exc, MonitorError) else 1) from None


if __name__ == "__main__":  # pragma: no cover
    entry()
