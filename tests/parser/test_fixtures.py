"""Every fixture PDF parses to exactly the events written down in tests/parser/expected/.

The expected files were checked line by line against the PDFs' tables (see the
fixtures README for the quirks they exercise).
"""

import json
from pathlib import Path

import pytest

from schedgen.errors import UnknownScheduleType
from schedgen.runner.parsing import parse_pdf

from schedule_pdfs import FIXTURES
EXPECTED = Path(__file__).parent / "expected"
CASES = sorted(EXPECTED.glob("*.json"))


def fixture_for(expected: Path) -> Path:
    folder, stem = expected.stem.split("__")
    return FIXTURES / folder / f"{stem}.pdf"


def test_every_fixture_pdf_has_expectations():
    pdfs = {p for p in FIXTURES.glob("*/*.pdf") if p.name != "invalid-format.pdf"}
    assert pdfs == {fixture_for(case) for case in CASES}


@pytest.mark.parametrize("expected", CASES, ids=lambda p: p.stem)
def test_fixture_parses_exactly(expected):
    result = parse_pdf(fixture_for(expected))
    assert result.to_json() == json.loads(expected.read_text())


def test_real_lecture_schedule_quirks():
    events = parse_pdf(FIXTURES / "up" / "UP_MOD_XLS.pdf").events
    assert len(events) == 30
    # practical split over several labs: one event, all venues
    cos214_p01 = [e for e in events if (e.module, e.group) == ("COS 214", "P01")]
    assert [e.venues for e in cos214_p01] == [("Informatorium Grey Lab", "Informatorium Orange Lab")]
    # row continued on page 2 with empty leading cells joins the row above
    stk_p03 = [e for e in events if (e.module, e.group) == ("STK 220", "P03")]
    assert len(stk_p03) == 1
    assert stk_p03[0].venues == tuple(f"Informatorium CBT Lab {n}" for n in (1, 2, 3))
    assert stk_p03[0].campus == "HATFIELD"


def test_real_test_schedule_quirks():
    events = parse_pdf(FIXTURES / "up" / "UP_TST_PDF.pdf").events
    assert len(events) == 12
    assert [e.activity for e in events if e.module == "STK 220"] == ["Test1", "PTest1", "Test2", "PTest2"]
    ptest2 = next(e for e in events if e.activity == "PTest2")
    assert len(ptest2.venues) == 13  # 3 on page 1, 10 continued on page 2
    assert ptest2.venues[-1] == "IT Open Silver Lab"


def test_real_exam_schedule_quirks():
    events = parse_pdf(FIXTURES / "up" / "UP_EXAM_SS.pdf").events
    assert [e.date for e in events] == ["2025-11-12", "2025-11-13", "2025-11-14", "2025-11-15", "2025-11-17"]
    assert events[0].venues == ("IT Building CBT Labs 1,2,3",)
    assert all(e.end_time is None and e.day is None for e in events)


def test_overlapping_header_text_is_recognised():
    result = parse_pdf(FIXTURES / "synthetic" / "exam-schedule.pdf")
    assert result.kind.value == "exam"
    assert [e.exam_campus for e in result.events] == ["HATFIELD"] * 3


def test_invalid_format_is_unknown_schedule_type():
    with pytest.raises(UnknownScheduleType):
        parse_pdf(FIXTURES / "synthetic" / "invalid-format.pdf")


def test_forced_type_must_match_the_table():
    with pytest.raises(UnknownScheduleType, match="exam schedule"):
        parse_pdf(FIXTURES / "up" / "UP_MOD_XLS.pdf", schedule_type="exam")
    assert parse_pdf(FIXTURES / "up" / "UP_MOD_XLS.pdf", schedule_type="lecture").kind.value == "lecture"
