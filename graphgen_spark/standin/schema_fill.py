"""Generic JSON-Schema filler for ``response_format: json_schema`` requests.

Structured-output callers validate the reply against the schema they sent, so the
stand-in must produce schema-valid JSON for *any* schema a caller (typically a
pydantic ``model_json_schema()``) sends, without task-specific code. Strings are
drawn from the prompt's words so different prompts give different values.

Not supported (best effort, documented): ``pattern``, ``not``, ``if/then/else``,
``contains``, ``dependentSchemas``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .picker import Picker

#: Beyond this nesting depth only required properties / ``minItems`` items are
#: produced and nullable branches prefer null, so recursive schemas terminate.
MAX_DEPTH = 6
DEFAULT_ARRAY_ITEMS = 2

_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "duration": "P1D",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
}


def fill_schema(schema: Any, picker: Picker) -> Any:
    """Return a JSON value that validates against ``schema`` (a JSON-Schema dict)."""
    return _Filler(schema if isinstance(schema, dict) else {}, picker).fill(schema, "$", 0)


def _is_null_schema(schema: Any) -> bool:
    return isinstance(schema, dict) and (
        schema.get("type") == "null" or ("const" in schema and schema["const"] is None)
    )


class _Filler:
    def __init__(self, root: dict[str, Any], picker: Picker) -> None:
        self.root = root
        self.picker = picker

    # -- structure ---------------------------------------------------------------------------

    def resolve(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#"):
            raise ValueError(f"only local $ref is supported, got {ref!r}")
        node: Any = self.root
        for part in ref[1:].lstrip("/").split("/") if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node if isinstance(node, dict) else {}

    def fill(self, schema: Any, path: str, depth: int) -> Any:
        if not isinstance(schema, dict):  # `true` / `{}`: anything goes
            return self.string({}, path)
        if "$ref" in schema:
            target = self.resolve(schema["$ref"])
            extra = {k: v for k, v in schema.items() if k not in ("$ref", "$defs", "definitions")}
            return self.fill({**target, **extra} if extra else target, path, depth + 1)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            values = [v for v in schema["enum"] if v is not None] or list(schema["enum"])
            return values[self.picker.int(path + "@enum") % len(values)] if values else None
        if "allOf" in schema:
            return self.fill(self.merge_all_of(schema), path, depth)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                branches = schema[key]
                non_null = [b for b in branches if not _is_null_schema(b)]
                if not non_null or (depth >= MAX_DEPTH and len(non_null) < len(branches)):
                    return None
                return self.fill(non_null[0], path, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((t for t in kind if t != "null"), "null")
        if kind is None:
            if "properties" in schema or "additionalProperties" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            else:
                kind = "string"
        if kind == "object":
            return self.object(schema, path, depth)
        if kind == "array":
            return self.array(schema, path, depth)
        if kind == "integer":
            return self.integer(schema, path)
        if kind == "number":
            return self.number(schema, path)
        if kind == "boolean":
            return self.picker.int(path) % 2 == 0
        if kind == "null":
            return None
        return self.string(schema, path)

    def merge_all_of(self, schema: dict[str, Any]) -> dict[str, Any]:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for sub in schema["allOf"]:
            if isinstance(sub, dict) and "$ref" in sub:
                sub = self.resolve(sub["$ref"])
            if not isinstance(sub, dict):
                continue
            for key, value in sub.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
                else:
                    merged.setdefault(key, value)
        return merged

    def object(self, schema: dict[str, Any], path: str, depth: int) -> dict[str, Any]:
        props: dict[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        out: dict[str, Any] = {}
        for name, sub in props.items():
            if depth >= MAX_DEPTH and name not in required:
                continue
            out[name] = self.fill(sub, f"{path}.{name}", depth + 1)
        additional = schema.get("additionalProperties", True)
        if additional is False:
            return out
        # Free-form maps (e.g. dict[str, int]) get one entry so they are not trivially empty.
        wanted = max(int(schema.get("minProperties", 0)), 0 if props else 1)
        value_schema = additional if isinstance(additional, dict) else {"type": "string"}
        i = 0
        while len(out) < wanted:
            key = self.picker.word(f"{path}{{key{i}}}")
            if key in out:
                key = f"{key}_{i}"
            out[key] = self.fill(value_schema, f"{path}.{key}", depth + 1)
            i += 1
        return out

    def array(self, schema: dict[str, Any], path: str, depth: int) -> list[Any]:
        lo = int(schema.get("minItems", 0))
        hi = schema.get("maxItems")
        out: list[Any] = []
        prefix = schema.get("prefixItems") or []
        for i, sub in enumerate(prefix):
            out.append(self.fill(sub, f"{path}[{i}]", depth + 1))
        items = schema.get("items", {} if not prefix else False)
        if items is False:
            return out
        count = lo if depth >= MAX_DEPTH else max(DEFAULT_ARRAY_ITEMS, lo)
        if hi is not None:
            count = min(count, int(hi))
        unique = bool(schema.get("uniqueItems"))
        seen = {json.dumps(v, sort_keys=True) for v in out} if unique else set()
        attempt = len(out)
        while len(out) < count and attempt < count * 8 + 8:
            value = self.fill(items, f"{path}[{attempt}]", depth + 1)
            attempt += 1
            if unique:
                key = json.dumps(value, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
            out.append(value)
        return out

    # -- scalars -----------------------------------------------------------------------------

    def string(self, schema: dict[str, Any], path: str) -> str:
        fmt = schema.get("format")
        if fmt in _FORMATS:
            return _FORMATS[fmt]
        word = self.picker.word(path)
        if fmt == "email":
            return f"{word.lower()}@example.com"
        if fmt in ("uri", "url", "iri"):
            return f"https://example.com/{word}"
        if fmt == "uuid":
            h = f"{self.picker.int(path):016x}{self.picker.int(path + '@uuid'):016x}"
            return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"
        text = self.picker.phrase(path, 1 + self.picker.int(path + "@len") % 3)
        min_len = int(schema.get("minLength", 0))
        i = 0
        while len(text) < min_len:
            text += " " + self.picker.word(f"{path}@pad{i}")
            i += 1
        if "maxLength" in schema:
            text = text[: int(schema["maxLength"])].rstrip() or text[: int(schema["maxLength"])]
        return text

    def integer(self, schema: dict[str, Any], path: str) -> int:
        lo: float | None = schema.get("minimum")
        hi: float | None = schema.get("maximum")
        if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
            lo = (
                max(lo, math.floor(schema["exclusiveMinimum"]) + 1)
                if lo is not None
                else math.floor(schema["exclusiveMinimum"]) + 1
            )
        if "exclusiveMaximum" in schema and not isinstance(schema["exclusiveMaximum"], bool):
            hi = (
                min(hi, math.ceil(schema["exclusiveMaximum"]) - 1)
                if hi is not None
                else math.ceil(schema["exclusiveMaximum"]) - 1
            )
        low = math.ceil(lo) if lo is not None else (math.floor(hi) - 100 if hi is not None else 0)
        high = math.floor(hi) if hi is not None else low + 100
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            first, last = math.ceil(low / step), math.floor(high / step)
            if last >= first:
                return (first + self.picker.int(path) % (last - first + 1)) * step
        if high < low:
            return low
        return low + self.picker.int(path) % (high - low + 1)

    def number(self, schema: dict[str, Any], path: str) -> float:
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        hi = schema.get("maximum", schema.get("exclusiveMaximum"))
        if isinstance(lo, bool):
            lo = None
        if isinstance(hi, bool):
            hi = None
        if lo is None and hi is None:
            lo, hi = 0.0, 1.0
        elif lo is None:
            lo = hi - 1.0
        elif hi is None:
            hi = lo + 1.0
        if hi <= lo:
            return float(lo)
        # Stay strictly inside so exclusive bounds hold too.
        value = lo + (hi - lo) * (0.05 + 0.9 * self.picker.unit(path))
        rounded = round(value, 4)
        return rounded if lo < rounded < hi else value
