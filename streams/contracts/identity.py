"""What identifies one event of each subject: the contract producers and consumers share.

An event topic is delivered at least once, and producers re-send; a consumer must tell a
copy of an event it has stored (a no-op) from a new event (a new row). This says, per
subject, which fields decide that, and which unique key of which table enforces it. The
schema docs (schemas/avro/*/v*.avsc), the AsyncAPI document (``x-identity``, generated
from this) and ddl/README.md say the same; tests hold the key to the database's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    #: the fields whose values identify one event
    fields: tuple[str, ...]
    #: the table consumers store it in, and the unique key they ``ON CONFLICT`` on
    table: str
    key: tuple[str, ...]
    doc: str


IDENTITIES: dict[str, Identity] = {
    "product_scraped": Identity(
        fields=("asin", "scraped_at"),
        table="product_snapshots",
        key=("asin", "scraped_at"),
        doc=(
            "One event is one observation of one product page: (asin, scraped_at). A redelivery, or "
            "another event for the same observation, stores nothing (the first stored wins); a re-scrape "
            "has a later scraped_at and is a new snapshot. event_id is new for every scrape and never "
            "reused (lineage, stored in product_snapshots.event_id), but not what consumers deduplicate on."
        ),
    ),
    "alert_triggered": Identity(
        fields=("event_id",),
        table="alerts",
        # PostgreSQL wants the partition key in every unique key of a partitioned table;
        # triggered_at is fixed for a given event_id, so the key is event_id's
        key=("event_id", "triggered_at"),
        doc=(
            "One event is one alert: event_id, new for every alert raised and never reused. A redelivery "
            "stores nothing; the same rule firing again is a new alert with a new event_id. The alerts "
            "table keys on (event_id, triggered_at) because it is partitioned by triggered_at, so one "
            "event_id must never be sent with two triggered_at values."
        ),
    ),
}
