"""The label map: which model label each folder of the bucket holds (``MONITOR_LABEL_MAP``), read and checked once.

A bucket's folders need not be named as the model's labels (ImageNet's ``n01440764/`` for ``tench``, ``4/`` for
``four``): a file maps them, as CSV (``folder,label`` rows; a header row of exactly those names is skipped) or as a
JSON object ``{"folder": "label"}``. Indexing stores each image under its mapped label (the path stays the
folder's), so sampling, predictions, metrics and verdicts all speak the model's labels; a folder not in the map
keeps its own name. The file is a small regular file read bounded; any fault is one :class:`ConfigError` naming
the file and the row.
"""

from __future__ import annotations

import csv
import difflib
import io
from collections.abc import Iterable, Mapping
from pathlib import Path

from monitor.core.errors import ConfigError
from monitor.core.files import FileRefused, parse_json_bounded, read_text_file

#: The largest label map read (a million folders fit in well under this).
MAX_LABEL_MAP_BYTES = 64 << 20


def load_label_map(path: Path) -> dict[str, str]:
    """The folder -> label map in ``path`` (CSV or JSON, see the module docstring); ConfigError on any fault."""
    where = f"the label map {path} (MONITOR_LABEL_MAP)"
    text = read_text_file(Path(path), what=where, max_bytes=MAX_LABEL_MAP_BYTES)
    if text.lstrip()[:1] in ("{", "["):
        try:
            value = parse_json_bounded(text, max_depth=2)
        except FileRefused as exc:
            raise ConfigError(f"{where} is not a JSON object of folder -> label: it {exc}") from None
        pairs = list(value.items()) if isinstance(value, dict) else None
        if pairs is None or not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs):
            raise ConfigError(f"{where} is not a JSON object of folder -> label (text -> text)")
        rows = [(k, v, f"key {k[:80]!r}") for k, v in pairs]
    else:
        rows = []
        try:
            for number, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
                if not row or all(not cell.strip() for cell in row):
                    continue
                if number == 1 and [cell.strip().lower() for cell in row] == ["folder", "label"]:
                    continue
                if len(row) != 2:
                    raise ConfigError(f"{where} line {number}: {len(row)} fields, expected 2 (folder,label)")
                rows.append((row[0], row[1], f"line {number}"))
        except csv.Error as exc:
            raise ConfigError(f"{where}: {exc}") from None
    mapping: dict[str, str] = {}
    for folder, label, at in rows:
        folder, label = folder.strip(), label.strip()
        if not folder or not label or "/" in folder or len(folder) > 1000 or len(label) > 1000:
            raise ConfigError(f"{where} {at}: a folder name (no '/') and a label, 1 to 1000 characters each")
        if folder in mapping and mapping[folder] != label:
            raise ConfigError(f"{where} {at}: folder {folder!r} is mapped twice ({mapping[folder]!r} and {label!r})")
        mapping[folder] = label
    if not mapping:
        raise ConfigError(f"{where} maps no folder")
    return mapping


def nearest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The ``n`` labels closest to ``name`` by spelling (difflib), for a message that suggests one."""
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)


def unmapped_hint(unknown: Iterable[str], known: Iterable[str], mapping: Mapping[str, str] | None) -> str:
    """What to do about folders that are not labels of the model: the nearest labels, and how to map them."""
    labels = sorted(set(known))
    examples = []
    for folder in list(unknown)[:3]:
        close = nearest(folder, labels)
        examples.append(f"{folder!r} (nearest: {', '.join(close)})" if close else repr(folder))
    how = (
        "add them to MONITOR_LABEL_MAP"
        if mapping
        else "map folder names to the model's labels with MONITOR_LABEL_MAP=/path/map.csv (rows folder,label)"
    )
    return f"{'; '.join(examples)}: {how}, then run `monitor evaluate --date D --force`"
