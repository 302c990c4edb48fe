"""Run every benchmarks/bench_*.py side by side with its reference and write the table.

Each module exposes ``run() -> list[dict]`` with keys: name, molpy, reference,
ratio, target, unit (and optionally note). Results go to benchmarks/results.md and
benchmarks/results.json (or ``--out DIR``). README.md's table changes only with
``--update-readme``, and then only in the rows that ran. Usage:
``python -m benchmarks.run [-k NAME] [--out DIR] [--update-readme]``.
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
    lines += [_line(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", action="append", default=[], help="only benchmarks whose module name contains this")
    ap.add_argument("--out", default=str(HERE), help="folder for results.md and results.json (made if missing)")
    ap.add_argument("--update-readme", action="store_true",
                    help="also put the rows that ran into README.md's results table (the others stay)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    ran: list[dict] = []
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
            ran.append(row)
    rows.sort(key=lambda r: r["module"])
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    write_table(rows, out / "results.md")
    print(f"wrote {out / 'results.md'}", file=sys.stderr)
    if args.update_readme:
        if update_readme(ran, HERE.parent / "README.md"):
            print(f"updated {len(ran)} rows of the results table in README.md", file=sys.stderr)
        else:
            print("README.md has no results markers; not changed", file=sys.stderr)
    return 0


def _line(r: dict) -> str:
    return (f"| {r['name']} | {fmt(r.get('molpy'))} | {fmt(r.get('reference'))} | {r.get('unit', '')} | "
            f"{fmt(r.get('ratio'))} | {r.get('target', '')} | {r.get('note', '')} |")


def update_readme(ran: list[dict], readme: Path) -> bool:
    """Replace the rows that ran in the table between README's results markers (by benchmark
    name; new ones are appended), keeping every other row as it is."""
    start, end = "<!-- results -->", "<!-- /results -->"
    text = readme.read_text() if readme.exists() else ""
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    table, tail = rest.split(end, 1)
    lines = table.strip("\n").splitlines()
    fresh = {r["name"]: _line(r) for r in ran}
    kept = []
    for line in lines:
        name = line.split("|")[1].strip() if line.startswith("|") and line.count("|") > 2 else None
        kept.append(fresh.pop(name) if name in fresh else line)
    kept += fresh.values()
    readme.write_text(f"{head}{start}\n" + "\n".join(kept) + f"\n{end}{tail}")
    return True


if __name__ == "__main__":
    sys.exit(main())
