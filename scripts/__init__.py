"""Harnesses and the bench: `python -m scripts.NAME` from the project root."""
