"""Numbers on the command line that no setting validates are refused before anything starts,
with the range in the message (``simulate --hosts -1`` was a traceback, ``--hosts 0`` wrote
nothing and exited 0)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sysmetrics.cli import cli


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["simulate", "--hosts", "-1"], "'--hosts': -1 is not in the range x>=1"),
        (["simulate", "--hosts", "0", "--output", "-"], "'--hosts': 0 is not in the range x>=1"),
        (["simulate", "--speedup", "-1"], "'--speedup': -1.0 is not in the range x>=0"),
        (["consume", "--idle-exit", "0"], "'--idle-exit': 0.0 is not in the range x>0"),
        (["collect", "--count", "0"], "'--count': 0 is not in the range x>=1"),
        (["up", "--for", "-1"], "'--for': -1.0 is not in the range x>0"),
        (["up", "--simulate", "-2"], "'--simulate': -2 is not in the range x>=0"),
        (["up", "--history", "-1"], "'--history': -1 is not in the range x>=0"),
        (["batch", "run", "--hour", "2026-11-27T14", "--wait", "-3"], "'--wait': -3.0 is not"),
        (["broker", "start", "--timeout", "-1"], "'--timeout': -1.0 is not in the range x>=0"),
    ],
)
def test_a_number_out_of_its_range_is_refused_with_the_range(args: list[str], shown: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and shown in result.output, result.output
