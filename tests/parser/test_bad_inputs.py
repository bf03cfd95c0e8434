"""Unknown and hostile inputs end in their typed error, quickly."""

import io
import os
import time

import pytest
from pypdf import PdfReader, PdfWriter
from reportlab.pdfgen import canvas

import schedule_pdfs
from schedgen.errors import (CorruptPDF, EncryptedPDF, NoTables, NotAPDF, ParseTimeout,
                             TooLarge, TooManyPages, UnknownScheduleType)
from schedgen.runner.parsing import Limits, parse_pdf

from schedule_pdfs import FIXTURES

REAL = FIXTURES / "up" / "UP_MOD_XLS.pdf"


def assert_fails(path, error, limits=None, within=10.0):
    started = time.monotonic()
    with pytest.raises(error) as info:
        parse_pdf(path, limits=limits)
    assert time.monotonic() - started < within
    assert info.value.code == error.code and info.value.message
    return info.value


def test_random_bytes(tmp_path):
    path = tmp_path / "random.pdf"
    path.write_bytes(os.urandom(64 * 1024))
    assert_fails(path, NotAPDF)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pdf"
    path.write_bytes(b"")
    assert_fails(path, NotAPDF)


def test_truncated_pdf(tmp_path):
    data = REAL.read_bytes()
    path = tmp_path / "truncated.pdf"
    path.write_bytes(data[: len(data) // 2])
    assert_fails(path, CorruptPDF)


def test_garbage_with_pdf_markers(tmp_path):
    path = tmp_path / "garbage.pdf"
    path.write_bytes(b"%PDF-1.7\n" + os.urandom(4096) + b"\n%%EOF\n")
    assert_fails(path, CorruptPDF)


def test_encrypted_pdf(tmp_path):
    writer = PdfWriter(clone_from=PdfReader(REAL))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-128")
    path = tmp_path / "encrypted.pdf"
    with path.open("wb") as fh:
        writer.write(fh)
    assert_fails(path, EncryptedPDF)


def test_too_many_pages_is_refused_before_parsing(tmp_path):
    path = tmp_path / "150.pdf"
    schedule_pdfs.lecture_pdf(path, pages=150, rows_per_page=1)
    error = assert_fails(path, TooManyPages, within=3.0)
    assert "150 pages" in error.message


def test_table_that_is_not_a_schedule(tmp_path):
    path = tmp_path / "inventory.pdf"
    schedule_pdfs.table_pdf(path, [["Item", "Qty", "Price"], ["Pen", "2", "R10"], ["Ink", "1", "R55"]])
    assert_fails(path, UnknownScheduleType)


def test_pdf_without_tables(tmp_path):
    path = tmp_path / "letter.pdf"
    schedule_pdfs.text_pdf(path, "Dear student, your timetable will follow. " * 20)
    assert_fails(path, NoTables)


def test_huge_single_page(tmp_path):
    path = tmp_path / "huge.pdf"
    pdf = canvas.Canvas(str(path), pagesize=(14400, 14400))  # the PDF maximum page size
    pdf.setFont("Helvetica", 4)
    line = "COS 214 L1 Monday 08:30 - 09:20 IT 4-4 " * 40
    for y in range(0, 14400, 5):
        pdf.drawString(10, y, line)
    pdf.save()
    error = assert_fails(path, TooLarge, within=5.0)
    assert "page 1 has" in error.message


def test_characters_per_page_are_bounded():
    error = assert_fails(REAL, TooLarge, limits=Limits(max_chars_per_page=500))
    assert "characters" in error.message


def test_parse_time_is_bounded(tmp_path):
    path = tmp_path / "long.pdf"
    schedule_pdfs.lecture_pdf(path, pages=40)  # about 0.5 s of parsing on an idle core
    error = assert_fails(path, ParseTimeout, limits=Limits(max_seconds=0.1), within=3.0)
    assert "longer than 0.1 s" in error.message
