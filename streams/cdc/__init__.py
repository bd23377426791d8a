"""CDC reader: PostgreSQL logical replication (pgoutput) -> Avro change events on Kafka.

A change travels from the frame to Kafka through four files, read in this order:

1. :mod:`.transport` - the wire: the replication socket (COPY BOTH), the framing of
   XLogData frames, keepalives and status updates, and :class:`~.transport.AckTracker`,
   which decides the position confirmed to the slot (only what Kafka acknowledged);
2. :mod:`.pgoutput` - the decoder: one pgoutput message, bytes in, typed message out;
3. :mod:`.envelope` - the envelope rules (which events a change becomes, its key), their
   reference implementation and the fast path that writes the same bytes, and the
   framing of :mod:`streams.serde`;
4. :mod:`.reader` - the loop: read, decode, write, produce, settle acknowledgements,
   confirm.

Helpers they lean on: :mod:`.values` (one column: text -> Python value, envelope value,
envelope bytes), :mod:`.avro` (the Avro primitives, one copy), :mod:`.codegen` (the
per-relation writers of the fast path, generated as readable source), :mod:`.slot`
(publication, slot, heartbeats, status), :mod:`.snapshot` (the initial snapshot),
:mod:`.metrics`, :mod:`.errors`, :mod:`.lsn`.

``INSIGHTS_CDC_FORMAT=typed`` (per-table Avro schemas instead of the generic envelope) adds
three: :mod:`.typed` (catalog description -> Avro schema, tuple text -> Avro values; pure),
:mod:`.typed_schemas` (the versions, in ``cdc_schemas`` or a registry; compatibility;
the consumer's decoder) and :mod:`.typed_events` (what the reader and snapshots call).
"""
