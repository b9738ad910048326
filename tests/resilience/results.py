"""The suite's figures: one row per scenario in a JSON file, shown in docs/resilience.md.

Each scenario records what it did and what it measured (`record`); the session prints
the table at the end, and `python -m tests.resilience.results [PATH]` prints it again
from the file (that output is what docs/resilience.md shows).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS_ENV = "RESILIENCE_RESULTS"
COLUMNS = (
    ("scenario", "Scenario"),
    ("load", "Load"),
    ("fault", "Killed / stopped (how long)"),
    ("lost", "Trades lost"),
    ("twice", "Run twice"),
    ("recover", "Time to recover"),
)


@dataclass(frozen=True)
class Row:
    """One scenario's line. `recover` is prose with its figures (what "recovered" means
    differs per fault); `lost` and `twice` are counts the scenario asserted to be 0."""

    key: str  # orders the rows: "1", "2", ...
    scenario: str
    load: str
    fault: str
    lost: int
    twice: int
    recover: str
    notes: str = ""


def results_path() -> Path:
    return Path(os.environ.get(RESULTS_ENV) or ROOT / "data" / "resilience.json")


def load(path: Path | None = None) -> dict[str, Row]:
    path = path or results_path()
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {key: Row(**value) for key, value in raw.items()}


# Keys recorded by this process: the session prints only what it measured itself.
RECORDED: set[str] = set()


def record(row: Row) -> None:
    """Add or replace the scenario's row (a rerun of one scenario keeps the others)."""
    RECORDED.add(row.key)
    path = results_path()
    rows = load(path)
    rows[row.key] = row
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = {k: asdict(rows[k]) for k in sorted(rows)}
    path.write_text(json.dumps(ordered, indent=2) + "\n")
    print(f"\nresilience: {row.scenario}: lost {row.lost}, twice {row.twice}; {row.recover}")


def table(rows: dict[str, Row]) -> str:
    """The Markdown table of `rows`, in key order."""
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for key in sorted(rows):
        values = asdict(rows[key])
        cells = [str(values[name]).replace("|", "\\|") for name, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    given = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    found = load(given)
    if not found:
        print(f"no results in {given or results_path()}", file=sys.stderr)
        sys.exit(1)
    print(table(found))
