"""The page and its Markdown twin: sections, escaping, notes."""

from must.report.html import Picture, Section, page_html, page_markdown
from must.report.tables import Cell, Table


def sections() -> list[Section]:
    first = Table("a", "First <table>", "caption a", [("Name", ""), ("Value", "%")],
                  [[Cell("x"), Cell("1.0")]])
    second = Table("b", "Second", "caption b", [("Name", "")], [[Cell("y & z")]])
    return [Section("Numbers", "numbers", "intro", tables=[first, second]),
            Section("Pictures", "pictures", pictures=[Picture("p.png", "A picture", "what it shows")],
                    notes=["something is missing"])]


def test_page_is_self_contained_and_escaped() -> None:
    page = page_html("MuST report", "run<1>", "lead", sections(), "footer")
    assert page.startswith("<!doctype html>") and '<meta charset="utf-8">' in page and "<style>" in page
    assert "<script" not in page and "http" not in page  # nothing fetched from anywhere
    assert "run&lt;1&gt;" in page and "First &lt;table&gt;" in page and "y &amp; z" in page
    assert '<a href="#numbers">Numbers</a>' in page and '<section id="pictures">' in page
    assert page.count("<h3>") == 2  # two tables in one section get their own headings
    assert '<img src="p.png" alt="A picture">' in page and "<li>something is missing</li>" in page


def test_markdown_twin() -> None:
    text = page_markdown("MuST report", "run", "lead", sections(), "footer")
    assert text.startswith("# MuST report: run")
    assert "### First <table>" in text and "| Name | Value (%) |" in text and "| --- | ---: |" in text
    assert "![A picture](p.png)" in text and "- something is missing" in text
