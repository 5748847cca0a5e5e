"""The engine's side of the pipe: one JSON object per stdout line, each with an `event` field (rank 0 writes them;
the first process of every other node writes how the run ended).

Anything else a library prints to stdout is not JSON with an `event` and the TypeScript side logs it.
"""
import json
import sys

_out = sys.stdout
_enabled = True
_node_leader = True
# every node's driver needs to know how the run ended (the other ranks' events are rank 0's to tell)
_endings = {"done", "stopped", "interrupted", "error"}


def configure(enabled: bool, node_leader: bool) -> None:
    global _enabled, _node_leader
    _enabled = enabled
    _node_leader = node_leader


def emit(event: str, **fields) -> None:
    if not (_enabled or (_node_leader and event in _endings)):
        return
    _out.write(json.dumps({"event": event, **fields}, allow_nan=False) + "\n")
    _out.flush()


def read_reply():
    """The driver's answer to a `generations` event ({"rougeL": x}); None when no driver listens."""
    line = sys.stdin.readline()
    if line == "":
        return None
    try:
        return json.loads(line)
    except ValueError:
        return None


class EngineError(Exception):
    """A failure the user should see as one clear line; `kind` is what the TypeScript side maps to a typed error."""

    exit_codes = {"bad_job": 2, "bad_base_model": 3, "no_cuda": 4, "qlora_needs_cuda": 4, "missing_package": 4, "oom": 5}

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def exit_code(self) -> int:
        return self.exit_codes.get(self.kind, 1)
