"""The kill rate of the last ``mutmut run``, per module: ``python -m tools.mutation_report``.

Reads ``mutmut results --all true`` (run it in the same directory as ``mutmut run``) and
prints one row per module: mutants killed by a test (a timeout counts as killed: the mutant
made a test hang), survived (every test passed), and not reached by any selected test; the
kill rate is killed over all three. ``--survivors`` lists the mutants that lived, to look at
with ``mutmut show NAME``. Why not mutmut's own summary: it counts the whole run, not each
module, and a weak module hides in a good total.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter, defaultdict

_LINE = re.compile(r"^\s*(?P<name>[\w.]+)__mutmut_\d+: (?P<status>.+?)\s*$")
_KILLED = {"killed", "timeout"}
_LIVED = {"survived"}
_UNREACHED = {"no tests"}


def module_of(name: str) -> str:
    """``idgen_core.segment.x_validate_count`` -> ``idgen_core/segment.py``."""
    parts = name.split(".")
    while parts and (parts[-1].startswith("x") or "ǁ" in parts[-1]):
        parts.pop()
    return "/".join(parts) + ".py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survivors", action="store_true", help="list the mutants that lived")
    args = parser.parse_args(argv)
    results = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                             capture_output=True, text=True, check=True).stdout
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    lived: list[str] = []
    for line in results.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        status = match["status"]
        kind = "killed" if status in _KILLED else "survived" if status in _LIVED else \
            "unreached" if status in _UNREACHED else "other"
        counts[module_of(match["name"])][kind] += 1
        if kind in ("survived", "unreached"):
            lived.append(f"{line.strip()}")
    total: Counter[str] = Counter()
    print(f"{'module':40} {'killed':>7} {'survived':>9} {'unreached':>10} {'rate':>7}")
    for module in sorted(counts):
        c = counts[module]
        total.update(c)
        print(_row(module, c))
    print(_row("all", total))
    if args.survivors:
        print("\n".join(["", *lived]))
    return 0


def _row(name: str, c: Counter[str]) -> str:
    judged = c["killed"] + c["survived"] + c["unreached"]
    rate = f"{100 * c['killed'] / judged:.1f}%" if judged else "-"
    return f"{name:40} {c['killed']:7} {c['survived']:9} {c['unreached']:10} {rate:>7}"


if __name__ == "__main__":
    raise SystemExit(main())
