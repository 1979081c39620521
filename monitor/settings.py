"""The one typed settings object: environment (``MONITOR_*``), an optional TOML file, defaults that need no server."""

from __future__ import annotations

import json
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError, TomlConfigSettingsSource

from monitor.errors import ConfigError

#: The repository (or installed source tree) root; the shipped model lives below it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL_DIR = PROJECT_ROOT / "model_artifacts" / "digits-resnet"
#: Settings keys (e.g. of spark_conf) whose values are secrets.
SECRET_KEY = re.compile(r"secret|password|passwd|token|credential|(?:^|[._-])key$", re.IGNORECASE)
#: An optional config file: ``MONITOR_CONFIG`` names it, else ``monitor.toml`` in the working directory.
DEFAULT_CONFIG_FILE = Path("monitor.toml")


class Settings(BaseSettings):
    """Every knob of the service. Environment variables win over the config file, which wins over defaults.

    Environment names are the field names upper-cased with the ``MONITOR_`` prefix, e.g.
    ``MONITOR_SOURCE_URI``, ``MONITOR_MONGO_URI``, ``MONITOR_SAMPLES_PER_CLASS``. Lists and maps
    are JSON (``MONITOR_ALERT_URLS='["json://127.0.0.1:8080/hook"]'``,
    ``MONITOR_TARGET_OVERRIDES='{"7": 0.8}'``).
    """

    model_config = SettingsConfigDict(env_prefix="MONITOR_", extra="ignore", validate_default=True)

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("data"),
        description="Working folder: embedded store, samples/, predictions/, demo images. Relative paths are resolved against the working directory.",
    )
    source_uri: str = Field(
        default="",
        description="Image source: gs://bucket/prefix, file:///path or a plain path laid out as <Label>/<file>. Empty: the demo images under <data_dir>/source.",
    )
    mongo_uri: str = Field(
        default="",
        description="MongoDB URI (mongodb://user:pass@host/?replicaSet=rs0). Empty: the embedded store (mongomock) kept under <data_dir>/store.",
    )
    mongo_db: str = Field(default="class_health", description="MongoDB database name.")
    mongo_timeout_ms: int = Field(default=5000, ge=100, description="Server selection timeout for MongoDB, in ms.")

    # --- model and inference --------------------------------------------------------------
    model_dir: Path = Field(
        default=SHIPPED_MODEL_DIR,
        description="A directory that AutoModelForImageClassification.from_pretrained accepts (config.json + weights + preprocessor_config.json).",
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
    max_image_pixels: int = Field(default=50_000_000, ge=1, description="Images with more pixels are refused (decompression-bomb guard).")
    compile_model: bool = Field(default=False, description="Run the model through torch.compile (GPU hosts).")

    # --- sampling ---------------------------------------------------------------------------
    samples_per_class: int = Field(default=10, ge=1, le=100_000, description="Images drawn per class and date.")
    seed: int = Field(default=0, description="Seed mixed with the date: same date + seed = same sample.")
    fresh_days: int | None = Field(
        default=None, ge=1, description="If set, sample only images whose blob was created within this many days up to the date."
    )

    # --- metrics ------------------------------------------------------------------------------
    spark_master: str = Field(default="local[*]", description="Spark master URL; local[*] runs in-process.")
    spark_conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark configuration (JSON map).")
    engine: Literal["local", "spark"] = Field(
        default="local", description="Predict engine: local (this process, GPU if present) or spark (mapInPandas on executors)."
    )
    confidence_level: float = Field(default=0.95, gt=0.5, lt=1.0, description="Level of every interval shown.")

    # --- health and alerts -----------------------------------------------------------------
    target_accuracy: float = Field(default=0.9, gt=0.0, lt=1.0, description="Accuracy every class should reach.")
    target_overrides: dict[str, float] = Field(default_factory=dict, description="Per-class targets (JSON map label -> accuracy).")
    drop_to_detect: float = Field(
        default=0.05,
        gt=0.0,
        lt=1.0,
        description="Smallest sustained accuracy drop below target the sequential test is tuned to catch; larger drops are caught sooner.",
    )
    window_days: int = Field(default=14, ge=1, le=366, description="Days pooled for the window estimate shown as evidence.")
    min_samples: int = Field(default=20, ge=1, description="Fewer pooled images than this in the window: insufficient_data.")
    false_alarms_per_year: float = Field(
        default=1.0, gt=0.0, description="Bound on false needs_retraining alarms per year across all classes together (a class at its target)."
    )
    false_recoveries_per_year: float = Field(
        default=1.0, gt=0.0, description="Bound on how often a flagged class still drop_to_detect below target is wrongly cleared, per class and year."
    )
    followup_samples: int = Field(
        default=30,
        ge=0,
        le=100_000,
        description="Extra images per class a day for a class on watch (up to 6x as its evidence grows) or flagged; 0 turns follow-up off.",
    )
    followup_daily_cap: int = Field(default=1000, ge=0, description="At most this many follow-up images a day across all classes.")
    alert_urls: list[str] = Field(default_factory=list, description="Apprise notification URLs (JSON list), e.g. slack://..., json://host/path.")

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
        default=0.05, gt=0.0, lt=0.5, description="Error rate of the candidate comparison: family-wise over classes for 'worse', per flagged class for 'improved'."
    )

    # --- dashboard -------------------------------------------------------------------------------
    dashboard_host: str = Field(default="127.0.0.1", description="Dashboard bind address.")
    dashboard_port: int = Field(default=8050, ge=1, le=65535, description="Dashboard port.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = Path(os.environ.get("MONITOR_CONFIG", DEFAULT_CONFIG_FILE))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @model_validator(mode="before")
    @classmethod
    def _register_secrets(cls, data: Any) -> Any:
        """Register the secrets first, so that no message about them (a validation error included) can show them."""
        from monitor.secrets import register, uri_password, url_secrets

        if isinstance(data, dict):
            if isinstance(data.get("mongo_uri"), str):
                register(uri_password(data["mongo_uri"]))
            alert_urls = data.get("alert_urls")
            if isinstance(alert_urls, str):
                try:
                    alert_urls = json.loads(alert_urls)
                except ValueError:
                    alert_urls = [alert_urls]
            if isinstance(alert_urls, (list, tuple)):
                register(s for url in alert_urls if isinstance(url, str) and url for s in url_secrets(url))
            spark_conf = data.get("spark_conf")
            if isinstance(spark_conf, dict):
                register(value for key, value in spark_conf.items() if SECRET_KEY.search(str(key)) and isinstance(value, str))
        return data

    @field_validator("alert_urls")
    @classmethod
    def _notification_urls(cls, urls: list[str]) -> list[str]:
        """Every alert URL must be one apprise can send to: checked at load, not after a whole run."""
        import apprise

        from monitor.secrets import show_url

        for position, url in enumerate(urls):
            if not url.strip() or not apprise.Apprise().add(url):
                raise ValueError(f"alert_urls[{position}] ({show_url(url)}) is not a notification URL apprise understands")
        return urls

    @field_validator("mongo_uri")
    @classmethod
    def _mongo_uri(cls, uri: str) -> str:
        """A MongoDB URI that pymongo can parse (scheme, hosts, port, options), checked without connecting."""
        if not uri:
            return uri
        from pymongo.errors import PyMongoError
        from pymongo.uri_parser import parse_uri

        from monitor.secrets import redact

        try:
            parse_uri(uri)
        except (PyMongoError, ValueError) as exc:
            raise ValueError(f"{redact(uri)} is not a MongoDB URI: {redact(str(exc))}") from None
        return uri

    @field_validator("data_dir", "model_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("candidate_model_dirs")
    @classmethod
    def _absolute_all(cls, values: list[Path]) -> list[Path]:
        return [value.expanduser().resolve() for value in values]

    @model_validator(mode="after")
    def _fill_defaults(self) -> "Settings":
        if not self.source_uri:
            self.source_uri = str(self.data_dir / "source")
        targets = [("target_accuracy", self.target_accuracy)] + [(f"target_overrides[{label!r}]", t) for label, t in self.target_overrides.items()]
        for name, target in targets:
            if not 0.0 < target < 1.0:
                raise ValueError(f"{name} = {target} is not between 0 and 1")
            if target - self.drop_to_detect <= 0.0:
                raise ValueError(
                    f"{name} = {target} minus drop_to_detect {self.drop_to_detect} leaves no accuracy to test against; "
                    f"lower MONITOR_DROP_TO_DETECT below {target} or raise the target"
                )
        return self

    # --- derived paths (never configured separately, so they cannot disagree) ----------------
    @cached_property
    def samples_dir(self) -> Path:
        return self.data_dir / "samples"

    @cached_property
    def predictions_dir(self) -> Path:
        return self.data_dir / "predictions"

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


def safe_name(model_id: str) -> str:
    """A model id as one path segment: anything but letters, digits, ``.``, ``-``, ``_`` and ``@`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9._@-]", "_", model_id)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning pydantic's validation report into one :class:`ConfigError` line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'MONITOR_' + '.'.join(str(p) for p in err['loc']).upper() if err['loc'] else 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
    except SettingsError as exc:
        # Raised for values that are not even parseable, e.g. a list or map variable that is not JSON.
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"MONITOR_{field[1].upper()}" if field else "a MONITOR_ variable"
        raise ConfigError(f"invalid settings: {name} cannot be parsed ({exc.__cause__ or exc}); lists and maps are JSON") from exc
    except (OSError, ValueError) as exc:  # an unreadable or malformed TOML config file
        raise ConfigError(f"invalid config file {os.environ.get('MONITOR_CONFIG', DEFAULT_CONFIG_FILE)}: {exc}") from exc
