"""Command-line entry points (each also reachable as tools/NAME.py)."""
