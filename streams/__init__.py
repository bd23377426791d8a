"""Kafka plumbing: topics, Avro serde, producer, consumer loop, CDC reader, replay."""
