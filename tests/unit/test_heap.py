"""The consumer's collector settings (streams/service/heap.py) take effect, and the consume
command applies them before its loop runs."""

from __future__ import annotations

import gc
import inspect

from insights.cli import consume_cmd
from streams.service import heap


def test_tuning_raises_the_thresholds_and_freezes_the_start_up_heap() -> None:
    before = gc.get_threshold()
    try:
        heap.tune_for_batches()
        assert gc.get_threshold() == heap.THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def test_the_consume_command_tunes_before_it_builds_the_loop() -> None:
    source = inspect.getsource(consume_cmd.consume)
    assert "tune_for_batches()" in source
    assert source.index("tune_for_batches()") < source.index("build_loop(")
