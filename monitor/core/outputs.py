"""The version of every JSON object the service prints or serves (``--json``, the API): ``schema_version`` in each.

The shapes themselves are in ``schemas/`` (:mod:`monitor.orchestration.schemas` generates them). Within one version
a field may be added; removing, renaming or retyping one raises :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1


def versioned(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its ``schema_version`` first."""
    return {"schema_version": SCHEMA_VERSION, **data}
