"""The machine's limits met: a write with no room (a full disk, a quota, a file-size limit:
ulimit -f, FAT32's 4 GiB) and DuckDB's memory limit. The user's to change, not bugs: commands
and long-running loops say them in one line."""

from __future__ import annotations

import errno
import os
import re
import sys

NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""The errnos of a write with no room."""


def what_is_full(exc: BaseException | None) -> str | None:
    """What had no room, when ``exc`` says so (DuckDB names the file in its error's text
    only); None otherwise."""
    if isinstance(exc, OSError):
        if exc.errno is None and exc.__cause__ is not None:  # a wrapper: the lake's StoreError
            return str(exc) if what_is_full(exc.__cause__) else None
        if exc.errno not in NO_ROOM:
            return None
        return f"{exc.strerror} ({exc.filename})" if exc.filename else str(exc.strerror)
    duckdb = sys.modules.get("duckdb")  # not imported: not its error
    if duckdb is None or not isinstance(exc, duckdb.Error):
        return None
    reasons = "|".join(re.escape(os.strerror(code)) for code in sorted(NO_ROOM))
    written = re.search(rf'Could not write file "([^"]+)": ({reasons})', str(exc))
    return f"{written[2]} ({written[1]})" if written else None


def out_of_memory(exc: BaseException | None) -> str | None:
    """What to say when ``exc`` is DuckDB running out of the memory it may use; None
    otherwise."""
    duckdb = sys.modules.get("duckdb")
    if duckdb is None or not isinstance(exc, duckdb.OutOfMemoryException):
        return None
    return (
        f"{str(exc).splitlines()[0]}: DuckDB needs more than SYSMETRICS_DUCKDB_MEMORY_LIMIT "
        "allows, even spilling to disk; raise it"
    )
