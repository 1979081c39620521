"""The server's edge: a callback request is checked against the callback it names before Dash reads it.

Dash trusts the body of ``POST /_dash-update-component`` (its renderer wrote it): ``{}``, an output
no callback has, an input list of the wrong length or shape, a pattern-matching id without its
keys, or JSON nested 10,000 deep reach Dash's own code as ``KeyError``, ``TypeError`` or
``RecursionError``, i.e. a 500. :func:`install` adds a ``before_request`` hook that answers such a
body with 400 and a short JSON reason, so only bodies shaped like the renderer's reach the
callbacks, which then check the *values* themselves (:mod:`dashboards.callbacks`).

Checked, in this order, each in time linear in the body (bounded by :data:`MAX_BODY_BYTES`):

1. the body is JSON (Flask's parser: 400, or 415 for another content type), nested at most
   :data:`MAX_DEPTH` deep (the parser's ``RecursionError`` included);
2. ``output`` names a registered callback and ``outputs`` are exactly its outputs;
3. ``inputs`` and ``state`` have one entry per declared dependency: ``{"id", "property", "value"}``
   with the declared id and property, or for a wildcard (``ALL``) a list of at most
   :data:`MAX_PATTERN_ITEMS` such entries whose dict ids have the pattern's keys and fixed values;
4. ``changedPropIds`` lists only prop ids of those inputs, each once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from dash import Dash
from dash._utils import stringify_id
from dash.exceptions import DependencyException
from flask import Response, request

#: Largest request body read (the same bound as the waitress server of ``monitor dashboard``).
MAX_BODY_BYTES = 1 << 20
#: Deepest JSON nesting accepted in a callback body (the renderer's, click data included, stay under 20).
MAX_DEPTH = 64
#: Most entries in one wildcard dependency (the app renders fewer than ten controls of a kind);
#: Dash matches each entry against every changed prop id, so this also bounds that product.
MAX_PATTERN_ITEMS = 1_000
#: Wildcards whose body entry is a list of entries (``MATCH`` gives a single entry).
_LIST_WILDCARDS = ("ALL", "ALLSMALLER")

_UPDATE_ROUTE = "_dash-update-component"


class MalformedCallback(ValueError):
    """A callback request body that does not have the shape of the callback it names."""


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` (parsed JSON) nests deeper than ``limit`` lists/dicts; iterative, so any depth is safe to check."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterator[Any] = iter(item.values())
        elif isinstance(item, list):
            children = iter(item)
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _declared_pattern(id_text: str) -> dict[str, Any] | None:
    """The pattern of a declared dependency id (Dash keeps it as JSON text), or None for a plain string id."""
    if not id_text.startswith("{"):
        return None
    pattern = json.loads(id_text)
    return pattern if isinstance(pattern, dict) else None


def _check_entry(entry: Any, declared: dict[str, Any], pattern: dict[str, Any] | None, where: str) -> str:
    """Check one ``{"id", "property", "value"}`` entry against its declared dependency; returns its prop id."""
    if not isinstance(entry, dict) or not isinstance(entry.get("property"), str):
        raise MalformedCallback(f"{where} is not an object with an id and a property")
    if entry["property"] != declared["property"]:
        raise MalformedCallback(f"{where} is property {entry['property'][:40]!r}, not {declared['property']!r}")
    cid = entry.get("id")
    if pattern is None:
        if cid != declared["id"]:
            raise MalformedCallback(f"{where} is not component {declared['id']!r}")
    else:
        if not isinstance(cid, dict) or set(cid) != set(pattern):
            raise MalformedCallback(f"{where} does not have the keys {sorted(pattern)} of its pattern id")
        for key, wanted in pattern.items():
            value = cid[key]
            if isinstance(wanted, list):  # a wildcard: any scalar key value
                if not isinstance(value, str | int | float | bool):
                    raise MalformedCallback(f"{where} has a {type(value).__name__} as its {key!r}")
            elif value != wanted:
                raise MalformedCallback(f"{where} has {key}={str(value)[:40]!r}, not {wanted!r}")
    return f"{stringify_id(cid)}.{entry['property']}"


def _check_dependencies(entries: Any, declared: list[dict[str, Any]], name: str) -> set[str]:
    """Check ``inputs`` or ``state`` against the callback's declared list; returns the prop ids present."""
    if not isinstance(entries, list) or len(entries) != len(declared):
        raise MalformedCallback(f"{name} must be a list of {len(declared)} entries")
    prop_ids: set[str] = set()
    for index, (entry, dep) in enumerate(zip(entries, declared)):
        pattern = _declared_pattern(dep["id"])
        wildcards = [value[0] for value in (pattern or {}).values() if isinstance(value, list) and value]
        if any(wildcard in _LIST_WILDCARDS for wildcard in wildcards):
            if not isinstance(entry, list) or len(entry) > MAX_PATTERN_ITEMS:
                raise MalformedCallback(f"{name}[{index}] must be a list of at most {MAX_PATTERN_ITEMS} entries")
            prop_ids.update(_check_entry(item, dep, pattern, f"{name}[{index}][{k}]") for k, item in enumerate(entry))
        else:
            prop_ids.add(_check_entry(entry, dep, pattern, f"{name}[{index}]"))
    return prop_ids


def _declared_outputs(callback: dict[str, Any]) -> Any:
    """The ``outputs`` a renderer sends for ``callback``: one ``{"id", "property"}`` or a list of them."""
    output = callback["output"]
    if isinstance(output, list | tuple):
        return [{"id": o.component_id, "property": o.component_property} for o in output]
    return {"id": output.component_id, "property": output.component_property}


def check_callback_body(body: Any, callback_map: dict[str, dict[str, Any]]) -> None:
    """Raise :class:`MalformedCallback` unless ``body`` has the shape of a request for a callback of ``callback_map``."""
    if not isinstance(body, dict):
        raise MalformedCallback("the body must be a JSON object")
    if _too_deep(body, MAX_DEPTH):
        raise MalformedCallback(f"the body nests deeper than {MAX_DEPTH} levels")
    output = body.get("output")
    callback = callback_map.get(output) if isinstance(output, str) else None
    if callback is None:
        raise MalformedCallback("output names no callback of this app")
    if body.get("outputs") != _declared_outputs(callback):
        raise MalformedCallback("outputs are not the outputs of that callback")
    inputs = _check_dependencies(body.get("inputs"), callback["inputs"], "inputs")
    _check_dependencies(body.get("state", []), callback["state"], "state")
    changed = body.get("changedPropIds", [])
    # Distinct, too: Dash looks up every input in this list, so 60,000 repeats would cost a product of both.
    if (
        not isinstance(changed, list)
        or any(not isinstance(p, str) or p not in inputs for p in changed)
        or len(set(changed)) != len(changed)
    ):
        raise MalformedCallback("changedPropIds must list distinct prop ids of the inputs")


def _refusal(status: int, reason: str) -> Response:
    return Response(json.dumps({"error": reason}), status=status, mimetype="application/json")


def install(app: Dash) -> None:
    """Bound request bodies, refuse malformed callback requests (400 with a JSON reason) before Dash reads them,
    and answer a request for a script Dash does not serve with 404 (Dash raises for it: a 500 listing every file)."""
    server = app.server
    server.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES  # Flask's own 413 beyond it, as waitress does in production
    route = app.config.routes_pathname_prefix + _UPDATE_ROUTE

    @server.before_request
    def refuse_malformed_callbacks() -> Response | None:
        if request.path != route or request.method != "POST":
            return None
        try:
            # Flask caches the parsed body, so Dash reads this same object; bad JSON is Flask's 400, a wrong type its 415.
            body = request.get_json()
        except RecursionError:  # the parser's own limit: JSON nested about a thousand deep
            return _refusal(400, f"the body nests deeper than {MAX_DEPTH} levels")
        try:
            check_callback_body(body, app.callback_map)
        except MalformedCallback as exc:
            return _refusal(400, str(exc))
        return None

    @server.errorhandler(DependencyException)
    def unknown_component_file(_exc: DependencyException) -> Response:
        # Raised only by /_dash-component-suites/<package>/<path> for a package or path it does not serve.
        return Response("no such component file", status=404, mimetype="text/plain")
