"""Stores, commands and the mount's core in process, on the local backend and on S3
(the session's SeaweedFS server, marker `s3`); nothing is mounted."""
