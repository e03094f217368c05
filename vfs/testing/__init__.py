"""Test helpers that other projects' tests (and ours) can import: a real S3 server."""
