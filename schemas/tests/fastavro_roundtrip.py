"""Cross-language check of Sluice's Avro codec with fastavro, an independent implementation.

usage: fastavro_roundtrip.py REGISTRY_URL IN.json OUT.json

IN.json lists records encoded by Sluice (Confluent framing: magic 0, 4-byte schema id, datum)
with the expected record as Sluice's JSON. For each, this script fetches the writer schema
from the registry by id, decodes the datum with fastavro and compares it with the expected
record; then it encodes the expected record with fastavro under the same id and writes the
payloads to OUT.json for Sluice to decode. Exits non-zero on the first mismatch.
"""

import datetime
import decimal
import io
import json
import struct
import sys
import urllib.request

import fastavro

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def fetch_schema(url, schema_id, cache={}):
    if schema_id not in cache:
        with urllib.request.urlopen(f"{url}/schemas/ids/{schema_id}") as response:
            text = json.load(response)["schema"]
        cache[schema_id] = json.loads(text)
    return cache[schema_id]


def index_names(schema, names, namespace=""):
    """Maps full names to named schemas so references can be followed."""
    if isinstance(schema, list):
        for branch in schema:
            index_names(branch, names, namespace)
    elif isinstance(schema, dict):
        kind = schema["type"]
        if kind in ("record", "enum", "fixed"):
            ns = schema.get("namespace", namespace)
            full = schema["name"] if "." in schema["name"] else f"{ns}.{schema['name']}"
            names[full] = schema
            for field in schema.get("fields", []):
                index_names(field["type"], names, ns)
        elif kind == "array":
            index_names(schema["items"], names, namespace)
        elif kind == "map":
            index_names(schema["values"], names, namespace)


def resolve(schema, names):
    if isinstance(schema, str) and schema in names:
        return names[schema]
    return schema


def full_name(schema):
    return schema["name"] if "." in schema["name"] else f"{schema['namespace']}.{schema['name']}"


def to_json(schema, value, names):
    """fastavro's decoded value -> Sluice's JSON form."""
    schema = resolve(schema, names)
    if isinstance(schema, list):
        if value is None:
            return None
        if isinstance(value, tuple):  # union of records, decoded with return_record_name
            name, inner = value
            branch = names[name]
            out = {"type": branch["name"]}
            out.update(to_json(branch, inner, names))
            return out
        non_null = [b for b in schema if b != "null"]
        return to_json(non_null[0], value, names)
    if isinstance(schema, dict):
        logical = schema.get("logicalType")
        if logical == "decimal":
            return str(value.quantize(decimal.Decimal(1).scaleb(-schema["scale"])))
        if logical == "date":
            return value.isoformat()
        if logical == "timestamp-millis":
            return (value - EPOCH) // datetime.timedelta(milliseconds=1)
        kind = schema["type"]
        if kind == "record":
            return {f["name"]: to_json(f["type"], value[f["name"]], names) for f in schema["fields"]}
        if kind == "array":
            return [to_json(schema["items"], v, names) for v in value]
        if kind == "enum":
            return value
        return to_json(kind, value, names)
    if schema == "bytes":
        return list(value)
    return value


def from_json(schema, value, names):
    """Sluice's JSON form -> a datum fastavro can write."""
    schema = resolve(schema, names)
    if isinstance(schema, list):
        if value is None:
            return None
        records = [resolve(b, names) for b in schema if b != "null"]
        if isinstance(value, dict) and "type" in value and all(isinstance(b, dict) and b.get("type") == "record" for b in records):
            branch = next(b for b in records if b["name"] == value["type"])
            fields = {k: v for k, v in value.items() if k != "type"}
            return (full_name(branch), from_json(branch, fields, names))
        return from_json(records[0], value, names)
    if isinstance(schema, dict):
        logical = schema.get("logicalType")
        if logical == "decimal":
            return decimal.Decimal(value)
        if logical == "date":
            return datetime.date.fromisoformat(value)
        if logical == "timestamp-millis":
            return EPOCH + datetime.timedelta(milliseconds=value)
        kind = schema["type"]
        if kind == "record":
            return {f["name"]: from_json(f["type"], value[f["name"]], names) for f in schema["fields"]}
        if kind == "array":
            return [from_json(schema["items"], v, names) for v in value]
        if kind == "enum":
            return value
        return from_json(kind, value, names)
    if schema == "bytes":
        return bytes(value)
    return value


def main():
    url, in_path, out_path = sys.argv[1:4]
    with open(in_path) as f:
        cases = json.load(f)
    payloads = []
    for case in cases:
        payload = bytes.fromhex(case["payload_hex"])
        magic, schema_id = struct.unpack(">bI", payload[:5])
        assert magic == 0, f"magic byte {magic}"
        schema_json = fetch_schema(url, schema_id)
        names = {}
        index_names(schema_json, names)
        parsed = fastavro.parse_schema(schema_json)
        decoded = fastavro.schemaless_reader(io.BytesIO(payload[5:]), parsed, None, return_record_name=True)
        got = to_json(schema_json, decoded, names)
        if got != case["expected"]:
            sys.exit(f"{case['schema_file']}: fastavro decoded\n  {got}\nexpected\n  {case['expected']}")
        out = io.BytesIO()
        out.write(struct.pack(">bI", 0, schema_id))
        fastavro.schemaless_writer(out, parsed, from_json(schema_json, case["expected"], names))
        payloads.append(out.getvalue().hex())
    with open(out_path, "w") as f:
        json.dump(payloads, f)
    print(f"fastavro: {len(cases)} records decoded and re-encoded")


if __name__ == "__main__":
    main()
