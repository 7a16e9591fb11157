"""``leadpulse run``'s process arguments: a mistake is one line and exit code 2."""

from __future__ import annotations

import pytest

from engine.cli import main


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--process-id", "1"], "--process-id 1 needs --addresses"),
        (["--addresses", "a:1,b:x"], "'b:x' is not host:port"),
        (["--addresses", "a:1;a:1"], "names one host:port twice"),
        (["--addresses", "a:1,b:2", "--process-id", "2"], "not an index of --addresses (0 to 1)"),
        (["--workers-per-process", "0"], "--workers must be 1 or more"),
    ],
)
def test_bad_process_arguments_are_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--redis-url", "redis://127.0.0.1:1/0", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
