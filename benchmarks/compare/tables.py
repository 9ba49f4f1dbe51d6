"""The earlier comparisons' tables as data: every markdown table of each ``compare-*.md`` report here, with the
heading it stands under, into ``compare-*.json`` beside it.

The run folders these reports were made from are gone (README.md), so the reports are the record; this makes
their numbers machine-readable without retyping them. The cells are kept as written (``9,533 ± 551``).

    .venv/bin/python benchmarks/compare/tables.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMAND = ".venv/bin/python benchmarks/compare/tables.py"


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def tables(text: str) -> list[dict]:
    """Every table of a markdown text: ``{"section", "columns", "rows"}`` (rows as dicts, cells as written)."""
    found, section, lines = [], "", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        elif line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1].replace("|", "").strip()) <= set("-: "):
            columns, rows = _cells(line), []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(columns, _cells(lines[i]))))
                i += 1
            found.append({"section": section, "columns": columns, "rows": rows})
            continue
        i += 1
    return found


def main() -> int:
    reports = sorted(HERE.glob("compare-*.md"))
    if not reports:
        print(f"{HERE}: no compare-*.md reports", file=sys.stderr)
        return 1
    for report in reports:
        found = tables(report.read_text())
        out = report.with_suffix(".json")
        out.write_text(json.dumps({"command": COMMAND, "source": report.name,
                                   "note": "tables of the report as written; its run folders are gone",
                                   "tables": found}, indent=1, ensure_ascii=False) + "\n")
        print(f"{out.relative_to(HERE.parents[1])}: {len(found)} tables, {sum(len(t['rows']) for t in found)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
