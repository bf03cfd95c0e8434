"""Generate UP-style schedule PDFs (ruled tables like the portal's exports) for tests
and benchmarks, together with the events a correct parser must find in them.

`lecture_pdf(path, pages=100)` writes one ruled table per page; the header appears on
the first page only, as in the real exports, and every session row uses multi-line
cells (`L1\\nL2`, `Monday\\nWednesday`, ...).
"""

from __future__ import annotations

import random
from pathlib import Path

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Table, TableStyle
from reportlab.lib.styles import getSampleStyleSheet

LECTURE_HEADER = ["Module", "Offered", "Group", "Lang", "Activity", "Day", "Time", "Venue",
                  "Campus", "Study\nProg"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
VENUES = ["IT 4-4", "IT 2-26", "Centenary 6", "EMS 4-152", "Informatorium Grey Lab",
          "Informatorium Blue Lab 1", "HB 4-3", "Thuto 3-1"]
# The shared, read-only fixture PDFs beside the project (`../shared/fixtures`).
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"

STYLE = TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.black),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("FONTSIZE", (0, 0), (-1, -1), 8)])


def lecture_pdf(path: Path | str, pages: int = 100, rows_per_page: int = 8, seed: int = 1) -> list[dict]:
    """Write a lecture schedule of `pages` pages; return the expected events (JSON form)."""
    rng = random.Random(seed)
    story, expected = [], []
    for page in range(pages):
        data = [LECTURE_HEADER] if page == 0 else []
        for row in range(rows_per_page):
            module = f"COS {100 + (page * rows_per_page + row) % 900:03d}"
            group = f"G{(page * rows_per_page + row) // 900 + 1:02d}"
            sessions = []
            for n in range(rng.randint(1, 4)):
                hour = rng.randint(7, 16)
                sessions.append((f"L{n + 1}", rng.choice(DAYS), f"{hour:02d}:30 - {hour + 1:02d}:20",
                                 rng.choice(VENUES)))
            data.append([module, "S2", group, "E L", "\n".join(s[0] for s in sessions),
                         "\n".join(s[1] for s in sessions), "\n".join(s[2] for s in sessions),
                         "\n".join(s[3] for s in sessions), "HATFIELD", ""])
            for activity, day, time, venue in sessions:
                start, end = time.split(" - ")
                expected.append({"module": module, "activity": activity, "group": group, "day": day,
                                 "startTime": start, "endTime": end, "venues": [venue]})
        story.append(Table(data, style=STYLE))
        if page < pages - 1:
            story.append(PageBreak())
    SimpleDocTemplate(str(path), pagesize=landscape(A4)).build(story)
    return expected


def table_pdf(path: Path | str, rows: list[list[str]], pages: int = 1, title: str | None = None) -> None:
    """Any ruled table (e.g. one that is not a schedule), repeated on `pages` pages."""
    story = []
    for page in range(pages):
        if title:
            story.append(Paragraph(title, getSampleStyleSheet()["Heading1"]))
        story.append(Table(rows, style=STYLE))
        if page < pages - 1:
            story.append(PageBreak())
    SimpleDocTemplate(str(path), pagesize=landscape(A4)).build(story)


def text_pdf(path: Path | str, text: str, pagesize=A4) -> None:
    """A PDF with running text and no table."""
    story = [Paragraph(text, getSampleStyleSheet()["Normal"])]
    SimpleDocTemplate(str(path), pagesize=pagesize).build(story)
