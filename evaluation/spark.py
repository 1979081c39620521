"""This process's SparkSession: started on first use with the service's settings (Arrow on, UI off, quiet logs, local binding)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.core.errors import ConfigError, SparkError, first_line

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Shuffle partitions for a local master: the metrics group at most (classes x classes) cells, and
# Spark's default of 200 partitions costs more in task scheduling than the work itself.
_LOCAL_SHUFFLE_PARTITIONS = "4"

_LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


def get_spark(
    master: str = "local[*]", conf: Mapping[str, str] | None = None, app_name: str = "class-health-monitor"
) -> SparkSession:
    """Return this process's SparkSession, starting it on first use (``builder.getOrCreate``).

    Arrow is on (pandas <-> Spark transfers are otherwise ~25x slower), the UI is off and logs are
    quiet. A local master binds the driver to 127.0.0.1 (no network needed), uses few shuffle
    partitions and runs Python workers with this interpreter. ``conf`` (``MONITOR_SPARK_CONF``)
    is applied last, so it overrides any of these. A session already running in the process is
    returned as is: static settings such as the master only take effect on the first call.

    Raises :class:`SparkError` when the session cannot start (no Java, bad master URL...).
    """
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException
    from pyspark.sql import SparkSession

    if not master or not master.strip():
        raise ConfigError("the Spark master URL is empty (set MONITOR_SPARK_MASTER, e.g. local[*])")
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


def _is_local(master: str) -> bool:
    return master.strip().startswith("local")
