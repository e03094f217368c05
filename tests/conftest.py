"""Shared fixtures: one SeaweedFS server per session, fresh stores on both backends,
and a guard that fails any test which logs an unexpected ERROR through `vfs`."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfs.backends import Backend
from vfs.backends.local import LocalBackend
from vfs.backends.s3 import S3Backend
from vfs.config import CEILING_ENV
from vfs.testing.seaweed import SeaweedServer

BACKENDS = ["local", pytest.param("s3", marks=pytest.mark.s3)]

# Ambient AWS settings that would override or disturb the test server's identity.
_AWS_NOISE = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_error_log: the test expects ERROR records from the vfs loggers"
    )


@pytest.fixture(scope="session", autouse=True)
def _no_ambient_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite reads no user's config file (an empty XDG_CONFIG_HOME) and no
    vfs.toml above its temporary directories or the repository (vfs/config.py)."""
    saved = {name: os.environ.get(name) for name in ("XDG_CONFIG_HOME", CEILING_ENV)}
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("xdg-config"))
    repo = Path(__file__).resolve().parent.parent
    os.environ[CEILING_ENV] = f"{tmp_path_factory.getbasetemp().parent}:{repo.parent}"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedServer]:
    """One SeaweedFS for the whole session; its admin identity is in os.environ
    meanwhile, so in-process boto3 and subprocesses find it."""
    saved = dict(os.environ)
    with SeaweedServer() as server:
        for name in _AWS_NOISE:
            os.environ.pop(name, None)
        os.environ.update(server.env())
        try:
            yield server
        finally:
            os.environ.clear()
            os.environ.update(saved)


def _fresh_bucket(server: SeaweedServer) -> str:
    return server.make_bucket(f"vfs-test-{uuid.uuid4().hex[:16]}")


@pytest.fixture
def s3_url(seaweed: SeaweedServer) -> str:
    """A store URL in a new, empty bucket."""
    return f"s3://{_fresh_bucket(seaweed)}/store"


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty store, on each backend in turn."""
    if request.param == "s3":
        url: str = request.getfixturevalue("s3_url")
        return url
    return str(tmp_path / "store")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """An empty store's backend, on each backend in turn."""
    b: Backend
    if request.param == "s3":
        server: SeaweedServer = request.getfixturevalue("seaweed")
        b = S3Backend(_fresh_bucket(server), "store", endpoint_url=server.endpoint)
    else:
        b = LocalBackend(str(tmp_path / "store"))
    try:
        yield b
    finally:
        b.close()


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def _no_error_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that logs at ERROR or above through the `vfs` logger tree, as an
    unexpected error a user would have seen. Opt out: @pytest.mark.allow_error_log."""
    if request.node.get_closest_marker("allow_error_log"):
        yield
        return
    handler = _ErrorRecords()
    logger = logging.getLogger("vfs")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if handler.records:
        lines = "\n".join(f"{r.name}: {r.getMessage()}" for r in handler.records)
        pytest.fail(f"unexpected ERROR log records:\n{lines}", pytrace=False)
