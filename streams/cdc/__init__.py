"""CDC reader: PostgreSQL logical replication (pgoutput) -> Avro change events on Kafka.

Layers, from the wire inward:

* :mod:`.transport` - the only module that touches the replication socket (COPY BOTH
  through psycopg's ``pq`` layer);
* :mod:`.protocol` and :mod:`.pgoutput` - pure decoders: bytes in, typed messages out;
* :mod:`.values` and :mod:`.envelope` - tuple text -> Python values -> the fixed Avro
  envelope of ``schemas/avro/cdc_change``;
* :mod:`.positions` - which LSN may be confirmed to the slot (only what Kafka acknowledged);
* :mod:`.reader` - the loop that ties them together; :mod:`.slot` and :mod:`.snapshot`
  manage the publication, the slot and the initial snapshot.
"""
