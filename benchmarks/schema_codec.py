"""Decode + validate speed of schema-v1 events: msgspec (chosen) vs pydantic v2 vs plain json.

Baseline in the same run: stdlib ``json.loads`` without validation. Prints events/s and the
ratio of each to the baseline. The lake writer decodes every event it writes.

    .venv/bin/python benchmarks/schema_codec.py
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import msgspec.inspect as mi
from pydantic import BaseModel, ConfigDict, Field, create_model

from sysmetrics.lake import lines
from sysmetrics.schema import (
    MetricsEvent,
    decode,
    decode_keeping_unknown,
    encode,
    encode_keeping_unknown,
    encode_time,
)
from sysmetrics.stream.simulator import generate

N = 50_000


def pydantic_mirror(t: mi.Type, cache: dict[str, type[BaseModel]]) -> Any:
    """The same event as pydantic v2 models (constraints included), built from the msgspec one."""
    if isinstance(t, mi.Metadata):
        return pydantic_mirror(t.type, cache)
    if isinstance(t, mi.UnionType):
        return (
            pydantic_mirror(next(x for x in t.types if not isinstance(x, mi.NoneType)), cache)
            | None
        )
    if isinstance(t, mi.ListType):
        return list[pydantic_mirror(t.item_type, cache)]  # type: ignore[misc]
    if isinstance(t, mi.StructType):
        name = t.cls.__name__
        if name not in cache:
            fields: dict[str, Any] = {}
            for f in t.fields:
                kind = pydantic_mirror(f.type, cache)
                meta = f.type.type if isinstance(f.type, mi.Metadata) else None
                constraints = {}
                if isinstance(meta, mi.FloatType | mi.IntType):
                    constraints = {
                        k: getattr(meta, k) for k in ("ge", "le") if getattr(meta, k) is not None
                    }
                default = (
                    ... if f.required else (f.default if f.default is not mi.NODEFAULT else None)
                )
                fields[f.name] = (kind, Field(default, **constraints))
            cache[name] = create_model(name, __config__=ConfigDict(extra="forbid"), **fields)
        return cache[name]
    return {
        mi.IntType: int,
        mi.FloatType: float,
        mi.StrType: str,
        mi.BoolType: bool,
        mi.DateTimeType: datetime,
        mi.LiteralType: int,
    }[type(t)]


def rate(fn: Any, payloads: list[bytes]) -> float:
    fn(payloads[0])
    start = time.perf_counter()
    for p in payloads:
        fn(p)
    return len(payloads) / (time.perf_counter() - start)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    start = datetime(2026, 11, 27, tzinfo=UTC)
    payloads = [encode(e) for _, e in generate(N // 60 + 1, start, 600, 10, 3)][:N]
    model = pydantic_mirror(mi.type_info(MetricsEvent), {})
    msgspec_struct_only = msgspec.json.Decoder(MetricsEvent)
    # The same events as a newer collector (one more minor version) would send them.
    newer = [p[:-1] + b',"power":{"package_watts":31.5}}' for p in payloads]
    results = {
        "json.loads (no validation, baseline)": rate(json.loads, payloads),
        "msgspec decode + validate (sysmetrics.schema.decode)": rate(decode, payloads),
        "msgspec typed decoder alone": rate(msgspec_struct_only.decode, payloads),
        "pydantic v2 model_validate_json": rate(model.model_validate_json, payloads),
        "msgspec decode + re-encode (the lake writer's Python path)": rate(
            lambda p: encode(decode(p)), payloads
        ),
        "newer minor version: decode + keep unknown fields + re-encode": rate(
            lambda p: encode_keeping_unknown(*decode_keeping_unknown(p)), newer
        ),
    }
    if lines.fast_path_available():  # native/ built: the lake writer's fast path
        received = datetime.now(UTC)
        stamp = encode_time(received)
        results["compiled validator alone (native/ EventValidator)"] = rate(
            lines.vouched_time, payloads
        )
        results["the lake writer's line: validator + stamp (lines.lake_line)"] = rate(
            lambda p: lines.lake_line(p, received, stamp), payloads
        )
    else:
        print("native/ is not built (make install-dev needs cargo): no compiled validator lines")
    base = results["json.loads (no validation, baseline)"]
    size = sum(map(len, payloads)) / len(payloads)
    print(f"schema-v1 codec, {N:,} events of {size:.0f} bytes avg, {os.cpu_count()} cores")
    for name, value in results.items():
        print(f"  {name:<55} {value:>12,.0f} events/s   {value / base:5.2f}x json.loads")


if __name__ == "__main__":
    main()
