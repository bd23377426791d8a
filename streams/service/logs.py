"""Structured logs for every long-running process: one line per event, JSON on request.

Fields given with ``extra={...}`` (topic, partition, offsets, counts, port) become JSON
keys, so a log pipeline filters on them without parsing prose.

With ``as_json`` the promise is that *every* line the process writes to stderr is one
JSON object, not only the lines our own code logs. The other writers are routed here:

* librdkafka: the client profiles (``streams.kafka.clients``) hand it a Python
  logger, so its ``%3|…|FAIL|…`` lines arrive as log records. With the broker away it
  repeats the same line about a hundred times a second (every client, every reconnect);
  :class:`_Repeats` lets one of each through per minute, saying how many it held back.
  The outage itself is logged once by the health (``streams.service.health``);
* Python warnings (``logging.captureWarnings``);
* an exception nobody caught, in the main thread or any other (``sys.excepthook``,
  ``threading.excepthook``): a traceback as raw text would break a line-per-object parser;
* a record that cannot be formatted: logging's own ``--- Logging error ---`` report is
  raw text too, so :class:`_Handler` replaces it with a JSON line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from datetime import UTC, datetime
from types import TracebackType

_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime", "taskName"}
_log = logging.getLogger("insights.service")


def extra_fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a %-format that does not match its args: keep what we have
        return f"{record.msg!s} {record.args!r}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped by JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _message(record),
        }
        for key, value in extra_fields(record).items():
            doc.setdefault(key, value)  # an extra named like a base key must not hide it
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        # default=str: SecretStr prints as '**********', datetimes and paths as text
        return json.dumps(doc, default=str)


class KeyValueFormatter(logging.Formatter):
    """Human-readable, but the structured fields are still there as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in extra_fields(record).items())
        return f"{base} {fields}" if fields else base


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr, and a failure to emit one record reported as a line of the same format."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's naming
        if not logging.raiseExceptions:
            return
        try:
            failed = logging.LogRecord(
                "insights.service.logs", logging.ERROR, __file__, 0,
                "a log record could not be written: %s", (_message(record),), sys.exc_info(),
            )
            self.stream.write(self.format(failed) + self.terminator)
            self.flush()
        except Exception:  # the stream itself is gone: nothing left to tell
            pass


def _is_ours(handler: logging.Handler) -> bool:
    return isinstance(handler, _Handler)


def json_logging_active() -> bool:
    """True once :func:`configure_logging` switched this process to JSON lines.

    The CLI asks before printing its one-line error: in JSON mode it logs it instead.
    """
    return any(_is_ours(h) and isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    _log.critical("uncaught exception", exc_info=(kind, exc, tb))


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    if args.exc_value is None:
        _log.critical("uncaught exception in thread %s: %s", name, args.exc_type.__name__, extra={"thread_name": name})
        return
    _log.critical(
        "uncaught exception in thread %s", name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback), extra={"thread_name": name},
    )


class _Repeats(logging.Filter):
    """At most one line per ``window`` seconds for each distinct text (numbers ignored)."""

    _NUMBERS = re.compile(r"\d+")

    def __init__(self, window: float = 60.0) -> None:
        super().__init__()
        self.window = window
        self._seen: dict[str, tuple[float, int]] = {}  # text -> (last let through, held back since)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        text = self._NUMBERS.sub("#", str(record.msg))
        now = time.monotonic()
        with self._lock:
            last, held = self._seen.get(text, (now - self.window, 0))
            if now - last < self.window:
                self._seen[text] = (last, held + 1)
                return False
            if len(self._seen) > 1000:  # texts with ever-new words: forget the oldest half
                for key in sorted(self._seen, key=lambda k: self._seen[k][0])[:500]:
                    del self._seen[key]
            self._seen[text] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} identical line(s) held back in the last {self.window:.0f}s)"
        return True


_REPEATS = _Repeats()


class _Fields(logging.Filter):
    """Fields every record of the process carries (``service``), unless the record sets them."""

    def __init__(self, fields: dict[str, object]) -> None:
        super().__init__()
        self.fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.fields.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def configure_logging(level: str = "INFO", as_json: bool = False, fields: dict[str, object] | None = None) -> None:
    """The process's logging: one handler on stderr, JSON or key=value lines.

    Called once at the entry point of a long-running command (the service runner does).
    ``fields`` are added to every JSON record (the service's name, so that one log
    pipeline can tell the processes of a host apart; a person at a terminal knows).
    """
    handler = _Handler(sys.stderr)
    if fields and as_json:
        handler.addFilter(_Fields(dict(fields)))
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    librdkafka = logging.getLogger("librdkafka")  # streams.kafka.clients.LIBRDKAFKA_LOGGER
    if _REPEATS not in librdkafka.filters:
        librdkafka.addFilter(_REPEATS)
    logging.captureWarnings(True)
    if as_json:
        sys.excepthook = _excepthook
        threading.excepthook = _thread_excepthook
    else:
        sys.excepthook = sys.__excepthook__
        threading.excepthook = threading.__excepthook__

