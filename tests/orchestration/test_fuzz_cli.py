"""Property-based fuzzing of the ``monitor`` command line: its arguments and its settings (``MONITOR_*`` values).

Whatever the input, a command
- exits with a documented code (0 done, 2 bad input or settings, 3 source, 4 store, 5 model, 6 missing data, 7 Spark),
- on failure prints exactly one line on stderr (``error: ...``) and never a traceback,
- shows no secret (the fuzzed MongoDB URIs carry ``Kq7Wv``/``Zr9Pm`` in their user-info),
- changes nothing on disk it did not mean to: a reader (``settings``, ``health``, ``alerts``, ``store info``,
  ``compare``, ``candidate list``) changes nothing at all, a failed ``store restore`` nothing either, and a
  writer (``index``, ``sample``, ``candidate add/remove``) nothing outside its data folder.

Commands run in-process through typer's CliRunner. The budget is fixed and the search derandomized (the same
examples on every run, no example database), so CI is reproducible: ``FUZZ_EXAMPLES`` (default 60 per property)
raises it, e.g. ``FUZZ_EXAMPLES=2000 pytest tests/orchestration/test_fuzz_cli.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import strategies as st
from typer.testing import CliRunner

from monitor.core.settings import Settings
from monitor.orchestration.cli import app
from tests.fixtures.fuzz import fuzz_settings

FUZZ = fuzz_settings(60, [HealthCheck.function_scoped_fixture])
DOCUMENTED_EXIT_CODES = {0, 2, 3, 4, 5, 6, 7}
SECRET_FRAGMENTS = ("Kq7Wv", "Zr9Pm")
FIELDS = sorted(f"MONITOR_{name.upper()}" for name in Settings.model_fields)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PORT = _closed_port()

# --- values -------------------------------------------------------------------------------------------

INTERESTING = [
    "",
    " ",
    "0",
    "-1",
    "1",
    "3",
    "1e999",
    "-1e999",
    "nan",
    "inf",
    "1.5",
    "0.9999999",
    "2**63",
    str(2**63),
    str(2**63 - 1),
    "99999999999999999999999",
    "9" * 5000,
    "true",
    "null",
    "{}",
    "[]",
    "[",
    "{",
    '{"7": 0.8}',
    '{"Spyder": 0.5}',
    '["a", 1]',
    '{"spark.executor.memory": "2g", "spark.executorEnv.PW": "Kq7WvZr9Pm"}',
    "[" * 3000 + "]" * 3000,
    "2026-11-20",
    "0001-01-01",
    "9999-12-31",
    "1969-12-31",
    "2026-02-30",
    "[/]",
    "[red]2026-11-20",
    "[bold]x[/bold]",
    ":warning:",
    "\\",
    "..",
    "../../etc",
    "/",
    "/dev/null",
    "/dev/zero",
    "/proc/self/environ",
    "~nosuchuser/x",
    "gs://",
    "gs://[b/x",
    "gs://b/p?x=1",
    "file://remote/x",
    "file:///",
    "https://x/y",
    "caf\udce9",
    "é" * 300,
    "a\nb",
    "a\rb",
    "\t",
    "x" * 5000,
    "local[*]",
    "spark://127.0.0.1:1",
    "cpu",
    "cuda",
    "auto",
    "spark",
    "local",
]
plain_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
text_values = st.one_of(st.sampled_from(INTERESTING), plain_text)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
passwords = st.builds(
    lambda sep, middle: f"Kq7Wv{sep}{middle}{sep}Zr9Pm",
    st.sampled_from(["", " ", "@", "/", ":", "#", "?", "%40", "%2F", '"', "\\", "[red]", "\t"]),
    st.text(alphabet="abc :@/#?%", max_size=6),
)
secret_mongo_uris = st.one_of(
    st.builds(lambda pw: f"mongodb://ops:{pw}@127.0.0.1:{PORT}/", passwords),
    st.builds(lambda pw: f"mongodb://ops:{pw}@127.0.0.1:{PORT},127.0.0.1:{PORT}/?replicaSet=rs0", passwords),
    st.builds(lambda pw: f"mongodb://{pw}@127.0.0.1:{PORT}/", passwords),
)
mongo_uris = st.one_of(secret_mongo_uris, secret_mongo_uris, text_values)
#: Values of the text-like settings that load, so that the fuzz also gets past validation.
ACCEPTED = {
    "MONITOR_ALERT_URLS": ["[]", '["json://127.0.0.1:1/hook"]', '["slack://TokA/TokB/TokC/#c"]'],
    "MONITOR_SPARK_CONF": ["{}", '{"spark.executor.memory": "1g", "spark.executorEnv.PW": "Kq7WvZr9Pm"}'],
    "MONITOR_TARGET_OVERRIDES": ["{}", '{"zero": 0.8}', '{"Spyder": 0.7}'],
    "MONITOR_CANDIDATE_MODEL_DIRS": ["[]"],
    "MONITOR_MONGO_DB": ["class_health", "other_db"],
    "MONITOR_DASHBOARD_HOST": ["127.0.0.1", "::1"],
    "MONITOR_SPARK_MASTER": ["local[1]"],
    "MONITOR_MODEL_DIR": [str(Settings.model_fields["model_dir"].default)],
}
values = st.one_of(text_values, numbers)


def _in_range(name: str) -> st.SearchStrategy[str]:
    """Values a setting accepts (from its declared type and bounds): the fuzz reaches past validation, not only into it."""
    import typing

    import annotated_types

    if name in ACCEPTED:
        return st.sampled_from(ACCEPTED[name])
    if name == "MONITOR_MONGO_URI":
        return secret_mongo_uris
    field = Settings.model_fields[name.removeprefix("MONITOR_").lower()]
    kinds = typing.get_args(field.annotation) or (field.annotation,)
    bound = {
        type(m).__name__: getattr(m, type(m).__name__.lower())
        for m in field.metadata
        if isinstance(m, (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt))
    }
    if typing.get_origin(field.annotation) is typing.Literal:
        return st.sampled_from([str(kind) for kind in kinds])
    if bool in kinds:
        return st.sampled_from(["true", "false", "1", "0"])
    if int in kinds:
        return st.integers(bound.get("Ge", 0), min(bound.get("Le", 10**6), 10**6)).map(str)
    if float in kinds:
        low, high = bound.get("Ge", bound.get("Gt", 0.0)), bound.get("Le", bound.get("Lt", 1.0))
        return st.floats(low, high, exclude_min="Gt" in bound, exclude_max="Lt" in bound, allow_nan=False).map(repr)
    return text_values


def _environments(fields: list[str], most: int) -> st.SearchStrategy[dict[str, str]]:
    """Up to ``most`` MONITOR_ variables, each as often in its range as anything at all."""
    pair = st.sampled_from(fields).flatmap(
        lambda name: st.tuples(st.just(name), st.one_of(_in_range(name), _in_range(name), values))
    )
    return st.one_of(st.just({}), st.lists(pair, max_size=most).map(dict))


environments = _environments(FIELDS, 3)


# --- running one command -------------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, Any] | None:
    """Every path under ``root`` with its size and bytes' digest; None when ``root`` does not exist."""
    import hashlib

    if not root.exists():
        return None
    return {
        str(path.relative_to(root)): (
            path.is_dir(),
            None if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(root.rglob("*"))
    }


@contextmanager
def _sandbox() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="fuzz-cli-"))
    cwd = os.getcwd()
    (root / "cwd").mkdir()
    os.chdir(root / "cwd")  # a command that wrote relative to the working directory would show there
    try:
        yield root
    finally:
        os.chdir(cwd)
        shutil.rmtree(root, ignore_errors=True)


def _config_file(root: Path, choice: str | None, body: str) -> str | None:
    if choice is None:
        return None
    path = root / "config" / "monitor.toml"
    path.parent.mkdir(exist_ok=True)
    if choice == "folder":
        path.mkdir()
    elif choice == "toml":
        path.write_text(body, encoding="utf-8", errors="surrogateescape")
    return str(path)  # "missing": named, not there


def _invoke(root: Path, args: list[str], env: dict[str, str], config: str | None) -> Any:
    full = {name: None for name in FIELDS} | {"MONITOR_CONFIG": config, "COLUMNS": "120"} | env
    full["MONITOR_DATA_DIR"] = str(root / "data")
    if "MONITOR_MONGO_URI" in env:  # a closed port answers at once; never wait out a fuzzed timeout on it
        full["MONITOR_MONGO_TIMEOUT_MS"] = "150"
    return CliRunner(env=full).invoke(app, args)


def _check(result: Any, secrets_in_input: bool) -> None:
    """The properties every command keeps, whatever it was given."""
    detail = f"exit {result.exit_code}\nstdout: {result.stdout[-2000:]!r}\nstderr: {result.stderr[-2000:]!r}\nexception: {result.exception!r}"
    event(f"exit {result.exit_code}")  # --hypothesis-show-statistics: how often each outcome was reached
    if os.environ.get("FUZZ_SHOW"):
        event(f"{result.exit_code} {result.stderr[:60]}")
    assert result.exit_code in DOCUMENTED_EXIT_CODES, detail
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, detail
    if result.exit_code != 0:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), detail
    if secrets_in_input:
        shown = result.stdout + result.stderr
        assert not [fragment for fragment in SECRET_FRAGMENTS if fragment in shown], detail


def _unchanged(root: Path, before: dict[str, Any]) -> None:
    after = {"data": _tree(root / "data"), "cwd": _tree(root / "cwd"), "config": _tree(root / "config")}
    assert after == before


def _snapshot(root: Path) -> dict[str, Any]:
    return {"data": _tree(root / "data"), "cwd": _tree(root / "cwd"), "config": _tree(root / "config")}


# --- readers -------------------------------------------------------------------------------------------------

good_dates = st.dates(dt.date(1970, 1, 1), dt.date(2026, 12, 31)).map(dt.date.isoformat)
dates = st.one_of(
    good_dates,
    good_dates,
    st.sampled_from(["2026-11-20", "0001-01-01", "9999-12-31", "[/]", "[red]2026-11-20"]),
    text_values,
)
reader_commands = st.one_of(
    st.just(["settings"]),
    st.just(["settings", "--json"]),
    st.builds(lambda d, j: ["health", "--date", d, *(["--json"] if j else [])], dates, st.booleans()),
    st.builds(lambda j: ["health", *(["--json"] if j else [])], st.booleans()),
    st.builds(
        lambda p, j: ["alerts", *(["--pending"] if p else []), *(["--json"] if j else [])], st.booleans(), st.booleans()
    ),
    st.builds(lambda j: ["store", "info", *(["--json"] if j else [])], st.booleans()),
    st.builds(
        lambda c, s, u: ["compare", "--candidate", c, *(["--since", s] if s else []), *(["--until", u] if u else [])],
        text_values,
        st.none() | dates,
        st.none() | dates,
    ),
    st.just(["candidate", "list"]),
)
extra_args = st.one_of(
    st.just([]),
    st.just([]),
    st.lists(
        st.one_of(st.sampled_from(["--bogus", "--date", "-d", "--json", "--", "-x", "--port", "[/]"]), plain_text),
        max_size=2,
    ),
)
sometimes_mongo = st.one_of(st.none(), st.none(), st.none(), mongo_uris)


@FUZZ
@given(
    command=reader_commands,
    extra=extra_args,
    env=environments,
    mongo=sometimes_mongo,
    config=st.sampled_from([None, None, None, None, "missing", "folder", "toml"]),
    config_body=st.one_of(
        st.sampled_from(
            ['mongo_uri = "mongodb://ops:Kq7Wv Zr9Pm@127.0.0.1:1/"', "seed = 1e999", "[[[", "window_days = -1"]
        ),
        plain_text,
    ),
)
def test_a_reader_keeps_its_promises_and_changes_nothing(
    command: list[str], extra: list[str], env: dict[str, str], mongo: str | None, config: str | None, config_body: str
) -> None:
    with _sandbox() as root:
        config_path = _config_file(root, config, config_body)
        env = env | ({"MONITOR_MONGO_URI": mongo} if mongo is not None else {})
        before = _snapshot(root)
        result = _invoke(root, [*command, *extra], env, config_path)
        _check(result, secrets_in_input=True)
        _unchanged(root, before)


@FUZZ
@given(
    options=st.lists(
        st.one_of(
            text_values, st.sampled_from(["--config", "--help", "settings", "health", "store", "candidate", "--json"])
        ),
        max_size=5,
    )
)
def test_any_argument_list_gives_a_documented_exit_and_one_line(options: list[str]) -> None:
    with _sandbox() as root:
        before = _snapshot(root)
        # "demo", "dashboard", "evaluate", "index" and "sample" are never named here: their own test drives them safely.
        risky = {"demo", "dashboard", "evaluate", "index", "sample", "restore", "add", "remove"}
        result = _invoke(root, [option for option in options if option not in risky], {}, None)
        _check(result, secrets_in_input=False)
        _unchanged(root, before)


# --- writers -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of two digits each, laid out like a bucket: enough for index and sample to do real work."""
    from monitor.domain.digits import digit_to_pil, load_digits_images

    images, targets = load_digits_images()
    root = tmp_path_factory.mktemp("fuzz-source")
    when = 1767268800  # 2026-01-01 12:00 UTC: the images exist on every date the fuzz samples after it
    for digit, label in ((0, "zero"), (1, "one")):
        for k, index in enumerate([i for i, t in enumerate(targets) if t == digit][:2]):
            (root / label).mkdir(exist_ok=True)
            digit_to_pil(images[index]).save(root / label / f"{k}.jpg", format="JPEG")
            os.utime(root / label / f"{k}.jpg", (when, when))
    return root


SAFE_FIELDS = [
    name
    for name in FIELDS
    if name
    not in (
        "MONITOR_SOURCE_URI",
        "MONITOR_MODEL_DIR",
        "MONITOR_CANDIDATE_MODEL_DIRS",
        "MONITOR_DATA_DIR",
        "MONITOR_MONGO_URI",
    )
]
writer_commands = st.one_of(
    st.just(["index"]),
    st.builds(lambda d, f: ["sample", "--date", d, *(["--force"] if f else [])], dates, st.booleans()),
    st.builds(
        lambda p: ["candidate", "add", p],
        st.one_of(st.sampled_from(["/", "/dev/null", "missing-dir", "[/]"]), plain_text),
    ),
    st.builds(
        lambda p: ["candidate", "remove", p], st.one_of(st.sampled_from(["/", "missing-dir", "[/]"]), plain_text)
    ),
    st.just(["store", "restore"]),
)


@FUZZ
@given(
    command=writer_commands,
    env=_environments(SAFE_FIELDS, 3),
    source=st.sampled_from(["tiny", "tiny", "tiny", "missing", "gs://[b/x", "file://remote/x"]),
    mongo=sometimes_mongo,
)
def test_a_writer_keeps_its_promises_and_writes_only_in_its_data_folder(
    tiny_source: Path, command: list[str], env: dict[str, str], source: str, mongo: str | None
) -> None:
    with _sandbox() as root:
        uri = {"tiny": str(tiny_source), "missing": str(root / "no-such-source")}.get(source, source)
        env = env | {"MONITOR_SOURCE_URI": uri} | ({"MONITOR_MONGO_URI": mongo} if mongo is not None else {})
        source_before = _tree(tiny_source)
        before = _snapshot(root)
        result = _invoke(root, command, env, None)
        _check(result, secrets_in_input=mongo is not None)
        after = _snapshot(root)
        assert after["cwd"] == before["cwd"] and after["config"] == before["config"]
        assert _tree(tiny_source) == source_before  # the source is only read
        if result.exit_code != 0 and command[:2] == ["store", "restore"]:
            assert after["data"] == before["data"]
        if result.exit_code == 0 and command[0] == "sample":  # it did what it is for
            assert any(name.startswith("samples/") and name.endswith(".csv") for name in after["data"] or {})
