"""Text for the terminal as it is: what the commands print can come from any sender."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.text import Text

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_CHARACTERS_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escaped(found: re.Match[str]) -> str:
    return found[0].encode("unicode_escape").decode()


def written_out(text: str, keep_lines: bool = False) -> str:
    """``text`` with its control characters written out (``\\x1b``), not sent to the terminal
    (an escape sequence in a hostname or a label); with ``keep_lines``, line breaks and tabs
    stay (a log record's own lines)."""
    pattern = _CONTROL_CHARACTERS_BUT_LINES if keep_lines else _CONTROL_CHARACTERS
    return pattern.sub(_escaped, text)


def as_is(text: str) -> Text:
    """``text`` for a rich console: markup in it not read (a ``[/x]`` raised, a ``[red]``
    coloured) and its control characters written out (:func:`written_out`)."""
    from rich.text import Text

    return Text(written_out(text))


def print_rows(rows: Sequence[dict[str, Any]]) -> None:
    """Query rows as a table or, when its columns cannot fit the terminal even with each word
    of them whole, one block per row with the column names down the left (psql's expanded
    display): squeezed, a table of 40 columns came out as empty columns without names."""
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    console = Console()
    names = list(rows[0]) if rows else ["(no rows)"]
    table = Table()
    for name in names:
        table.add_column(as_is(name))
    for row in rows:
        table.add_row(*(as_is("" if v is None else str(v)) for v in row.values()))
    needed = Measurement.get(console, console.options.update_width(1 << 20), table).minimum
    if needed <= console.width:
        console.print(table)
        return
    for number, row in enumerate(rows, 1):
        console.rule(f"row {number}", align="left")
        block = Table.grid(padding=(0, 2))
        block.add_column(style="bold", no_wrap=True)
        block.add_column(overflow="fold")
        for name, value in row.items():
            block.add_row(as_is(name), as_is("" if value is None else str(value)))
        console.print(block)
