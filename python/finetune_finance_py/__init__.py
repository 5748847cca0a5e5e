"""The Python side of finetune-finance: the field's own libraries, run as oracles for the TypeScript pipeline.

Each oracle script reads one JSON document on stdin and writes one JSON document on stdout, so a test file
runs one process for all of its cases (see test/support/python.ts in the repository).
"""

__all__ = ["jsonio"]
