"""Candidate models: registered in the store (or named in ``MONITOR_CANDIDATE_MODEL_DIRS``), predicted each day beside production."""

from __future__ import annotations

from pathlib import Path

from monitor.core.errors import ConfigError
from monitor.core.settings import Settings
from monitor.orchestration.results import CandidateAdded, CandidateListing, CandidateRemoved
from monitor.orchestration.runs import now
from monitor.store import Store, open_store


def candidate_dirs(settings: Settings, store: Store) -> list[Path]:
    """The candidate model directories: ``MONITOR_CANDIDATE_MODEL_DIRS`` and those ``monitor candidate add`` registered, once each."""
    registered = [Path(str(doc["model_dir"])) for doc in store.candidates()]
    dirs = dict.fromkeys([*settings.candidate_model_dirs, *registered])
    return [d for d in dirs if d != settings.model_dir]


def add_candidate(settings: Settings, model_dir: Path) -> CandidateAdded:
    """Register ``model_dir`` as a candidate: it loads (checked now, not at the next run), and each day predicts it beside production."""
    from evaluation.model import load_model

    path = Path(model_dir).expanduser().resolve()
    loaded = load_model(path, "cpu")
    if path == settings.model_dir:
        raise ConfigError(f"{path} is the production model (MONITOR_MODEL_DIR), not a candidate")
    with open_store(settings) as store:
        added = store.add_candidate(str(path), model_id=loaded.model_id, added_at=now())
        store.commit()
    return {"model_dir": str(path), "model_id": loaded.model_id, "added": added}


def remove_candidate(settings: Settings, model_dir: Path) -> CandidateRemoved:
    """Stop predicting a registered candidate (its stored predictions stay)."""
    path = Path(model_dir).expanduser().resolve()
    with open_store(settings) as store:
        removed = store.remove_candidate(str(path))
        store.commit()
    if not removed:
        raise ConfigError(
            f"{path} is not a registered candidate (MONITOR_CANDIDATE_MODEL_DIRS entries are removed from the setting)"
        )
    return {"model_dir": str(path), "removed": True}


def list_candidates(settings: Settings) -> list[CandidateListing]:
    """Every candidate directory (setting and store), with where it comes from and its model id when registered."""
    with open_store(settings, read_only=True) as store:
        registered = {str(doc["model_dir"]): doc for doc in store.candidates()}
        dirs = candidate_dirs(settings, store)
    return [
        {
            "model_dir": str(d),
            "model_id": registered.get(str(d), {}).get("model_id"),
            "from": "store" if str(d) in registered else "MONITOR_CANDIDATE_MODEL_DIRS",
        }
        for d in dirs
    ]
