"""The report page (``index.html``) and its Markdown twin (``report.md``).

Self-contained: inline CSS, no script, no web fonts; pictures are PNG files next to the page,
referenced by relative path, so the report directory can be copied or served anywhere.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from must.report.tables import Table, to_html, to_markdown

CSS = """
:root { color-scheme: light; --ink: #1d232b; --muted: #5d6670; --rule: #d9dee4; --band: #f4f6f8;
        --accent: #2557a7; --up: #1a7f37; --down: #b42318; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1140px; margin: 0 auto; padding: 28px 24px 48px; }
header { border-bottom: 2px solid var(--ink); margin-bottom: 8px; padding-bottom: 10px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h1 .run { color: var(--muted); font-weight: 400; }
h3 { font-size: 16px; margin: 20px 0 4px; }
h2 { font-size: 19px; margin: 34px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--rule); }
p.lead { color: var(--muted); margin: 4px 0 0; }
nav { margin-top: 8px; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 16px; display: inline-block; }
figure { margin: 10px 0 18px; }
figure.table { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 14px; }
th, td { padding: 6px 12px; border-bottom: 1px solid var(--rule); text-align: right;
         white-space: nowrap; }
thead th { background: var(--band); border-bottom: 2px solid var(--ink); vertical-align: bottom;
           text-align: center; }
thead th small { color: var(--muted); font-weight: 400; }
tbody th, td.name { text-align: left; }
tbody th { font-weight: 500; }
tbody tr:nth-child(even) { background: #fafbfc; }
td strong { font-weight: 700; }
.delta { font-size: 12px; color: var(--muted); }
.delta.up { color: var(--up); }
.delta.down { color: var(--down); }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 6px; max-width: 900px; }
img { max-width: 100%; height: auto; display: block; border: 1px solid var(--rule); }
.notes { background: #fff8e6; border: 1px solid #f0d48a; padding: 10px 16px 10px 32px;
         font-size: 14px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12.5px; }
"""


@dataclass
class Picture:
    path: str
    """Relative to the report directory."""
    title: str
    caption: str


@dataclass
class Section:
    title: str
    key: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    pictures: list[Picture] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Why something is missing from this section."""


def section_html(section: Section) -> str:
    parts = [f'<section id="{section.key}">', f"<h2>{html.escape(section.title)}</h2>"]
    if section.intro:
        parts.append(f"<p>{html.escape(section.intro)}</p>")
    for table in section.tables:
        if len(section.tables) > 1:
            parts.append(f"<h3>{html.escape(table.title)}</h3>")
        parts.append(to_html(table))
    for picture in section.pictures:
        parts.append(f'<figure class="picture"><img src="{html.escape(picture.path)}" '
                     f'alt="{html.escape(picture.title)}"><figcaption><b>{html.escape(picture.title)}.'
                     f"</b> {html.escape(picture.caption)}</figcaption></figure>")
    if section.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in section.notes)
                     + "</ul>")
    return "\n".join(parts + ["</section>"])


def page_html(title: str, run: str, lead: str, sections: list[Section], footer: str) -> str:
    nav = "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    body = "\n".join(section_html(section) for section in sections)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}: {html.escape(run)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header>
<h1>{html.escape(title)} <span class="run">· {html.escape(run)}</span></h1>
<p class="lead">{html.escape(lead)}</p>
<nav>{nav}</nav>
</header>
{body}
<footer>{html.escape(footer)}</footer>
</main>
</body>
</html>
"""


def page_markdown(title: str, run: str, lead: str, sections: list[Section], footer: str) -> str:
    lines = [f"# {title}: {run}", "", lead, ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.intro:
            lines += [section.intro, ""]
        for table in section.tables:
            lines.append(to_markdown(table, 3 if len(section.tables) > 1 else 0))
        for picture in section.pictures:
            lines += [f"![{picture.title}]({picture.path})", "", f"*{picture.title}.* {picture.caption}", ""]
        lines += [f"- {note}" for note in section.notes] + ([""] if section.notes else [])
    return "\n".join(lines + [f"_{footer}_", ""])

