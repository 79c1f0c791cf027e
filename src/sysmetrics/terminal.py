"""Text for the terminal as it is: what the commands print can come from any sender."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.text import Text

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def as_is(text: str) -> Text:
    """``text`` for a rich console: markup in it not read (a ``[/x]`` raised, a ``[red]``
    coloured) and its control characters written out (``\\x1b``), not sent to the terminal
    (an escape sequence in a hostname, a field name, a log line)."""
    from rich.text import Text

    return Text(_CONTROL_CHARACTERS.sub(lambda c: c[0].encode("unicode_escape").decode(), text))
