"""This process's SparkSession: started on first use with the service's settings (Arrow on, UI off, quiet logs, local binding),
or a Spark Connect session when the master is an ``sc://`` URL (a long-running server: no JVM start per task)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.core.errors import ConfigError, SparkError, first_line

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from monitor.core.settings import Settings

# Shuffle partitions for a local master: the metrics group at most (classes x classes) cells, and
# Spark's default of 200 partitions costs more in task scheduling than the work itself.
_LOCAL_SHUFFLE_PARTITIONS = "4"

log = logging.getLogger(__name__)

_LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")

#: A master URL of this scheme names a Spark Connect server (``sc://host:15002``, ``sc://host:15002/;token=...``).
CONNECT_SCHEME = "sc://"
# How long a Spark Connect client waits for an unreachable server: about 9 s over 4 tries (the client's own
# default retries for 10 minutes, which to a daily task looks like a hang). Milliseconds, as the client counts.
_CONNECT_TRIES, _CONNECT_FIRST_WAIT_MS, _CONNECT_BACKOFF, _CONNECT_LONGEST_WAIT_MS = 4, 200, 3.0, 5000


def get_spark(
    master: str = "local[*]",
    conf: Mapping[str, str] | None = None,
    app_name: str = "class-health-monitor",
    jvm_log: Path | None = None,
) -> SparkSession:
    """Return this process's SparkSession, starting it on first use (``builder.getOrCreate``).

    Arrow is on (pandas <-> Spark transfers are otherwise ~25x slower), the UI is off and logs are
    quiet. A local master binds the driver to 127.0.0.1 (no network needed), uses few shuffle
    partitions and runs Python workers with this interpreter. ``conf`` (``MONITOR_SPARK_CONF``)
    is applied last, so it overrides any of these. A session already running in the process is
    returned as is: static settings such as the master only take effect on the first call.

    An ``sc://host:port`` master is a Spark Connect server: no JVM starts here, the session's own
    settings (Arrow, time zone, few shuffle partitions, then ``conf``) are set on the server's session,
    and an unreachable server is an error within seconds.

    ``jvm_log``: a file that takes the driver JVM's own output (its start-up notices: "Using incubator modules",
    "Setting default log level"), instead of this process's stderr; the last lines of it are in the error
    when the JVM does not start.

    Raises :class:`SparkError` when the session cannot start (no Java, bad master URL, no Connect server...).
    """
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException
    from pyspark.sql import SparkSession

    if not master or not master.strip():
        raise ConfigError("the Spark master URL is empty (set MONITOR_SPARK_MASTER, e.g. local[*])")
    if is_connect_url(master):
        return _connect(master.strip(), {**_CONNECT_SESSION_CONF, **(conf or {})})
    options: dict[str, str] = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
    }
    if _is_local(master):
        options.update(
            {
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.sql.shuffle.partitions": _LOCAL_SHUFFLE_PARTITIONS,
                # Workers must import this project and its dependencies: use the driver's interpreter.
                "spark.pyspark.python": sys.executable,
                "spark.pyspark.driver.python": sys.executable,
                # Errors only on the console (Spark's default profile logs its start-up at WARN).
                "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={_LOG4J_CONFIG.as_uri()}",
            }
        )
    options.update(conf or {})
    if jvm_log is not None:
        _launch_gateway(master, app_name, options, jvm_log)
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in options.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        python = options.get("spark.pyspark.python")
        if python and not os.environ.get("PYSPARK_PYTHON"):
            # PySpark launches Python workers with PYSPARK_PYTHON or else whatever "python3" is on the PATH
            # (not this virtual environment); the conf only reaches spark-submit, so hand it over here.
            session.sparkContext.pythonExec = python
    except (PySparkException, Py4JError, OSError) as exc:
        raise SparkError(
            f"could not start Spark with master {master!r} (is Java 17+ installed and JAVA_HOME set?): {first_line(exc)}"
        ) from exc
    return session


def spark_for(settings: Settings) -> SparkSession:
    """This process's session for ``settings``: their master and configuration; a local driver JVM's own output
    goes to ``<data_dir>/logs/spark-jvm.log`` (not the terminal)."""
    return get_spark(settings.spark_master, settings.spark_conf, jvm_log=settings.data_dir / "logs" / "spark-jvm.log")


def _launch_gateway(master: str, app_name: str, options: Mapping[str, str], log: Path) -> None:
    """Start this process's driver JVM (what ``getOrCreate`` would) with its stdout and stderr going to ``log``."""
    from pyspark import SparkConf, SparkContext
    from pyspark.errors import PySparkException
    from pyspark.java_gateway import launch_gateway

    with SparkContext._lock:  # type: ignore[attr-defined]
        if SparkContext._gateway is not None:  # type: ignore[attr-defined]
            return
        conf = SparkConf(loadDefaults=False).setMaster(master).setAppName(app_name).setAll(list(options.items()))
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as out:
                gateway = launch_gateway(conf, popen_kwargs={"stdout": out, "stderr": out})
        except (PySparkException, OSError) as exc:
            raise SparkError(
                f"could not start Spark's JVM with master {master!r} (is Java 17+ installed and JAVA_HOME set?): "
                f"{first_line(exc)}; its output: {_tail(log)}"
            ) from exc
        SparkContext._gateway = gateway  # type: ignore[attr-defined]
        SparkContext._jvm = gateway.jvm  # type: ignore[attr-defined]


def _tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"({log} cannot be read)"
    return " | ".join(text[-lines:])[:600] or f"nothing ({log} is empty)"


# Settings of the session itself (a Connect server keeps its own static settings: memory, UI, Python).
_CONNECT_SESSION_CONF = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    # A day's predictions are small (classes x images): the server's default of 200 shuffle partitions costs more.
    "spark.sql.shuffle.partitions": _LOCAL_SHUFFLE_PARTITIONS,
}


def is_connect_url(master: str) -> bool:
    """Whether ``master`` names a Spark Connect server rather than a master to start a driver against."""
    return master.strip().lower().startswith(CONNECT_SCHEME)


def is_connect_session(spark: object) -> bool:
    """Whether ``spark`` is a Spark Connect client session (no SparkContext, no accumulators, no py4j)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def _connect(url: str, conf: Mapping[str, str]) -> SparkSession:
    """A Spark Connect session on ``url`` with the session settings ``conf``, checked to answer (its version)."""
    from pyspark.errors import PySparkException
    from pyspark.sql import SparkSession
    from pyspark.sql.connect.client.retries import DefaultPolicy

    from monitor.core.secrets import redact

    retries = DefaultPolicy(
        max_retries=_CONNECT_TRIES,
        initial_backoff=_CONNECT_FIRST_WAIT_MS,
        backoff_multiplier=_CONNECT_BACKOFF,
        max_backoff=_CONNECT_LONGEST_WAIT_MS,
    )
    session = None
    try:
        session = SparkSession.builder.remote(url).getOrCreate()
        session.client.set_retry_policies([retries])  # type: ignore[attr-defined]
        with warnings.catch_warnings():  # the client warns "retries exceeded" before it raises the same
            warnings.simplefilter("ignore", UserWarning)
            log.debug("Spark Connect server %s runs Spark %s", redact(url), session.version)  # the first call
        for key, value in conf.items():
            session.conf.set(key, value)
    except (PySparkException, OSError, ValueError) as exc:
        if session is not None:
            # Closed, the client skips its clean-up calls at exit (each would retry the unreachable server).
            with contextlib.suppress(Exception):
                session.client.close()  # type: ignore[attr-defined]
        raise SparkError(
            f"could not use the Spark Connect server {redact(url)} (is it running, and is the URL right?): {_reason(exc)}"
        ) from exc
    return session  # type: ignore[return-value]


def _reason(exc: BaseException) -> str:
    """The gRPC status details of a Connect error (its text starts with the useless ``<_InactiveRpcError ...``)."""
    found = re.search(r'details = "([^"]*)"', str(exc))
    return found.group(1)[:300] if found else first_line(exc)


def _is_local(master: str) -> bool:
    return master.strip().startswith("local")
