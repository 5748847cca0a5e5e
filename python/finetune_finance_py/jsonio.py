"""JSON over stdin/stdout for the oracle scripts: one request document in, one answer document out."""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Callable


def encode(value: Any) -> Any:
    """Floats that JSON cannot carry (nan, inf) become strings, so the TypeScript side sees them and fails loudly."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def run(handler: Callable[[Any], Any], stdin=None, stdout=None) -> None:
    """Reads the request, calls `handler`, writes its answer. Errors go to stderr with exit code 1."""
    source = stdin if stdin is not None else sys.stdin
    sink = stdout if stdout is not None else sys.stdout
    text = source.read()
    try:
        request = json.loads(text)
    except json.JSONDecodeError as error:
        sys.stderr.write(f"oracle: stdin is not JSON ({error})\n")
        raise SystemExit(1)
    answer = handler(request)
    # allow_nan=False: a non-finite number must have been turned into a string by encode()
    sink.write(json.dumps(encode(answer), ensure_ascii=False, allow_nan=False))
    sink.write("\n")
    sink.flush()
