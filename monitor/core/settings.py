"""The one typed settings object: environment (``MONITOR_*``), an optional TOML file, defaults that need no server."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from monitor.core.errors import ConfigError

#: The repository (or installed source tree) root; the shipped model lives below it.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_MODEL_DIR = PROJECT_ROOT / "model_artifacts" / "digits-resnet"
#: An optional config file: ``MONITOR_CONFIG`` names it, else ``monitor.toml`` in the working directory.
DEFAULT_CONFIG_FILE = Path("monitor.toml")
#: A config file larger than this is refused unread (a settings file is a few hundred bytes).
MAX_CONFIG_BYTES = 1 << 20
#: The largest seed: the sampler mixes it into a signed 64-bit hash.
MAX_SEED = 2**63 - 1
#: A MongoDB database name, also the embedded store's folder name: no path separators, dots or spaces.
DB_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}")


class Settings(BaseSettings):
    """Every knob of the service. Environment variables win over the config file, which wins over defaults.

    Environment names are the field names upper-cased with the ``MONITOR_`` prefix, e.g.
    ``MONITOR_SOURCE_URI``, ``MONITOR_MONGO_URI``, ``MONITOR_SAMPLES_PER_CLASS``. Lists and maps
    are JSON (``MONITOR_ALERT_URLS='["json://127.0.0.1:8080/hook"]'``,
    ``MONITOR_TARGET_OVERRIDES='{"7": 0.8}'``).
    """

    # No input values in validation errors (a URI with its password), no inf/nan where a number is meant.
    model_config = SettingsConfigDict(
        env_prefix="MONITOR_", extra="ignore", validate_default=True, hide_input_in_errors=True, allow_inf_nan=False
    )

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("data"),
        description="Working folder: embedded store, samples/, predictions/, demo images. Relative paths are resolved against the working directory.",
    )
    source_uri: str = Field(
        default="",
        description="Image source: gs://bucket/prefix, file:///path or a plain path laid out as <Label>/<file>. Empty: the demo images under <data_dir>/source.",
    )
    artifacts_uri: str = Field(
        default="",
        description="Where a day's files go for the next task (samples/, predictions/, cache/): gs://bucket/prefix, file:///path or a folder path. Empty: the data dir.",
    )
    image_time: str = Field(
        default="object",
        description="When each image was collected, for point-in-time sampling and backfills: object (its creation or file time), metadata:KEY (a GCS object's custom metadata) or manifest:/path/file.csv (rows path,date).",
    )
    label_map: Path | None = Field(
        default=None,
        description="A file mapping the bucket's folder names to the model's labels (CSV rows folder,label, or a JSON object); folders not in it keep their name.",
    )
    mongo_uri: str = Field(
        default="",
        description="MongoDB URI (mongodb://user:pass@host/?replicaSet=rs0). Empty: the embedded store (mongomock) kept under <data_dir>/store.",
    )
    mongo_db: str = Field(default="class_health", description="MongoDB database name.")
    mongo_timeout_ms: int = Field(
        default=5000, ge=100, le=600_000, description="Server selection timeout for MongoDB, in ms."
    )

    # --- model and inference --------------------------------------------------------------
    model_dir: Path = Field(
        default=SHIPPED_MODEL_DIR,
        description="A directory that AutoModelForImageClassification.from_pretrained accepts (config.json + weights + preprocessor_config.json).",
    )
    model_id: str = Field(
        default="",
        pattern=r"^[\w.@+-]{0,200}$",
        description="The production model's id when it is served elsewhere and its predictions are imported (`monitor predictions import`); empty: from MONITOR_MODEL_DIR's weights.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when present, else CPU.")
    batch_size: int = Field(default=64, ge=1, le=4096, description="Images per forward pass.")
    fetch_workers: int = Field(
        default=64,
        ge=1,
        le=256,
        description=(
            "Threads fetching image bytes from the source, each with one request in flight: at a GCS latency L a run reads "
            "at most fetch_workers / L images/s (64 at 30 ms: 2,133/s). Reads run at most max(2 x batch_size, 2 x fetch_workers) "
            "images ahead of the decoder. See benchmarks/bench_fetch.py."
        ),
    )
    top_k: int = Field(default=3, ge=1, le=20, description="How many top labels each prediction keeps.")
    max_image_pixels: int = Field(
        default=50_000_000,
        ge=1,
        le=10_000_000_000,
        description="Images with more pixels are refused (decompression-bomb guard).",
    )
    compile_model: bool = Field(default=False, description="Run the model through torch.compile (GPU hosts).")

    # --- sampling ---------------------------------------------------------------------------
    samples_per_class: int = Field(default=10, ge=1, le=100_000, description="Images drawn per class and date.")
    seed: int = Field(
        default=0,
        ge=0,
        le=MAX_SEED,
        description="Seed mixed with the date: same date + seed = same sample (0 .. 2**63-1).",
    )
    fresh_days: int | None = Field(
        default=None,
        ge=1,
        le=36_500,
        description="If set, sample only images whose blob was created within this many days up to the date (1 .. 36500).",
    )

    # --- metrics ------------------------------------------------------------------------------
    spark_master: str = Field(
        default="local[*]",
        description="Spark master URL: local[*] runs in-process, spark://host:7077 a standalone cluster, "
        "sc://host:15002 a Spark Connect server (no JVM start per run).",
    )
    spark_conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark configuration (JSON map).")
    engine: Literal["local", "spark"] = Field(
        default="local",
        description="Predict engine: local (this process, GPU if present) or spark (mapInPandas on executors).",
    )
    confidence_level: float = Field(default=0.95, gt=0.5, lt=1.0, description="Level of every interval shown.")

    # --- health and alerts -----------------------------------------------------------------
    target_accuracy: float = Field(default=0.9, gt=0.0, lt=1.0, description="Accuracy every class should reach.")
    target_overrides: dict[str, float] = Field(
        default_factory=dict, description="Per-class targets (JSON map label -> accuracy)."
    )
    drop_to_detect: float = Field(
        default=0.05,
        gt=0.0,
        lt=1.0,
        description="Smallest sustained accuracy drop below target the sequential test is tuned to catch; larger drops are caught sooner.",
    )
    window_days: int = Field(
        default=14, ge=1, le=366, description="Days pooled for the window estimate shown as evidence."
    )
    min_samples: int = Field(
        default=20, ge=1, le=10_000_000, description="Fewer pooled images than this in the window: insufficient_data."
    )
    false_alarms_per_year: float = Field(
        default=1.0,
        gt=0.0,
        le=10_000.0,
        description="Bound on false needs_retraining alarms per year across all classes together (a class at its target).",
    )
    false_recoveries_per_year: float = Field(
        default=1.0,
        gt=0.0,
        le=10_000.0,
        description="Bound on how often a flagged class still drop_to_detect below target is wrongly cleared, per class and year.",
    )
    followup_samples: int = Field(
        default=30,
        ge=0,
        le=100_000,
        description="Extra images per class a day for a class on watch (up to 6x as its evidence grows) or flagged; 0 turns follow-up off.",
    )
    first_draw: int = Field(
        default=200,
        ge=0,
        le=100_000,
        description=(
            "Images drawn per class on a model's first day with that class (or a new class), when the bucket holds them: "
            "a bucket that already has hundreds of images a class gets a verdict on day one. 0: the base draw only."
        ),
    )
    followup_daily_cap: int = Field(
        default=1000, ge=0, le=10_000_000, description="At most this many follow-up images a day across all classes."
    )
    alert_urls: list[str] = Field(
        default_factory=list, description="Apprise notification URLs (JSON list), e.g. slack://..., json://host/path."
    )

    # --- candidates ---------------------------------------------------------------------------
    candidate_model_dirs: list[Path] = Field(
        default_factory=list,
        description=(
            "Candidate models (JSON list of directories, like model_dir) predicted beside production on the same sampled "
            "images each day; `monitor candidate add DIR` registers more in the store."
        ),
    )
    noninferiority_margin: float = Field(
        default=0.02,
        ge=0.0,
        lt=1.0,
        description="A candidate is judged worse on a class only when it is significantly worse and its accuracy drop exceeds this margin.",
    )
    compare_alpha: float = Field(
        default=0.05,
        gt=0.0,
        lt=0.5,
        description="Error rate of the candidate comparison: family-wise over classes for 'worse', per flagged class for 'improved'.",
    )

    # --- dashboard -------------------------------------------------------------------------------
    dashboard_host: str = Field(default="127.0.0.1", description="Dashboard bind address.")
    dashboard_port: int = Field(default=8050, ge=1, le=65535, description="Dashboard port.")
    dashboard_users: dict[str, str] = Field(
        default_factory=dict,
        description='Login for the dashboard, its API and /metrics: {"user": "<password hash from `monitor hash-password`>"}. Empty: no login (bind to 127.0.0.1 only).',
    )
    dashboard_user_header: str = Field(
        default="",
        description="Reverse-proxy login instead (oauth2-proxy, an OIDC gateway): the header naming the signed-in user, e.g. X-Forwarded-User. Only safe when the proxy alone can reach the dashboard.",
    )
    dashboard_secret_key: str = Field(
        default="",
        description="Key that signs login cookies; empty: a random one per start (everyone signs in again after a restart).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = config_file_path()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @model_validator(mode="before")
    @classmethod
    def _register_secrets(cls, data: Any) -> Any:
        """Register the secrets first, so that no message about them (a validation error included) can show them."""
        from monitor.core.secrets import (
            install_log_masking,
            param_secrets,
            register,
            spark_conf_secrets,
            uri_secrets,
            url_secrets,
        )

        install_log_masking()
        if isinstance(data, dict):
            for name in ("mongo_uri", "source_uri", "spark_master"):
                if isinstance(data.get(name), str):
                    register(uri_secrets(data[name]))
            if isinstance(data.get("dashboard_secret_key"), str) and data["dashboard_secret_key"]:
                register([data["dashboard_secret_key"]])
            if isinstance(data.get("spark_master"), str):  # a Spark Connect URL carries its token as ;token=...
                register(param_secrets(data["spark_master"]))
            alert_urls = data.get("alert_urls")
            if isinstance(alert_urls, str):
                try:
                    alert_urls = json.loads(alert_urls)
                except ValueError:
                    alert_urls = [alert_urls]
            if isinstance(alert_urls, (list, tuple)):
                register(s for url in alert_urls if isinstance(url, str) and url for s in url_secrets(url))
            spark_conf = data.get("spark_conf")
            if isinstance(spark_conf, str):
                try:
                    spark_conf = json.loads(spark_conf)
                except (ValueError, RecursionError):
                    spark_conf = None
            if isinstance(spark_conf, dict):
                register(spark_conf_secrets(spark_conf))
        return data

    @field_validator("alert_urls")
    @classmethod
    def _notification_urls(cls, urls: list[str]) -> list[str]:
        """Every alert URL must be one apprise can send to: checked at load, not after a whole run."""
        import apprise

        from monitor.core.secrets import show_url

        for position, url in enumerate(urls):
            if not url.strip() or not apprise.Apprise().add(url):
                raise ValueError(
                    f"alert_urls[{position}] ({show_url(url)}) is not a notification URL apprise understands"
                )
        return urls

    @field_validator("mongo_uri")
    @classmethod
    def _mongo_uri(cls, uri: str) -> str:
        """A MongoDB URI that pymongo can parse (scheme, hosts, port, options), checked without connecting."""
        if not uri:
            return uri
        from pymongo.errors import PyMongoError
        from pymongo.uri_parser import parse_uri

        from monitor.core.secrets import redact, uri_userinfo

        checked = uri
        if uri.lower().startswith("mongodb+srv://"):
            # parse_uri resolves an SRV name over DNS: check its shape offline (one host name, no port) instead.
            checked = "mongodb://" + uri[len("mongodb+srv://") :]
        try:
            parsed = parse_uri(checked)
        except (PyMongoError, ValueError) as exc:
            detail = redact(str(exc))
            # pymongo quotes the piece it stumbled on, which may be part of an unescaped password: never show it then.
            pieces = [piece for piece in re.split(r"[^A-Za-z0-9]+", uri_userinfo(uri)) if len(piece) >= 2]
            if any(piece in detail for piece in pieces):
                detail = "its user name or password is not percent-escaped (RFC 3986: urllib.parse.quote_plus)"
            raise ValueError(f"{redact(uri)} is not a MongoDB URI: {detail}") from None
        if checked is not uri and (len(parsed["nodelist"]) != 1 or ":" in uri.split("@")[-1].split("/")[0]):
            raise ValueError(f"{redact(uri)} is not a mongodb+srv URI: it names one host name and no port")
        return uri

    @field_validator("source_uri")
    @classmethod
    def _source_uri(cls, uri: str) -> str:
        """A source URI whose parts parse (a ``[`` in a bucket name does not); what it names is checked when opened."""
        from urllib.parse import urlsplit

        from monitor.core.secrets import redact

        if "\x00" in uri:
            raise ValueError("the source URI contains a NUL character")
        if "://" in uri:
            try:
                urlsplit(uri.strip())
            except ValueError as exc:
                raise ValueError(
                    f"{redact(uri)!r} is not a valid URI ({exc}); use gs://bucket/prefix, file:///abs/path or a folder path"
                ) from None
        return uri

    @field_validator("artifacts_uri")
    @classmethod
    def _artifacts_uri(cls, uri: str) -> str:
        """A folder (made absolute), ``file:///abs/path`` or ``gs://bucket/prefix``; the bucket is contacted when used."""
        from monitor.core.artifacts import open_artifacts
        from monitor.core.errors import ConfigError

        uri = uri.strip()
        if not uri:
            return uri
        if "\x00" in uri:
            raise ValueError("the artifacts URI contains a NUL character")
        try:
            opened = open_artifacts(uri)
        except (ConfigError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        local = opened.local_path("x")
        return str(_resolved(local.parent)) if local is not None else opened.uri

    @field_validator("mongo_db")
    @classmethod
    def _mongo_db(cls, name: str) -> str:
        """The database name is also the embedded store's folder: letters, digits, ``_`` and ``-`` only."""
        if not DB_NAME.fullmatch(name):
            raise ValueError(f"{name[:80]!r} is not a database name: 1 to 63 letters, digits, '_' or '-'")
        return name

    @field_validator("image_time")
    @classmethod
    def _image_time(cls, setting: str) -> str:
        """A known mode; a manifest read and checked at load (a bad row stops here, not after a listing)."""
        from monitor.core.image_times import ImageTime, load_manifest

        try:
            parsed = ImageTime.parse(setting)
            if parsed.path is not None:
                load_manifest(parsed.path)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return {"object": "object", "metadata": f"metadata:{parsed.key}", "manifest": f"manifest:{parsed.path}"}[
            parsed.mode
        ]

    @field_validator("label_map")
    @classmethod
    def _label_map(cls, path: Path | None) -> Path | None:
        """The map read and checked at load: a bad file stops here, in one line, not after a whole listing."""
        if path is None or str(path) in ("", "."):
            return None
        from monitor.core.labels import load_label_map

        resolved = _resolved(path)
        try:
            load_label_map(resolved)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return resolved

    @field_validator("dashboard_users")
    @classmethod
    def _password_hashes(cls, users: dict[str, str]) -> dict[str, str]:
        """Each user's password as a hash werkzeug checks (scrypt or pbkdf2), never the password itself."""
        for user, hashed in users.items():
            if not user.strip() or len(user) > 200 or ":" in user:
                raise ValueError(f"dashboard user {user[:80]!r} is not a user name (1 to 200 characters, no ':')")
            method = hashed.split("$", 1)[0].split(":", 1)[0]
            if method not in ("scrypt", "pbkdf2") or hashed.count("$") != 2:
                raise ValueError(
                    f"the password of dashboard user {user[:80]!r} is not a password hash: give the output of "
                    "`monitor hash-password`, never the password itself"
                )
        return users

    @field_validator("dashboard_user_header")
    @classmethod
    def _header_name(cls, name: str) -> str:
        if name and not re.fullmatch(r"[A-Za-z0-9-]{1,100}", name):
            raise ValueError(f"{name[:80]!r} is not an HTTP header name (letters, digits and '-')")
        return name

    @field_validator("dashboard_host")
    @classmethod
    def _host(cls, host: str) -> str:
        """A host name or IP address to bind (whether it can be bound is checked when the dashboard starts)."""
        if not re.fullmatch(r"[A-Za-z0-9._:%\[\]-]{1,253}", host):
            raise ValueError(f"{host[:80]!r} is not a host name or IP address (e.g. 127.0.0.1, 0.0.0.0, ::1)")
        return host

    @field_validator("target_overrides")
    @classmethod
    def _override_labels(cls, overrides: dict[str, float]) -> dict[str, float]:
        for label in overrides:
            if not label.strip() or len(label) > 1000:
                raise ValueError(f"class {label[:80]!r} is not a class name (empty or longer than 1000 characters)")
        return overrides

    @field_validator("data_dir", "model_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return _resolved(value)

    @field_validator("candidate_model_dirs")
    @classmethod
    def _absolute_all(cls, values: list[Path]) -> list[Path]:
        return [_resolved(value) for value in values]

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.source_uri:
            self.source_uri = str(self.data_dir / "source")
        if not self.artifacts_uri:
            self.artifacts_uri = str(self.data_dir)
        elif _within(self.artifacts_uri, self.source_uri):
            # (The data dir, the default, is left alone: the demo keeps its source inside it, and files two levels
            # below the source are indexed as unusable at worst.)
            raise ValueError(
                f"artifacts_uri {self.artifacts_uri} lies inside the image source {self.source_uri}: its files would be "
                "indexed with the images; set MONITOR_ARTIFACTS_URI to a place outside MONITOR_SOURCE_URI"
            )
        if self.label_map is not None:
            self._check_mapped_labels()
        if self.engine == "spark" and self.spark_master.strip().lower().startswith("sc://"):
            raise ValueError(
                "engine 'spark' predicts on the executors of a Spark driver started here, which a Spark Connect "
                "server (spark_master sc://...) does not give: set MONITOR_ENGINE=local, or a local[*] or spark:// master"
            )
        targets = [("target_accuracy", self.target_accuracy)] + [
            (f"target_overrides[{label!r}]", t) for label, t in self.target_overrides.items()
        ]
        for name, target in targets:
            if not 0.0 < target < 1.0:
                raise ValueError(f"{name} = {target} is not between 0 and 1")
            if target - self.drop_to_detect <= 0.0:
                raise ValueError(
                    f"{name} = {target} minus drop_to_detect {self.drop_to_detect} leaves no accuracy to test against; "
                    f"lower MONITOR_DROP_TO_DETECT below {target} or raise the target"
                )
        return self

    def _check_mapped_labels(self) -> None:
        """Every label the map names must be one of each model's (production and candidates), where their
        ``config.json`` can be read now; otherwise the predict stage checks it before any inference."""
        from monitor.core.files import FileRefused, parse_json_bounded, read_bounded
        from monitor.core.labels import load_label_map, nearest

        assert self.label_map is not None
        mapped = set(load_label_map(self.label_map).values())
        for folder in [self.model_dir, *self.candidate_model_dirs]:
            try:
                config = parse_json_bounded(read_bounded(Path(folder) / "config.json", max_bytes=64 << 20))
            except (OSError, FileRefused):
                continue  # no readable model here (yet): loading it says why
            labels = set((config.get("id2label") or {}).values()) if isinstance(config, dict) else set()
            unknown = sorted(mapped - labels) if labels else []
            if unknown:
                close = "; ".join(f"{u!r} (nearest: {', '.join(nearest(u, labels)) or 'none'})" for u in unknown[:3])
                raise ValueError(
                    f"label_map {self.label_map} maps folders to labels the model in {folder} does not have: {close}"
                )

    # --- derived paths (never configured separately, so they cannot disagree) ----------------
    @cached_property
    def local_artifacts_dir(self) -> Path | None:
        """The artifact store's folder when it is local (the data dir by default); None for ``gs://``."""
        return None if self.artifacts_uri.startswith("gs://") else Path(self.artifacts_uri)

    @cached_property
    def samples_dir(self) -> Path:
        return (self.local_artifacts_dir or self.data_dir) / "samples"

    @cached_property
    def predictions_dir(self) -> Path:
        return (self.local_artifacts_dir or self.data_dir) / "predictions"

    @cached_property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    def sample_csv(self, date: str) -> Path:
        return self.samples_dir / f"{date}.csv"

    def predictions_file(self, date: str) -> Path:
        return self.predictions_dir / f"{date}.parquet"

    def candidate_predictions_file(self, date: str, model_id: str) -> Path:
        """A candidate's predictions of ``date``: the same table as production's, one folder per candidate model id."""
        return self.predictions_dir / "candidates" / safe_name(model_id) / f"{date}.parquet"

    def target_for(self, label: str) -> float:
        return self.target_overrides.get(label, self.target_accuracy)


def _within(inner: str, outer: str) -> bool:
    """Whether the place ``inner`` (a folder or ``gs://`` URI) is ``outer`` or lies below it."""
    if outer.lower().startswith("file://"):
        outer = outer[len("file://") :]
    if inner.startswith("gs://") or outer.lower().startswith("gs://"):
        outer = "gs://" + outer[5:].strip("/") if outer.lower().startswith("gs://") else outer
        return inner == outer or inner.startswith(outer.rstrip("/") + "/")
    try:
        return Path(inner).resolve().is_relative_to(Path(outer).expanduser().resolve())
    except (OSError, RuntimeError, ValueError):
        return False


def _resolved(path: Path) -> Path:
    """``path`` made absolute; a path that cannot be one (a NUL byte, an unknown ``~user``, a loop) is refused."""
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise ValueError(f"{str(path)[:200]!r} is not a usable path ({exc})") from None


def config_file_path() -> Path | None:
    """The TOML config file to read: ``MONITOR_CONFIG`` (which must name a readable file), else ``./monitor.toml`` if there.

    Refused with a :class:`ConfigError` naming it: a missing file, a folder, a FIFO or device (reading one would hang or
    never end), a file over :data:`MAX_CONFIG_BYTES`, and TOML that does not parse (deep nesting included).
    """
    import stat
    import tomllib

    named = os.environ.get("MONITOR_CONFIG")
    path = Path(named) if named else DEFAULT_CONFIG_FILE
    what = f"MONITOR_CONFIG={named}" if named else f"config file {path}"
    try:
        info = path.stat()
    except FileNotFoundError:
        if named:
            raise ConfigError(f"{what} does not exist; point MONITOR_CONFIG at a TOML file or unset it") from None
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} cannot be read: {exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} is not a regular file (a folder, device or pipe); point it at a TOML file")
    if info.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} is {info.st_size:,} bytes, over the {MAX_CONFIG_BYTES:,} a settings file may have")
    try:
        with path.open("rb") as handle:
            tomllib.load(handle)
    except (OSError, ValueError, RecursionError) as exc:  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ConfigError(f"{what} is not valid TOML: {reason}") from None
    return path


#: ``MONITOR_`` variables that are not settings: the config file's path and the test suite's own switches.
NOT_SETTINGS = frozenset({"MONITOR_CONFIG", "MONITOR_LOG_FORMAT", "MONITOR_TEST_MONGO_URI", "MONITOR_TEST_KILL_AT"})
_warned: set[str] = set()


def unknown_names() -> list[str]:
    """One line for each ``MONITOR_`` variable and config-file key that names no setting, with the nearest setting.

    pydantic-settings ignores them, so a misspelt name would change nothing, silently.
    """
    import difflib
    import tomllib

    fields = sorted(Settings.model_fields)

    def nearest(name: str, prefix: str) -> str:
        close = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
        return f" (did you mean {prefix}{close[0].upper() if prefix else close[0]}?)" if close else ""

    lines = [
        f"{name} is not a setting{nearest(name[len('MONITOR_') :].lower(), 'MONITOR_')}; it is ignored"
        for name in sorted(os.environ)
        if name.upper().startswith("MONITOR_")
        and name.upper() not in NOT_SETTINGS
        and name[len("MONITOR_") :].lower() not in Settings.model_fields
    ]
    path = config_file_path()
    if path is not None:
        with path.open("rb") as handle:
            keys = tomllib.load(handle)
        lines += [
            f"{key!r} in {path} is not a setting{nearest(key.lower(), '')}; it is ignored"
            for key in sorted(keys)
            if key not in Settings.model_fields
        ]
    return lines


def warn_unknown_names() -> None:
    """Log :func:`unknown_names` as warnings, each once per process (settings are loaded once per stage)."""
    import logging

    for line in unknown_names():
        if line not in _warned:
            _warned.add(line)
            logging.getLogger(__name__).warning("%s", line)


def unknown_target_overrides(settings: Settings, labels: Iterable[str]) -> list[str]:
    """The classes of MONITOR_TARGET_OVERRIDES that are not among ``labels`` (the classes the run knows), sorted."""
    known = set(labels)
    return sorted(label for label in settings.target_overrides if label not in known)


def check_target_overrides(settings: Settings, labels: Iterable[str]) -> None:
    """Refuse (:class:`ConfigError`) a per-class target for a class that does not exist: a typo would silently do nothing.

    Call it where the classes are known (the health stage): ``labels`` are the classes of the source or the day.
    """
    known = sorted(set(labels))
    unknown = unknown_target_overrides(settings, known)
    if unknown:
        shown = ", ".join(repr(label) for label in unknown[:10]) + (
            f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        )
        listed = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
        raise ConfigError(
            f"MONITOR_TARGET_OVERRIDES names {shown}, not among the {len(known)} classes ({listed}); fix the class name or remove the override"
        )


def safe_name(model_id: str) -> str:
    """A model id as one path segment: anything but letters, digits, ``.``, ``-``, ``_`` and ``@`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9._@-]", "_", model_id)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning pydantic's validation report into one :class:`ConfigError` line (secrets masked)."""
    from monitor.core.secrets import redact

    try:
        settings = Settings(**overrides)
        warn_unknown_names()
        return settings
    except ValidationError as exc:
        errors = exc.errors()
        problems = "; ".join(
            f"{'MONITOR_' + '.'.join(str(p) for p in err['loc']).upper() if err['loc'] else 'settings'}: {err['msg']}"
            for err in errors[:5]
        ) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        raise ConfigError(_one_line(redact(f"invalid settings: {problems}"))) from exc
    except SettingsError as exc:
        # Raised for values that are not even parseable, e.g. a list or map variable that is not JSON.
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"MONITOR_{field[1].upper()}" if field else "a MONITOR_ variable"
        cause = "nested too deeply" if isinstance(exc.__cause__, RecursionError) else exc.__cause__ or exc
        raise ConfigError(
            _one_line(redact(f"invalid settings: {name} cannot be parsed ({cause}); lists and maps are JSON"))
        ) from exc
    except (OSError, ValueError, RecursionError) as exc:  # an unreadable config file, a value no validator could take
        raise ConfigError(
            _one_line(redact(f"invalid settings ({os.environ.get('MONITOR_CONFIG', DEFAULT_CONFIG_FILE)}): {exc}"))
        ) from exc


def _one_line(text: str, limit: int = 2000) -> str:
    return " ".join(text.split())[:limit]


def shown_settings(settings: Settings) -> dict[str, Any]:
    """Every setting as people may see it (``monitor settings``, text or JSON): JSON-ready, every credential masked.

    The one place that decides what of the settings is shown: URIs without their user-info, alert URLs as
    ``scheme://host/…``, Spark settings only when their key is on the harmless list, and every other text
    through :func:`monitor.core.secrets.redact`.
    """
    from monitor.core.secrets import MASK, redact_data, show_url, spark_conf_shown

    values: dict[str, Any] = settings.model_dump(mode="json")
    values["mongo_uri"] = values["mongo_uri"] or "(embedded store)"
    values["alert_urls"] = [show_url(url) for url in settings.alert_urls]
    values["spark_conf"] = spark_conf_shown(settings.spark_conf)
    # A password hash still lets a stolen copy be attacked offline: users are shown, their hashes never.
    values["dashboard_users"] = {user: MASK for user in settings.dashboard_users}
    values["dashboard_secret_key"] = MASK if settings.dashboard_secret_key else ""
    return redact_data(values)
