"""Run every ``benchmarks/bench_*.py`` and print ours vs dcmtk, measured in the same run.

Usage: ``python -m benchmarks.run [--only echo,find] [--json PATH]``. Timings are whole commands (start-up
included) unless a row says otherwise, best of several runs. Ratios = ours / dcmtk (lower is better).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: topics measured by another function than ``rows`` of a ``bench_*`` module: topic -> (module, function)
EXTRA_TOPICS = {"retrieve-scale": ("retrieve", "scale_rows")}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``make bench``.

    :param argv: command-line arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="comma-separated topics (echo, find, receiver, send, retrieve)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("TCP_NODELAY", "1")

    import benchmarks

    topics = sorted(
        [
            info.name[len("bench_") :]
            for info in pkgutil.iter_modules(benchmarks.__path__)
            if info.name.startswith("bench_")
        ]
        + list(EXTRA_TOPICS)
    )
    if args.only:
        wanted = {t.strip() for t in args.only.split(",")}
        unknown = wanted - set(topics)
        if unknown:
            parser.error(f"unknown topic(s) {sorted(unknown)}; known: {topics}")
        topics = [t for t in topics if t in wanted]

    results: list[dict] = []
    failed = False
    for topic in topics:
        name, function = EXTRA_TOPICS.get(topic, (topic, "rows"))
        measure = getattr(importlib.import_module(f"benchmarks.bench_{name}"), function)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"bench-{topic}-") as tmp:
            try:
                topic_rows = measure(Path(tmp))
            except Exception as exc:  # report and go on with the other topics
                print(f"[{topic}] FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
                failed = True
                continue
        for r in topic_rows:
            r["topic"] = topic
        results.extend(topic_rows)
        print(f"[{topic}] {len(topic_rows)} row(s) in {time.monotonic() - started:.1f} s", file=sys.stderr)

    print_table(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    return 1 if failed else 0


def print_table(results: list[dict]) -> None:
    """Print the rows as a Markdown table.

    :param results: rows from the benchmark modules.
    """
    print("| benchmark | ours (s) | dcmtk (s) | ratio | goal | note |")
    print("|---|---:|---:|---:|---:|---|")
    for r in results:
        ratio = f"{r['ratio']:.2f}×" if r.get("ratio") is not None else "-"
        goal = f"≤ {r['goal']}×" if r.get("goal") else ""
        cells = [r["name"], f"{r['ours_s']:.3f}", f"{r['dcmtk_s']:.3f}", ratio, goal, r.get("note", "")]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
