"""Benchmark: process CPU per decoded event, cavro vs fastavro, on the same bytes.

    PYTHONPATH=. .venv/bin/python bench/decode_cost.py [--events 3000] [--rounds 7]

For each subject and each writer version: ``--events`` generated events
(insights.generate), serialized once; then interleaved rounds of the project's
deserializer with cavro (streams/serde/native.py) and with fastavro only
(``native=False``), timed with ``time.process_time`` (CPU, not wall: the machine is
shared). Prints the median per event, the spread and the speed-up, and checks that both
return the same records (by repr). No services needed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime, timedelta

from core.paths import SCHEMAS_DIR
from core.settings import load_settings
from insights.generate import Market, scrape_record
from insights.generate.alerts import alert_feed, alert_rules
from insights.generate.encode import alert_record
from streams.serde import RecordContext
from streams.serde.codec import AvroDeserializer, SingleObjectSerializer
from streams.serde.store import load_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    load_settings(schema_registry_url=None)  # the entry point loads settings (none needed below)
    store = load_store(SCHEMAS_DIR)
    ctx = RecordContext("bench", 0, 0)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    scrapes = [scrape_record(s) for s in Market(500, start, seed=1, span=timedelta(days=29), events=args.events).scrapes(args.events)]
    alerts = [alert_record(a) for a in alert_feed(Market(200, start, seed=2, span=timedelta(days=29), events=args.events * 4),
                                                  alert_rules(8), args.events)]
    print(f"load average at start: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for subject, records in (("product_scraped", scrapes), ("alert_triggered", alerts)):
        native, plain = AvroDeserializer(store, subject), AvroDeserializer(store, subject, native=False)
        for version in store.subject(subject).versions:
            write = SingleObjectSerializer(version)
            data = [write(r, ctx) for r in records]
            assert all(repr(native(d, ctx)) == repr(plain(d, ctx)) for d in data), "records differ"
            times: dict[str, list[float]] = {"cavro": [], "fastavro": []}
            for r in range(args.rounds):
                order = (("cavro", native), ("fastavro", plain)) if r % 2 else (("fastavro", plain), ("cavro", native))
                for name, decode in order:
                    t = time.process_time()
                    for d in data:
                        decode(d, ctx)
                    times[name].append((time.process_time() - t) / len(data) * 1e6)
            c, f = statistics.median(times["cavro"]), statistics.median(times["fastavro"])
            print(f"{version.label}: {len(data)} events of {sum(map(len, data)) / len(data):.0f} B; "
                  f"fastavro {f:.1f} us ({min(times['fastavro']):.1f}-{max(times['fastavro']):.1f}), "
                  f"cavro {c:.1f} us ({min(times['cavro']):.1f}-{max(times['cavro']):.1f}): {f / c:.2f}x")
    print(f"load average at end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
