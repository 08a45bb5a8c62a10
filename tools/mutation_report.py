"""The kill rate of the last ``mutmut run``, per module: ``python -m tools.mutation_report``.

Run it in the directory of ``mutmut run``. One row per module: mutants killed by a test (a
timeout counts as killed: the mutant made a test hang), survived (every test passed), and
not reached by any selected test; the kill rate is killed over all three. Why not mutmut's own
summary: it counts the whole run, not each module, and a weak module hides in a good total.

Every mutant that is not killed must be explained in ``docs/mutation-survivors.md``: a table
of the function, the change and why no test can (or need) tell it from the code. A row is
matched by function and change, not by mutmut's number, which shifts when a function is
edited. The report counts the explained ones apart; ``--survivors`` prints the rest as rows
to add (once a test kills them, or with the reason they are equivalent), and ``--markdown``
the per-module table for ``docs/mutation.md``, ``--names`` the unexplained mutants' names, to run
again once tests meant to kill them are in. The exit status is 1 while any is unexplained.
"""
from __future__ import annotations

import argparse
import io
import re
import tokenize
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

EXPLAINED = Path("docs/mutation-survivors.md")

_LINE = re.compile(r"^\s*(?P<name>[\w.ǁ]+)__mutmut_\d+: (?P<status>.+?)\s*$")
_KILLED = {"killed", "timeout", "caught by type check"}
_LIVED = {"survived", "suspicious"}
_UNREACHED = {"no tests"}
_ROW = re.compile(r"^\|\s*`(?P<function>[^`]+)`\s*\|\s*(?P<change>(?:\\.|[^|\\])+?)\s*\|"
                  r"\s*(?P<why>(?:\\.|[^|\\])*?)\s*\|\s*$")


def module_of(function: str) -> str:
    """``idgen_core.segment.x_validate_count`` -> ``idgen_core/segment.py``."""
    parts = function.split(".")
    while parts and (parts[-1].startswith("x") or "ǁ" in parts[-1]):
        parts.pop()
    return "/".join(parts) + ".py"


def readable(function: str) -> str:
    """``idgen_server.allocator.xǁAllocatorǁ_check_floor`` -> ``idgen_server.allocator.Allocator._check_floor``;
    ``idgen_core.segment.x_validate_count`` -> ``idgen_core.segment.validate_count``."""
    module, _, name = function.rpartition(".")
    if "ǁ" in name:
        return ".".join([module, *[part for part in name[1:].split("ǁ") if part]])
    return f"{module}.{name[2:]}"


def change_of(mutant: str) -> tuple[str, str]:
    """The lines a mutant changes: old and new, each joined into one line."""
    diff = _diff(mutant)
    old = " ".join(line[1:].strip() for line in diff.splitlines()
                   if line.startswith("-") and not line.startswith("---"))
    new = " ".join(line[1:].strip() for line in diff.splitlines()
                   if line.startswith("+") and not line.startswith("+++"))
    return old, new


def cell(old: str, new: str) -> str:
    """A change as a table cell: ``old`` → ``new``, code in backticks, ``|`` escaped."""
    return f"`{old}` → `{new}`".replace("|", "\\|")


def wording_only(old: str, new: str) -> bool:
    """Whether a mutant changes only the wording of text meant for people: every token
    it changes is a string literal with a space in it (a sentence, not a key or a format),
    changed in case or wrapped in ``XX``. Tests read what a message must say (the biz type,
    the database, what to do), not each letter of it; such mutants are counted as explained."""
    before, after = _tokens(old), _tokens(new)
    if len(before) != len(after):
        return False
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    return bool(changed) and all(
        kind_a == kind_b == tokenize.STRING and " " in text_a
        and (text_b in (text_a.lower(), text_a.upper()) or _unwrapped(text_b) == text_a)
        for (kind_a, text_a), (kind_b, text_b) in changed)


def _tokens(line: str) -> list[tuple[int, str]]:
    """The tokens of a line cut out of a statement (it may close brackets it did not open:
    the tokenizer complains at the end, once every token was read)."""
    found: list[tuple[int, str]] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(line).readline):
            if token.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
                found.append((token.type, token.string))
    except tokenize.TokenError:
        pass
    return found


def _unwrapped(text: str) -> str:
    """``f"XXabcXX"`` -> ``f"abc"`` (mutmut's wrapping of a string in ``XX``)."""
    match = re.fullmatch(r"([a-zA-Z]*)(['\"]{1,3})XX(.*)XX\2", text, re.S)
    return f"{match[1]}{match[2]}{match[3]}{match[2]}" if match else ""


def _diff(mutant: str) -> str:
    try:  # mutmut's own function, in-process: ``mutmut show`` once per mutant takes a second
        from mutmut.mutation.diff_apply import get_diff_for_mutant
    except ImportError:  # another mutmut: its command line, slower
        return subprocess.run([sys.executable, "-m", "mutmut", "show", mutant],
                              capture_output=True, text=True, check=True).stdout
    return str(get_diff_for_mutant(mutant))


def explained(path: Path = EXPLAINED) -> set[tuple[str, str]]:
    """(readable function, change) of each row of the explanations' tables."""
    if not path.exists():
        return set()
    rows = (_ROW.match(line) for line in path.read_text().splitlines())
    return {(row["function"], row["change"]) for row in rows if row and row["why"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survivors", action="store_true",
                        help="print the unexplained mutants as rows for docs/mutation-survivors.md")
    parser.add_argument("--markdown", action="store_true", help="the table in markdown")
    parser.add_argument("--names", action="store_true",
                        help="print only the unexplained mutants' names, for `mutmut run NAME...` "
                             "once tests meant to kill them are written")
    args = parser.parse_args(argv)
    results = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                             capture_output=True, text=True, check=True).stdout
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    known = explained()
    unexplained: list[tuple[str, str, str, str]] = []
    for line in results.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        status, function = match["status"], match["name"]
        kind = "killed" if status in _KILLED else "survived" if status in _LIVED else \
            "unreached" if status in _UNREACHED else "unjudged"
        module = module_of(function)
        counts[module][kind] += 1
        if kind in ("survived", "unreached"):
            name = line.split(":")[0].strip()
            old, new = change_of(name)
            key = (readable(function), cell(old, new))
            if key in known or wording_only(old, new):
                counts[module]["explained"] += 1
                counts[module]["wording"] += wording_only(old, new)
            else:
                unexplained.append((*key, kind, name))
    if args.names:
        print("\n".join(name for *_, name in unexplained))
        return 1 if unexplained else 0
    _print_table(counts, markdown=args.markdown)
    if args.survivors:
        print()
        for function, change, kind, _ in unexplained:
            print(f"| `{function}` | {change} | ? ({kind}) |")
    return 1 if unexplained else 0


def _print_table(counts: dict[str, Counter[str]], *, markdown: bool) -> None:
    heads = ["module", "killed", "survived", "unreached", "kill rate", "explained"]
    rows = [[module, *_figures(counts[module])] for module in sorted(counts)]
    total: Counter[str] = sum(counts.values(), Counter())
    rows.append(["**all**" if markdown else "all", *_figures(total)])
    if any(c["unjudged"] for c in counts.values()):
        print(f"({total['unjudged']} mutants not judged yet: the run is not over)")
    if markdown:
        print("| " + " | ".join(heads) + " |")
        print("|---|" + "--:|" * (len(heads) - 1))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    print(f"{heads[0]:36}" + "".join(f"{h:>11}" for h in heads[1:]))
    for row in rows:
        print(f"{row[0]:36}" + "".join(f"{cell:>11}" for cell in row[1:]))


def _figures(c: Counter[str]) -> list[str]:
    judged = c["killed"] + c["survived"] + c["unreached"]
    rate = f"{100 * c['killed'] / judged:.1f}%" if judged else "-"
    left = c["survived"] + c["unreached"]
    return [str(c["killed"]), str(c["survived"]), str(c["unreached"]), rate,
            f"{c['explained']}/{left}"]


if __name__ == "__main__":
    raise SystemExit(main())
