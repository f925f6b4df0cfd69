"""Hypothesis fuzzing: no input makes the parsers raise, and every error names a field."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from egate.drivers.document import parse_bcbp, parse_mrz
from egate.drivers.document.mrz import char_value
from tests.support.reader_fixtures import BCBP_ONE_LEG, UTOPIA_TD3

MRZ_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<"


def _assert_named(result) -> None:
    for e in result.errors:
        assert e.field and e.message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_mrz_any_text(text: str) -> None:
    r = parse_mrz(text, today=date(2020, 1, 1))
    _assert_named(r)
    assert r.valid == (r.document is not None and not r.errors)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([(2, 44), (2, 36), (3, 30)]).flatmap(
        lambda shape: st.lists(
            st.text(alphabet=MRZ_CHARS, min_size=shape[1], max_size=shape[1]), min_size=shape[0], max_size=shape[0]
        )
    )
)
def test_parse_mrz_right_shape_random_content(lines: list[str]) -> None:
    r = parse_mrz("\n".join(lines), today=date(2020, 1, 1))
    _assert_named(r)
    assert r.format is not None and r.document is not None


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=44, max_value=87), st.sampled_from(MRZ_CHARS))
def test_single_substitution_in_checked_line_is_caught_or_blind(pos: int, ch: str) -> None:
    text = "".join(UTOPIA_TD3)
    mutated = text[:pos] + ch + text[pos + 1 :]
    r = parse_mrz(mutated, today=date(2010, 1, 1))
    _assert_named(r)
    if r.valid and r.lines != UTOPIA_TD3:
        # What passes is either an unchecked position (nationality 54-56, sex 64) or a substitution the
        # 7-3-1 check digit cannot see: values differing by a multiple of 10 (L/B/1, 8/S/I; part 3 §4.9).
        i = pos - 44
        blind = (char_value(ch) - char_value(text[pos])) % 10 == 0
        assert i in (10, 11, 12, 20) or blind, (pos, ch, r.lines)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_parse_bcbp_any_text(text: str) -> None:
    r = parse_bcbp(text)
    _assert_named(r)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(BCBP_ONE_LEG)), st.binary(max_size=20))
def test_parse_bcbp_truncated_or_spliced(cut: int, junk: bytes) -> None:
    r = parse_bcbp(BCBP_ONE_LEG[:cut] + junk.decode("latin-1"))
    _assert_named(r)
    if cut < 60:
        assert not r.valid
