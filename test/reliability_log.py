"""Figures of the fault-injection suite (``test/test_reliability_*.py``) for docs/RELIABILITY.md.

Every reliability test calls :func:`record` with what it injected, how many times, and
what it observed; the entries are appended (JSON lines) to
``$AVI_HT_RELIABILITY_LOG`` (default ``log/reliability/results.jsonl`` in the checkout).
``python test/reliability_log.py`` prints the latest entry of each fault as the
markdown table of docs/RELIABILITY.md. Recording never fails a test (a read-only
checkout just loses the figures).
"""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import sys
from typing import Any

_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_LOG = _ROOT / "log" / "reliability" / "results.jsonl"


def log_path() -> pathlib.Path:
    return pathlib.Path(os.environ.get("AVI_HT_RELIABILITY_LOG", DEFAULT_LOG))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def record(fault: str, injected: str, count: int, outcome: str, **figures: Any) -> None:
    """Append one figure line: ``fault`` (table row), ``injected`` (what), ``count`` (how many
    times), ``outcome`` (observed, one sentence) and any extra numbers."""
    entry = {"fault": fault, "injected": injected, "count": int(count), "outcome": outcome,
             "figures": _plain(figures), "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
             "time": datetime.datetime.now().isoformat(timespec="seconds")}
    try:
        path = log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(entry) + "\n")
    except OSError:
        pass


def latest_entries(path: pathlib.Path | None = None) -> list[dict]:
    """The newest entry per fault, in first-seen order."""
    path = path or log_path()
    latest: dict[str, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            latest.pop(entry["fault"], None)
            latest[entry["fault"]] = entry
    return list(latest.values())


def markdown_table(entries: list[dict]) -> str:
    rows = ["| fault | injected | times | observed outcome | test |", "|---|---|---|---|---|"]
    for e in entries:
        rows.append(f"| {e['fault']} | {e['injected']} | {e['count']} | {e['outcome']} | "
                    f"`{e['test'].split('::')[-1]}` |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table(latest_entries(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else None)))
