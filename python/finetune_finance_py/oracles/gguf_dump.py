"""gguf-py (llama.cpp's own GGUF package) as the oracle for the GGUF files the TypeScript side writes.

Request: {"files": ["a.gguf", ...]}
Answer: {"version": ..., "files": [{"path", "ggufVersion", "alignment", "metadata": [...], "tensors": [...]}]}

For every metadata entry: its key, the value types gguf-py read (["UINT32"] or ["ARRAY", "STRING"]), the value
(64-bit integers as decimal strings, arrays in full) and `canonical`: the type llama.cpp's own writer
(gguf.GGUFWriter's typed add_* method for that key) gives the key, or null when GGUFWriter has no method for it.
For every tensor: name, ggml type, ggml dims (innermost first), byte count, the offset in the data section and
the sha256 of its bytes as gguf-py reads them.
"""

from __future__ import annotations

import hashlib
import inspect
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter

from finetune_finance_py import jsonio

# GGUFWriter's untyped entry points: the type comes from the caller, so they say nothing about a key
GENERIC = {
    "add_key_value", "add_array", "add_string", "add_bool", "add_uint8", "add_int8", "add_uint16", "add_int16",
    "add_uint32", "add_int32", "add_float32", "add_uint64", "add_int64", "add_float64", "add_tensor",
    "add_tensor_info", "add_shard_kv_data", "add_custom_alignment",
}
SAMPLES: list[Any] = [1, 1.0, "x", True, ["x"], [1], [1.0]]
# keys llama.cpp's convert_lora_to_gguf.py writes with the untyped add_* calls (no typed method exists)
ADAPTER_KEYS = {"adapter.type": "STRING", "adapter.lora.alpha": "FLOAT32"}


def canonical_table(arch: str) -> dict[str, tuple[str, str | None]]:
    """key -> (type, element type) that GGUFWriter's typed methods write, found by calling each one once."""
    table: dict[str, tuple[str, str | None]] = {}
    for name, method in inspect.getmembers(GGUFWriter, inspect.isfunction):
        if not name.startswith("add_") or name in GENERIC:
            continue
        params = [p for p in inspect.signature(method).parameters.values()][1:]
        required = [p for p in params if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
        if len(required) != 1:
            continue
        for sample in SAMPLES:
            writer = GGUFWriter(path=None, arch=arch)
            before = set(writer.kv_data[0])
            try:
                method(writer, sample)
            except Exception:
                continue
            for key in set(writer.kv_data[0]) - before:
                value = writer.kv_data[0][key]
                sub = value.sub_type.name if value.sub_type is not None else None
                table.setdefault(key, (value.type.name, sub))
            break
    # the constructor writes the architecture (add_architecture) before any method runs
    table["general.architecture"] = ("STRING", None)
    for key, type_name in ADAPTER_KEYS.items():
        table.setdefault(key, (type_name, None))
    return table


def field_value(field: Any) -> Any:
    types = field.types
    if types[0] == GGUFValueType.ARRAY:
        item = types[1] if len(types) > 1 else None
        values = [field.parts[i] for i in field.data]
        if item == GGUFValueType.STRING:
            return [bytes(v).decode("utf-8") for v in values]
        return [scalar(v[0], item) for v in values]
    if types[0] == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    return scalar(field.parts[field.data[0]][0], types[0])


def scalar(value: Any, kind: GGUFValueType | None) -> Any:
    if kind in (GGUFValueType.UINT64, GGUFValueType.INT64):
        return str(int(value))
    if kind == GGUFValueType.BOOL:
        return bool(value)
    if kind in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        return float(value)
    return int(value)


def dump(path: str) -> dict[str, Any]:
    reader = GGUFReader(path)
    arch_field = reader.fields.get("general.architecture")
    arch = field_value(arch_field) if arch_field is not None else "llama"
    table = canonical_table(arch)
    entries = []
    version = None
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            if key == "GGUF.version":
                version = int(field.parts[field.data[0]][0])
            continue
        value = field_value(field)
        canonical = table.get(key)
        canonical_types = None
        if canonical is not None:
            kind, sub = canonical
            if kind == "ARRAY" and sub is None and isinstance(value, list) and len(value) > 0:
                # GGUFWriter infers an array's element type from its first Python value when it packs
                sub = GGUFValueType.get_type(value[0]).name
            canonical_types = [kind] if kind != "ARRAY" else [kind, sub]
        entries.append({
            "key": key,
            "types": [t.name for t in field.types],
            "value": value,
            "canonical": canonical_types,
        })
    tensors = []
    for tensor in reader.tensors:
        raw = np.ascontiguousarray(tensor.data).tobytes()
        tensors.append({
            "name": tensor.name,
            "type": tensor.tensor_type.name,
            "typeId": int(tensor.tensor_type),
            "dims": [int(d) for d in tensor.shape],
            "nBytes": int(tensor.n_bytes),
            "offset": int(tensor.data_offset) - int(reader.data_offset),
            "sha256": hashlib.sha256(raw).hexdigest(),
        })
    return {
        "path": path,
        "ggufVersion": version,
        "alignment": int(reader.alignment),
        "metadata": entries,
        "tensors": tensors,
    }


def handle(request: dict[str, Any]) -> dict[str, Any]:
    return {"version": importlib_metadata.version("gguf"), "files": [dump(p) for p in request["files"]]}


if __name__ == "__main__":
    jsonio.run(handle)
