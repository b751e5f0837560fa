#!/usr/bin/env python3
"""Round trip through the Sluice schema registry with Confluent's own Python client.

Registers an Avro schema with confluent-kafka's SchemaRegistryClient, serializes a record with
AvroSerializer, produces it to a topic, consumes it back, deserializes it with AvroDeserializer
and checks it equals what was sent. Exits non-zero on any failure.

Environment:
  SLUICE_REGISTRY_URL  base URL of the registry, e.g. http://127.0.0.1:8081
  SLUICE_BOOTSTRAP     Kafka bootstrap servers, e.g. 127.0.0.1:9092
  SLUICE_TOPIC         topic to use (must exist; default "sluice-registry-python")

Needs: pip install "confluent-kafka[avro,schemaregistry]"
"""

import json
import os
import sys
import time
import uuid

try:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
except ImportError as error:
    print(f"confluent_kafka is not importable ({error}); "
          'install it with: pip install "confluent-kafka[avro,schemaregistry]"', file=sys.stderr)
    sys.exit(2)

SCHEMA = json.dumps({
    "type": "record",
    "name": "Payment",
    "namespace": "sluice.test",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "amount_minor", "type": "long"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
})

DEADLINE_S = 30


def main() -> int:
    url = os.environ["SLUICE_REGISTRY_URL"]
    bootstrap = os.environ["SLUICE_BOOTSTRAP"]
    topic = os.environ.get("SLUICE_TOPIC", "sluice-registry-python")
    subject = f"{topic}-value"

    registry = SchemaRegistryClient({"url": url})

    # Explicit registration, then the lookups a client does.
    schema_id = registry.register_schema(subject, Schema(SCHEMA, "AVRO"))
    assert schema_id > 0, schema_id
    assert registry.register_schema(subject, Schema(SCHEMA, "AVRO")) == schema_id, "re-registering changed the id"
    latest = registry.get_latest_version(subject)
    assert latest.schema_id == schema_id, (latest.schema_id, schema_id)
    assert latest.version == 1, latest.version
    fetched = registry.get_schema(schema_id)
    assert json.loads(fetched.schema_str) == json.loads(SCHEMA), fetched.schema_str
    assert subject in registry.get_subjects(), registry.get_subjects()

    serializer = AvroSerializer(registry, SCHEMA)
    deserializer = AvroDeserializer(registry)
    record = {"id": str(uuid.uuid4()), "amount_minor": 12345, "note": "from python"}
    context = SerializationContext(topic, MessageField.VALUE)
    payload = serializer(record, context)
    assert payload[0] == 0 and int.from_bytes(payload[1:5], "big") == schema_id, "wrong wire-format header"

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    errors = []
    producer.produce(topic, value=payload, key=record["id"].encode(),
                     on_delivery=lambda err, msg: err and errors.append(err))
    remaining = producer.flush(DEADLINE_S)
    assert remaining == 0 and not errors, f"produce failed: {errors}, {remaining} undelivered"

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"sluice-registry-python-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    consumer.assign([TopicPartition(topic, 0, 0)])
    deadline = time.monotonic() + DEADLINE_S
    received = None
    try:
        while received is None and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                raise RuntimeError(f"consume failed: {message.error()}")
            if message.key() == record["id"].encode():
                received = message.value()
    finally:
        consumer.close()
    assert received is not None, f"record not consumed from {topic} within {DEADLINE_S}s"

    decoded = deserializer(received, context)
    assert decoded == record, (decoded, record)
    print(f"ok: schema id {schema_id}, record {decoded}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as error:  # noqa: BLE001 - any failure is a failed check
        print(f"FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
