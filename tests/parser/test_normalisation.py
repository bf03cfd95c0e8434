"""Property tests for the value rules: times, dates, days, venues, header matching."""

import datetime as dt

import pytest
from hypothesis import given, strategies as st

from schedgen.errors import MalformedSchedule
from schedgen.runner import parser_rules as rules

times = st.tuples(st.integers(0, 23), st.integers(0, 59))
separators = st.sampled_from([":", "h", "H", "."])
spaces = st.text(" ", max_size=3)


@given(times, times, separators, spaces, st.sampled_from(["-", "–", "to"]))
def test_time_range_round_trips(start, end, sep, pad, dash):
    text = f"{pad}{start[0]}{sep}{start[1]:02d}{pad}{dash}{pad}{end[0]:02d}{sep}{end[1]:02d}{pad}"
    assert rules.parse_time_range(text) == (f"{start[0]:02d}:{start[1]:02d}", f"{end[0]:02d}:{end[1]:02d}")


@given(times)
def test_single_time_has_no_end(start):
    assert rules.parse_time_range(f"{start[0]:02d}:{start[1]:02d}") == (f"{start[0]:02d}:{start[1]:02d}", None)


@given(st.integers(24, 99), st.integers(0, 59))
def test_impossible_hours_are_rejected(hour, minute):
    with pytest.raises(MalformedSchedule):
        rules.parse_time_range(f"{hour}:{minute:02d} - 10:00")


@given(st.text(alphabet="abcxyz!?", min_size=1))
def test_garbage_times_are_rejected(text):
    with pytest.raises(MalformedSchedule):
        rules.parse_time_range(text)


@given(st.dates(dt.date(1990, 1, 1), dt.date(2100, 12, 31)), st.sampled_from(["%d %b %Y", "%d %B %Y"]),
       st.booleans())
def test_dates_round_trip(day, fmt, upper):
    text = day.strftime(fmt)
    assert rules.parse_date(text.upper() if upper else text) == day.isoformat()
    assert rules.parse_date(day.isoformat()) == day.isoformat()


def test_impossible_dates_are_rejected():
    for text in ("31 Feb 2025", "12 Foo 2025", "yesterday"):
        with pytest.raises(MalformedSchedule):
            rules.parse_date(text)


@given(st.sampled_from(rules._DAYS), st.integers(3, 9), st.sampled_from([str.lower, str.upper, str.title]))
def test_day_prefixes(day, length, case):
    assert rules.normalise_day(case(day[:length])) == day


@given(st.lists(st.text(alphabet="ABCabc123-,", min_size=1, max_size=8), min_size=1, max_size=5),
       st.lists(st.sampled_from([" ", "  ", "\n", "\t"]), min_size=5, max_size=5))
def test_venue_white_space_collapses(words, gaps):
    messy = "".join(w + g for w, g in zip(words, gaps))
    assert rules.normalise_venue(messy) == " ".join(words)


@given(st.from_regex(r"[A-Za-z]{3}", fullmatch=True), st.integers(0, 999), spaces)
def test_module_codes(letters, number, pad):
    assert rules.normalise_module(f"{pad}{letters}{pad}{number:03d}") == f"{letters.upper()} {number:03d}"


def test_wrapped_test_names_join():
    line = rules.Line
    assert rules.join_wrapped_name([line("PTest", 0), line("1", 10)]) == "PTest1"
    assert rules.join_wrapped_name([line("Sick", 0), line("Test", 10)]) == "Sick Test"


@given(st.permutations(["Module", "Offered", "Group", "Lang", "Activity", "Day", "Time", "Venue",
                        "Campus", "Study\nProg"]))
def test_lecture_header_found_in_any_column_order(cells):
    header = rules.recognise_header(cells)
    assert header is not None and header.kind.value == "lecture"
    assert cells[header.index["venue"]] == "Venue"


def test_header_with_line_breaks_and_overlaps():
    cells = ["Status", "Module", "Paper", "Activity", "Date", "Start\nTime", "Module Cam",
             "pEuxsam Camp", "usVenue", "Exam Comm"]
    header = rules.recognise_header(cells)
    assert header.kind.value == "exam"
    assert [cells[header.index[k]] for k in ("module_campus", "exam_campus", "venue", "comments")] == \
        ["Module Cam", "pEuxsam Camp", "usVenue", "Exam Comm"]
    assert rules.recognise_header(["Column1", "Column2", "Column3"]) is None
