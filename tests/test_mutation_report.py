"""The mutation report's reading of mutmut's names and of the explanations' table."""
from __future__ import annotations

from pathlib import Path

from tools.mutation_report import cell, explained, module_of, readable, wording_only


def test_a_mutants_function_is_named_as_a_reader_knows_it():
    assert readable("idgen_server.allocator.xǁAllocatorǁ_check_floor") == \
        "idgen_server.allocator.Allocator._check_floor"
    assert readable("idgen_core.segment.x_validate_count") == "idgen_core.segment.validate_count"
    assert module_of("idgen_client.aio.sequencer.xǁAsyncSequencerǁstamp") == \
        "idgen_client/aio/sequencer.py"


def test_only_a_sentence_put_in_another_case_or_wrapped_in_xx_is_wording():
    assert wording_only('raise X("no segment arrived: retry later")',
                        'raise X("NO SEGMENT ARRIVED: RETRY LATER")')
    assert wording_only('raise X("no segment arrived")', 'raise X("XXno segment arrivedXX")')
    assert not wording_only('key = "biz_type"', 'key = "XXbiz_typeXX"')  # a key, not a sentence
    assert not wording_only('raise X("no segment arrived")', 'raise X(None)')
    assert not wording_only("if a > b:", "if a >= b:")


def test_an_explanation_is_matched_by_function_and_change_and_needs_a_reason(tmp_path: Path):
    table = tmp_path / "survivors.md"
    change = cell("if a | b:", "if a & b:")
    table.write_text("| function | change | why it lives |\n|---|---|---|\n"
                     f"| `m.f` | {change} | equivalent: a and b are never both set |\n"
                     "| `m.g` | `x = 1` → `x = 2` |  |\n")
    assert explained(table) == {("m.f", "`if a \\| b:` → `if a & b:`")}
