"""Reading the lake writers' completeness watermarks, without the writer (and its Kafka
client): the batch side imports this, never ``lake.writer``."""

from __future__ import annotations

import json
from typing import Any

from sysmetrics.lake import layout
from sysmetrics.lake.store import LakeStore


def read_watermarks(store: LakeStore, topic: str) -> list[dict[str, Any]]:
    """Every partition's published watermark (the hourly job waits on their minimum)."""
    marks = []
    for name in store.list_dir(layout.watermark_dir(topic)):
        data = store.get(f"{layout.watermark_dir(topic)}/{name}")
        if data:
            marks.append(json.loads(data))
    return marks
