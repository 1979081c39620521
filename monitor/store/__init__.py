"""The store layer: every read and write of the service, as named operations on one typed :class:`Store`.

:mod:`monitor.store.base` defines what a store is (the protocol, the collections, shared pure helpers);
:mod:`monitor.store.mongo` and :mod:`monitor.store.embedded_store` are the two engines, each apart, over
the operations both share (:mod:`monitor.store.common`); :mod:`monitor.store.embedded` keeps the embedded
engine's files. Callers open the configured one with :func:`open_store` and never ask which they have.
``tests/store/test_store.py`` runs the same checks on both (``MONITOR_TEST_MONGO_URI`` for a real server).
"""

from __future__ import annotations

from monitor.core.settings import Settings
from monitor.store.base import COLLECTIONS, SAMPLING_INDEX, STATUS_MISSING, STATUS_OK, STATUS_UNUSABLE, Store
from monitor.store.embedded_store import EmbeddedStore, open_embedded
from monitor.store.mongo import MongoStore, open_mongodb

__all__ = [
    "COLLECTIONS",
    "SAMPLING_INDEX",
    "STATUS_MISSING",
    "STATUS_OK",
    "STATUS_UNUSABLE",
    "EmbeddedStore",
    "MongoStore",
    "Store",
    "open_store",
]


def open_store(settings: Settings, *, read_only: bool = False, lock_timeout_s: float = 600.0) -> Store:
    """Open the configured store: ``settings.mongo_uri`` if set, else the embedded store under the data dir.

    ``read_only`` (``monitor health``, ``alerts``, the dashboard): the embedded store is read from its last
    commit without the writer's lock and is never written; MongoDB is opened as usual.
    """
    if settings.mongo_uri:
        return open_mongodb(settings)
    return open_embedded(settings, read_only=read_only, lock_timeout_s=lock_timeout_s)
