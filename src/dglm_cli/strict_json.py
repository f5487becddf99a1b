"""Strict JSON out: never NaN or Infinity, which most JSON readers reject.

Records and configs are written from validated inputs, so a non-finite number there is a bug and
`dumps` raises; summaries of measurements (a perplexity over nothing, an AUC of one class) may hold
NaN legitimately and go through `finite` first, which writes them as null.
"""

import json
import math


def dumps(data, **kwargs) -> str:
    """json.dumps with allow_nan=False (and ensure_ascii=False unless given)."""
    kwargs.setdefault("ensure_ascii", False)
    return json.dumps(data, allow_nan=False, **kwargs)


def jsonl_line(data) -> str:
    """One JSONL line of a measurement record: `finite`, then `dumps`, then a newline."""
    return dumps(finite(data)) + "\n"


def finite(data):
    """A copy of a JSON-able structure with every NaN or infinite float replaced by None."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(value) for value in data]
    return data
