"""`just bench [NAME ...]`: run the benchmark suites (every tests/benchmarks/bench_*.py with a `run`).

Each suite's `run(out_dir: Path) -> dict` measures the service against a baseline taken in the same run,
prints its table and returns its figures; they are written to bench-results/<name>.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

import tests.benchmarks as package


def main() -> int:
    suites = sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules(package.__path__)
        if m.name.startswith("bench_")
    )
    parser = argparse.ArgumentParser(prog="just bench")
    parser.add_argument("names", nargs="*", help=f"suites to run (default: all): {', '.join(suites)}")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in args.names or suites:
        module = importlib.import_module(f"tests.benchmarks.bench_{name}")
        if not hasattr(module, "run"):
            continue
        print(f"\n=== {name} ===", flush=True)
        started = time.monotonic()
        try:
            result = module.run(args.out)
        except Exception as exc:
            print(f"{name} failed: {exc!r}", file=sys.stderr)
            failed.append(name)
            continue
        result["elapsed_seconds"] = round(time.monotonic() - started, 1)
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
