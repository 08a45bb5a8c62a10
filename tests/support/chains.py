"""What a sequencer's stamps must form: one chain per group, no fork, no hole."""
from __future__ import annotations

from idgen_client import Stamp

__all__ = ["assert_chains"]


def assert_chains(stamps_by_group: dict[object, list[Stamp]], start: int = 0) -> None:
    """Each group's stamps, by seq, link prev_seq -> seq with no fork and no hole."""
    for group, stamps in stamps_by_group.items():
        ordered = sorted(stamps, key=lambda s: s.seq)
        assert len({s.seq for s in ordered}) == len(ordered), f"group {group}: a seq twice"
        assert ordered[0].prev_seq == start, f"group {group}: chain starts at {ordered[0]}"
        for before, after in zip(ordered, ordered[1:]):
            assert after.prev_seq == before.seq, f"group {group}: {before} then {after}"
