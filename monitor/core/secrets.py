"""Secrets never shown: masking of passwords, tokens and webhook URLs in every text the service prints or logs.

One path for every output (``monitor settings`` as text or JSON, error lines, logs, Airflow task logs,
the dashboard), in two layers, so that a secret is hidden wherever it turns up:

- **by shape**: the whole user-info of any ``scheme://user-info@host`` (user and password), even when the
  URI does not parse: a space, an unescaped ``@ / : # ?`` or a percent-escape in the password, several
  hosts, ``mongodb+srv://``, a user name alone; and the value of query parameters whose name says
  secret (``token``, ``key``, ``password``, ``secret``, ``signature``...);
- **by value**: the secrets the settings hold (the user-info of every URI setting, alert URL parts,
  Spark settings whose key says secret) are registered when settings load (:func:`register`), and every
  occurrence of them is replaced, in any form of text. :func:`register_with_airflow` hands them to
  Airflow's own masker too, so its task logs (tracebacks included) hide them.

:func:`show_url` gives the form of a URL fit for people: scheme and host, nothing after it.
:func:`install_log_masking` masks every log record of the process before any handler sees it;
:class:`RedactingFilter` does the same for one handler.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

MASK = "***"
#: Registered values shorter than this are not masked by value (they would mask ordinary words).
MIN_SECRET_LENGTH = 4

_SCHEME = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://")
#: A host list (``h``, ``h:27017``, ``h1:1,h2:2``, ``[::1]:27017``): a ``:`` in it is a port, not a password.
_HOSTS = re.compile(
    r"(?:\[[0-9A-Fa-f:.%\w]*\]|[^:@,\[\]]*)(?::\d+)?(?:,(?:\[[0-9A-Fa-f:.%\w]*\]|[^:@,\[\]]*)(?::\d+)?)*"
)
#: How far past ``user:`` a password with spaces may reach for its ``@`` on the same line.
_SPACED_PASSWORD_REACH = 128
#: The last "@" of a stretch of text (greedy): where a spaced password ends, when a host follows it.
_SPACED_END = re.compile(r".*@(?=[\w\[.-])")
_HOST_START = re.compile(r"[\w\[.-]")
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&+;](?:[\w-]*(?:token|key|secret|password|passwd|pwd|pass|auth|signature|sig|credential)s?[\w-]*))=(?P<value>[^&;\s\"']*)",
    re.IGNORECASE,
)
_lock = threading.Lock()
_registered: set[str] = set()
_pattern_cache: tuple[frozenset[str], re.Pattern[str] | None] = (frozenset(), None)


def _pattern() -> re.Pattern[str] | None:
    global _pattern_cache
    with _lock:
        values = frozenset(_registered)
        if _pattern_cache[0] == values:
            return _pattern_cache[1]
    ordered = sorted(values, key=len, reverse=True)
    # Not inside a longer word: a webhook path "hook" must not mask "webhook" in ordinary text.
    pattern = (
        re.compile("(?<![A-Za-z0-9])(?:" + "|".join(re.escape(v) for v in ordered) + ")(?![A-Za-z0-9])")
        if ordered
        else None
    )
    with _lock:
        _pattern_cache = (values, pattern)
    return pattern


def register(values: Iterable[str]) -> None:
    """Remember ``values`` as secrets: :func:`redact` masks them wherever they appear from now on."""
    with _lock:
        _registered.update(v for v in values if isinstance(v, str) and len(v.strip()) >= MIN_SECRET_LENGTH)


def registered() -> list[str]:
    """The secrets registered so far (what :func:`register_with_airflow` hands over)."""
    with _lock:
        return sorted(_registered)


#: Apprise schemes whose host is a host name; in every other scheme the host may be a token (``tgram://BOTTOKEN/``).
WEB_SCHEMES = frozenset({"json", "jsons", "xml", "xmls", "form", "forms", "http", "https", "mongodb", "mongodb+srv"})


def _forms(values: Iterable[str]) -> list[str]:
    return sorted({form for value in values if value for form in (value, unquote(value), unquote_plus(value))})


def _host_at(text: str, index: int, stop: int) -> bool:
    """Whether a host name or address starts at ``text[index]``."""
    return index < stop and bool(_HOST_START.match(text, index))


def _userinfo_end(text: str, start: int, stop: int) -> int | None:
    """Where the user-info that begins at ``text[start]`` (right after ``scheme://``) ends: the index of its ``@``, or None.

    Within one run of non-space characters, the user-info runs to the *last* ``@`` when a ``:`` before
    the first ``/ ? #`` shows a password (an unescaped ``@ / # ?`` in it included); with no password, to
    the last ``@`` before the first ``/ ? #`` (a ``@`` further on is a path's or a query's). A password
    with spaces (no host after the ``@`` found so far, or no ``@`` at all) reaches further along the line,
    to the last ``@`` that a host follows: more is masked rather than part of a password shown.
    """
    token_end = start
    while token_end < stop and not text[token_end].isspace():
        token_end += 1
    token = text[start:token_end]
    delimiter = min((i for i in (token.find(c) for c in "/?#") if i >= 0), default=len(token))
    head = token[:delimiter]
    if ":" in head and not _HOSTS.fullmatch(head):
        at = token.rfind("@")
        end = start + at if at >= 0 else None
        if end is not None and _host_at(text, end + 1, stop):
            return end
        reach_from = end + 1 if end is not None else token_end
        reach = text[reach_from : min(stop, reach_from + _SPACED_PASSWORD_REACH)].split("\n", 1)[0].split("\r", 1)[0]
        spaced = _SPACED_END.match(reach)
        if spaced and _host_at(text, reach_from + spaced.end(), stop):
            return reach_from + spaced.end() - 1
        return end
    at = head.rfind("@")
    return start + at if at >= 0 else None


def mask_userinfo(text: str) -> str:
    """``text`` with the whole user-info of every ``scheme://user-info@host`` in it replaced by ``***``."""
    if "://" not in text:
        return text
    schemes = [(m.start(), m.end()) for m in _SCHEME.finditer(text)]
    pieces: list[str] = []
    done = 0
    for number, (_, start) in enumerate(schemes):
        if start < done:
            continue
        # A URI ends where the next one begins at the latest: two URIs side by side mask separately.
        stop = schemes[number + 1][0] if number + 1 < len(schemes) else len(text)
        end = _userinfo_end(text, start, stop)
        if end is None:
            continue
        pieces.append(text[done:start] + MASK)
        done = end
    pieces.append(text[done:])
    return "".join(pieces)


def uri_userinfo(uri: str) -> str:
    """The user-info of one whole URI value (``user:password`` or ``user``), however malformed; '' when it has none.

    A configured value is one URI: its user-info ends at the last ``@`` that a host (list) follows, spaces,
    unescaped ``@ / : # ?`` in the password or not.
    """
    text = uri.strip()
    scheme = _SCHEME.match(text)
    if not scheme:
        return ""
    rest = text[scheme.end() :]
    for at in reversed([i for i, c in enumerate(rest) if c == "@"]):
        host = re.split(r"[/?#]", rest[at + 1 :], maxsplit=1)[0]
        if host and _HOSTS.fullmatch(host) and not any(c.isspace() for c in host):
            return rest[:at]
    end = _userinfo_end(text, scheme.end(), len(text))
    return text[scheme.end() : end] if end is not None else ""


def uri_secrets(uri: str) -> list[str]:
    """What to register for a URI setting: its whole user-info and its password, raw and percent-decoded.

    The user name alone is not registered (a short name would mask ordinary words); the shape rule hides it.
    """
    info = uri_userinfo(uri)
    if not info:
        return []
    found = [info]
    if ":" in info:
        found.append(info.split(":", 1)[1])
        # pymongo's own split (the last "@" before the first "/") may differ for a malformed URI: mask both.
        found.append(info.rsplit(":", 1)[1])
    return _forms(found)


def param_secrets(uri: str) -> list[str]:
    """The values of ``uri``'s parameters whose name says secret (``?key=``, ``&token=``, Spark Connect's ``;token=``)."""
    return _forms([found.group("value") for found in _SECRET_QUERY.finditer(uri) if found.group("value")])


def uri_password(uri: str) -> list[str]:
    """The password of ``scheme://user:password@host`` (raw and percent-decoded); the user name is not secret."""
    info = uri_userinfo(uri)
    return _forms([info.split(":", 1)[1]]) if ":" in info else []


def url_secrets(url: str) -> list[str]:
    """The parts of an alert URL that may be secret: user info, path segments, query values, and the host
    unless the scheme is a web one (apprise puts tokens in all of these: ``slack://TokenA/TokenB/TokenC``,
    ``tgram://bottoken/chat``, headers as ``+X-Api-Key=value``). Raw and percent-decoded forms.
    """
    info = uri_userinfo(url)
    found: list[str] = [info, *info.split(":", 1)] if info else []
    try:
        parts = urlsplit(url)
    except ValueError:
        return _forms([*found, url])
    userinfo, _, host = parts.netloc.rpartition("@")
    found += [userinfo, *userinfo.split(":", 1)] if userinfo else []
    if parts.scheme.lower() not in WEB_SCHEMES:
        found += [host, *host.split(":")]
    found += [segment for segment in parts.path.split("/") if segment]
    found += [pair.partition("=")[2] for pair in parts.query.split("&")]  # raw values (the decoded forms follow)
    found += [parts.fragment] if parts.fragment else []
    return _forms(found)


def redact(text: str) -> str:
    """``text`` with every registered secret, URI user-info and secret query value replaced by ``***``."""
    if not isinstance(text, str):
        text = str(text)
    pattern = _pattern()
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = mask_userinfo(text)
    return _SECRET_QUERY.sub(lambda m: f"{m['name']}={MASK}", text)


def redact_data(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings...) with :func:`redact` applied to every string in it, keys included."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact(str(k)) if isinstance(k, str) else k: redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact_data(v) for v in value]
    return value


def show_url(url: str) -> str:
    """A URL fit for people: ``scheme://host/…`` for web schemes, ``scheme://…`` for the others (their host may be a token)."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rsplit("@", 1)[-1]
    except ValueError:
        return "<not a URL>"
    if not parts.scheme:
        return "<not a URL>"
    if parts.scheme.lower() not in WEB_SCHEMES:
        return f"{parts.scheme}://…"
    return redact(f"{parts.scheme}://{host}") + ("/…" if parts.path.strip("/") or parts.query else "")


# --- settings that may hold credentials ----------------------------------------------------------------

#: Spark settings whose values are shown: sizes, counts and switches that hold no credential. Every other
#: value of MONITOR_SPARK_CONF is shown as ``***`` (a Hadoop connector's account key, ``spark.executorEnv.*``...).
SPARK_HARMLESS_KEYS = frozenset(
    {
        "spark.app.name",
        "spark.default.parallelism",
        "spark.driver.cores",
        "spark.driver.maxResultSize",
        "spark.driver.memory",
        "spark.driver.memoryOverhead",
        "spark.dynamicAllocation.enabled",
        "spark.dynamicAllocation.maxExecutors",
        "spark.dynamicAllocation.minExecutors",
        "spark.executor.cores",
        "spark.executor.instances",
        "spark.executor.memory",
        "spark.executor.memoryOverhead",
        "spark.executor.resource.gpu.amount",
        "spark.local.dir",
        "spark.memory.fraction",
        "spark.memory.storageFraction",
        "spark.network.timeout",
        "spark.serializer",
        "spark.sql.adaptive.enabled",
        "spark.sql.execution.arrow.maxRecordsPerBatch",
        "spark.sql.execution.arrow.pyspark.enabled",
        "spark.sql.execution.arrow.pyspark.fallback.enabled",
        "spark.sql.session.timeZone",
        "spark.sql.shuffle.partitions",
        "spark.task.cpus",
        "spark.task.maxFailures",
        "spark.task.resource.gpu.amount",
        "spark.ui.enabled",
        "spark.ui.showConsoleProgress",
    }
)
#: Keys whose values are credentials: registered as secrets (masked in any text), never shown.
SECRET_KEY = re.compile(
    r"secret|password|passwd|pwd|token|credential|key|auth|signature|sas|private|cert|executorEnv|appMasterEnv|[._-]env[._-]",
    re.IGNORECASE,
)


def spark_conf_shown(conf: Mapping[str, str]) -> dict[str, str]:
    """MONITOR_SPARK_CONF fit for people: a value is shown only when its key is on :data:`SPARK_HARMLESS_KEYS`."""
    return {
        redact(key): (redact(value) if key in SPARK_HARMLESS_KEYS and not SECRET_KEY.search(key) else MASK)
        for key, value in conf.items()
    }


def spark_conf_secrets(conf: Mapping[str, Any]) -> list[str]:
    """The Spark settings' values to register: those of keys that say secret, and the user-info of any URI value."""
    found: list[str] = []
    for key, value in conf.items():
        if not isinstance(value, str):
            continue
        if SECRET_KEY.search(str(key)):
            found += _forms([value])
        found += uri_secrets(value)
    return found


# --- logs ---------------------------------------------------------------------------------------------


def printable(text: str) -> str:
    """``text`` masked, with what UTF-8 cannot carry (a lone surrogate from a URL or an OS name) as ``\\u`` escapes."""
    return redact(text).encode("utf-8", "backslashreplace").decode("utf-8")


def _redact_record(record: logging.LogRecord) -> None:
    """Mask ``record`` in place: its message (arguments merged) and its traceback, only when they hold a secret
    or a character UTF-8 cannot carry (a log file, a worker's pipe or a terminal would refuse the whole line)."""
    if isinstance(record.msg, str):
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):
            message = record.msg
        shown = printable(message)
        if shown != message:
            record.msg, record.args = shown, None
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        shown = printable(text)
        if shown != text:
            record.exc_text, record.exc_info = shown, None


class RedactingFilter(logging.Filter):
    """Mask secrets in a log record's message (arguments merged first) before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


_installed_factory: Any = None


def install_log_masking() -> None:
    """Mask every log record of this process as it is made, before any handler (a test's caplog included) sees it.

    Idempotent; wraps whatever record factory is in place (a library's own stays in the chain).
    """
    global _installed_factory
    with _lock:
        current = logging.getLogRecordFactory()
        if current is _installed_factory:
            return

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = current(*args, **kwargs)
            _redact_record(record)
            return record

        _installed_factory = factory
        logging.setLogRecordFactory(factory)


# --- Airflow -----------------------------------------------------------------------------------------

#: Airflow's maskers, newest first: ``airflow.sdk.log`` also tells the task's supervisor process.
AIRFLOW_MASKERS = ("airflow.sdk.log", "airflow.sdk.execution_time.secrets_masker", "airflow.utils.log.secrets_masker")


def register_with_airflow(values: Iterable[str] | None = None) -> int:
    """Hand ``values`` (default: every registered secret) to Airflow's own masker; returns how many, 0 without Airflow.

    Called from the DAG's task entry: Airflow then hides them in task logs, tracebacks included.
    """
    import importlib
    import warnings

    for name in AIRFLOW_MASKERS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the older paths still work but warn they are deprecated
                module = importlib.import_module(name)
        except ImportError:
            continue
        mask_secret = getattr(module, "mask_secret", None)
        if mask_secret is None:
            continue
        secrets = registered() if values is None else [v for v in values if v]
        for secret in secrets:
            mask_secret(secret)
        return len(secrets)
    return 0
