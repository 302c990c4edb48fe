"""Run every benchmarks/bench_*.py side by side with its reference and write the table.

Each module exposes ``run() -> list[dict]`` with keys: name, molpy, reference,
ratio, target, unit (and optionally note). Results go to benchmarks/results.md and
benchmarks/results.json. Usage: ``python -m benchmarks.run [-k NAME]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover(selected: list[str]) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    return [n for n in names if not selected or any(s in n for s in selected)]


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def write_table(rows: list[dict], path: Path) -> None:
    lines = ["# molpy benchmarks", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, Python {platform.python_version()}, "
             "molpy and the reference in the same run. Ratio: molpy against the reference, above 1 when molpy is "
             "faster (reference time / molpy time, or molpy rate / reference rate).",
             "", "| benchmark | molpy | reference | unit | ratio | target | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {fmt(r.get('molpy'))} | {fmt(r.get('reference'))} | {r.get('unit', '')} | "
                     f"{fmt(r.get('ratio'))} | {r.get('target', '')} | {r.get('note', '')} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", action="append", default=[], help="only benchmarks whose module name contains this")
    ap.add_argument("--out", default=str(HERE), help="folder for results.md and results.json")
    args = ap.parse_args(argv)
    out = Path(args.out)
    rows: list[dict] = []
    names = discover(args.k)
    if args.k and (out / "results.json").exists():   # keep the other modules' rows
        rows = [r for r in json.loads((out / "results.json").read_text()) if r.get("module") not in names]
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        for row in module.run():
            print(f"   {row['name']}: molpy {fmt(row.get('molpy'))} vs {fmt(row.get('reference'))} "
                  f"{row.get('unit', '')} -> {fmt(row.get('ratio'))} (target {row.get('target', '')})",
                  file=sys.stderr, flush=True)
            rows.append({**row, "module": name})
    rows.sort(key=lambda r: r["module"])
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    write_table(rows, out / "results.md")
    print(f"wrote {out / 'results.md'}", file=sys.stderr)
    if update_readme(out / "results.md", HERE.parent / "README.md"):
        print("updated the results table in README.md", file=sys.stderr)
    return 0


def update_readme(results: Path, readme: Path) -> bool:
    """Put the table between README's results markers (README must stay true)."""
    start, end = "<!-- results -->", "<!-- /results -->"
    text = readme.read_text() if readme.exists() else ""
    if start not in text or end not in text:
        return False
    table = results.read_text().split("\n", 2)[2].strip()
    head, rest = text.split(start, 1)
    readme.write_text(f"{head}{start}\n{table}\n{end}{rest.split(end, 1)[1]}")
    return True


if __name__ == "__main__":
    sys.exit(main())
