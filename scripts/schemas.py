"""Write (``--write``) or check the JSON Schemas in schemas/ against the types they are generated from.

.venv/bin/python scripts/schemas.py          # exit 1 naming each schema that differs from its type
.venv/bin/python scripts/schemas.py --write  # (re)write them
"""

from __future__ import annotations

import argparse
import json
import sys

from monitor.orchestration.schemas import SCHEMA_DIR, generate, names, schema_path


def text(name: str) -> str:
    return json.dumps(generate(name), indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="write the schemas instead of checking them")
    args = parser.parse_args()
    stale = []
    for name in names():
        path = schema_path(name)
        wanted = text(name)
        if args.write:
            SCHEMA_DIR.mkdir(exist_ok=True)
            path.write_text(wanted, encoding="utf-8")
        elif not path.is_file() or path.read_text(encoding="utf-8") != wanted:
            stale.append(path.name)
    if stale:
        print(f"stale schemas (run scripts/schemas.py --write): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
