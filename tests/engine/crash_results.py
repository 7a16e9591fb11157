"""What every dataflow crash test asserts of ``benchmarks.fault_crash.crash_dataflow``'s
result: the killed-and-restarted run ended exactly where the uninterrupted one did."""

from __future__ import annotations

from typing import Any


def assert_same_as_uninterrupted(result: dict[str, Any], kills: int) -> None:
    assert result["kills"] == kills
    assert result["alerts_reference"] > 0 and result["labels_reference"] > 0
    assert result["labels_learned"] == [result["labels_reference"]] * 2
    assert (result["alerts_lost"], result["alerts_extra"]) == (0, 0)
    assert (result["alerts_duplicated"], result["alerts_changed"]) == (0, 0)
    assert result["keys_differing"] == 0, result["differing_examples"]
    assert result["identical"]
