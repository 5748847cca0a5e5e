"""The torch training engine: driven by the TypeScript trainer as a child process (see engine/__main__.py)."""
