"""Markdown tables that read well in the Prefect UI: the helpers every report uses.

Reports are built from catalog records and summaries only, which never hold secrets.

Both front ends of Prefect 3.8's UI show them at about 1400 px: V1 never wraps a table cell
(white-space: nowrap) and shows about 830 px of a table before it scrolls; V2 (the default)
wraps cells at spaces inside a column of about 690 px and lets a wider table run under the
side panel. So the columns people read first (status, what, target, message) come first,
long cells are wrapped here into short lines joined by <br> (both render it), nothing long
sits in a column at the far right, and long errors go in a list under the table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

# Reading order of statuses: what needs a person first.
SEVERITY_ORDER = {"critical": 0, "warn": 1, "unknown": 2, "ok": 3}


# A table row holds about 96 characters of text at a 1400 px window in either UI (V1: ~830 px
# with wide cell padding, V2: ~690 px with narrow padding). Short columns are capped at these
# widths (longer text wraps); the message or detail column gets what is left, within limits.
ROW_CHARS = 96


STATUS_CHARS = 8  # "critical"
CHECK_WIDTH, TARGET_WIDTH, VALUE_WIDTH = 30, 20, 12


TEXT_WIDTH = (30, 60)  # the message or detail column, at least and at most


DRILL_CHECK_WIDTH = 36


# A word is a run of non-space characters; a `code span` counts as one word, spaces and all.
_WORD = re.compile(r"(?:`[^`\n]*`|[^\s`]|`)+")


_BREAK_AFTER = "/.,:;_-=&?"  # where a word too long for its line is cut


def wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` characters; a longer word is cut, after a separator where it
    can be, and starts on the line it follows."""
    lines: list[str] = []
    line = ""
    for word in _WORD.findall(text):
        while word:
            room = width - len(line) - (1 if line else 0)
            if len(word) <= room:
                line, word = (f"{line} {word}" if line else word), ""
            elif len(word) > width and "`" not in word and room >= 8:
                cut = max(word.rfind(c, room // 2, room) for c in _BREAK_AFTER) + 1 or room
                lines.append(f"{line} {word[:cut]}" if line else word[:cut])
                line, word = "", word[cut:]
            elif line:
                lines.append(line)
                line = ""
            else:  # a code span wider than the line stays whole
                line, word = word, ""
    if line or not lines:
        lines.append(line)
    return lines


def _escape(line: str) -> str:
    """Pipes end a cell and `<` starts an HTML tag the UIs would swallow: escape both (inside a
    code span only the pipe, as GFM tables want)."""
    parts = line.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code spans
        return line.replace("|", "\\|").replace("<", "&lt;")
    return "`".join(
        part.replace("|", "\\|") if index % 2 else part.replace("|", "\\|").replace("<", "&lt;")
        for index, part in enumerate(parts)
    )


def cell(value: Any, width: int | None = None) -> str:
    """One markdown table cell: whitespace collapsed, wrapped to `width` characters per line
    with <br> (None: one line), escaped."""
    text = " ".join(str(value).split())
    lines = wrap(text, width) if width else [text]
    return "<br>".join(_escape(line) for line in lines)


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], widths: Sequence[int | None] = ()
) -> str:
    """A markdown table; `widths[i]` wraps column i (see cell)."""
    sizes = list(widths) + [None] * (len(header) - len(widths))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(cell(v, w) for v, w in zip(row, sizes, strict=True)) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def bold(text: str) -> str:
    return f"**{text}**"


def text_width(*columns: tuple[Iterable[str], int]) -> int:
    """Characters per line left for the long-text column beside these (texts, cap) columns."""
    used = sum(min(cap, max((len(t) for t in texts), default=0)) for texts, cap in columns)
    low, high = TEXT_WIDTH
    return max(low, min(high, ROW_CHARS - used))
