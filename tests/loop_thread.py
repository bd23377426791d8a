"""A consumer loop run on a thread by a test, its error kept for the test to raise."""

from __future__ import annotations

import threading
from typing import Any


class LoopThread:
    """``loop.run()`` on a daemon thread; ``failure`` holds what it raised, if anything."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.failure: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as exc:  # surfaced by raise_failure
            self.failure.append(exc)

    def running(self) -> bool:
        return self.thread.is_alive() and not self.failure

    def stop(self, timeout: float = 60.0) -> None:
        self.loop.request_stop()
        self.thread.join(timeout)

    def raise_failure(self) -> None:
        if self.failure:
            raise self.failure[0]
