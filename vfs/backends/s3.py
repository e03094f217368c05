"""The S3 backend: each key is an object under `<prefix>/` in one bucket.

This module owns everything vfs knows about S3: the boto3 client settings
(timeouts, SDK retries, path-style addressing), the mapping of S3's answers to vfs
errors, and conditional writes (If-Match / If-None-Match) as the compare-and-swap
that refs are built on. It never creates buckets: a missing bucket is a clear
error, not something to paper over.

Concurrency: one boto3 client per backend, which botocore documents as safe to
share between threads; the connection pool is sized for the store layer's worker
threads. The only other shared state is `_bucket_seen`, a flag that only ever goes
from False to True, so a race costs at most one extra HeadBucket.

Error messages name the endpoint, bucket and key, never credentials: they are
built here from those three, not copied from whatever the SDK says.

Reads take a lighter road than the SDK's when they can (`_fast_get`): a GET of a
presigned URL (signed once per key and reused for a few minutes: a Range header is
not part of a presigned URL's signature) through libcurl (vfs/backends/curl.py). A
full boto3 call costs ~3 ms of CPU per request (events, validation, parsing, retry
bookkeeping); a urllib3 GET of the URL ~1.3 ms, libcurl's ~0.35 ms, and a mount
reading cold small files makes one GET per file or window. Only a clean answer (200, 206, 416, or a 404 whose body says NoSuchKey) is taken
from it; any other answer or a broken connection is asked again through boto3, whose retries and
error table then decide, so errors read the same either way; so is a request that a
hook on boto3's "before-send" answers (the fault layer's injected throttling). A stalled server is the
exception: a timeout is reported at once, as boto3's own would be after its retries.

S3-compatible servers differ in corners; the ones handled here were found by
running tests/store/test_backends.py against SeaweedFS: a range starting at or past the
end answers 416 (an empty read, not an error), HEAD answers a bare 404 for a
missing bucket too (so a 404 is followed by one HeadBucket), If-Match on a
missing key answers 412 rather than 404, and emptied prefixes linger in
CommonPrefixes (so list_dirs confirms each one).
"""

from __future__ import annotations

import builtins
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions as bce
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.httpsession import get_cert_path

from vfs.backends import curl
from vfs.backends.base import Backend, ObjectInfo, UrlRead, Versioned
from vfs.cache.buffers import RunBuffers
from vfs.errors import (
    BackendError,
    NotFound,
    PermissionDenied,
    Unreachable,
    UsageError,
    VfsError,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

MiB = 1 << 20

# Throttling and 5xx answers are retried by botocore with backoff. A refused
# connection is retried too, but its backoff is short (botocore scales non-throttling
# errors down), so a closed port fails in well under a second.
#
# Two clients, two bounds. Small requests (refs, config, tree pages, locations,
# listings, deletes) go through one whose every try waits at most _QUICK_TIMEOUT
# ($VFS_S3_TIMEOUT overrides it) for an answer, _QUICK_ATTEMPTS tries: an endpoint
# that accepts connections and never answers fails a command in about 15 s, naming
# itself, not in 150. Transfers (pack ranges and uploads) keep _READ_TIMEOUT of
# silence per read and _MAX_ATTEMPTS tries: a busy server may think for a while
# before the first byte of a 32 MiB answer.
_MAX_ATTEMPTS = 5
_CONNECT_TIMEOUT = 3.0
_READ_TIMEOUT = 30.0
_QUICK_ATTEMPTS = 3
_QUICK_TIMEOUT = 5.0
TIMEOUT_ENV = "VFS_S3_TIMEOUT"
_MAX_POOL = 32
# A presigned read URL is used for _URL_REUSE seconds of its _URL_EXPIRES, so that a
# request sent just before the reuse ends still arrives well within its validity.
_URL_REUSE = 300.0
_URL_EXPIRES = 900
_MAX_URLS = 4096
# Bodies of ranged GETs from 1 to 16 MiB (pack windows, readahead parts of 8 MiB)
# are received into reused buffers instead of fresh memory, whose page faults were
# most of a mount's faults and a sixth of its CPU reading a large file cold. A buffer
# is lent again once no chunk view of it is alive (vfs/cache/buffers.py); a mount
# holds views in its memory LRU, its readahead and its cache writer's queue (each
# bounded), so MAX_LENT covers them, and past it a body goes to new memory as before.
_BODIES = RunBuffers(min_bytes=1 * MiB, max_bytes=16 * MiB, max_lent=64, idle_bytes=32 * MiB)

# Packs are uploaded in 16 MiB parts once over 64 MiB; smaller ones go in one PUT,
# which is cheaper and atomic anyway. Eight parts in flight keep a fast link busy
# without holding more than ~128 MiB of buffers per upload.
_TRANSFER = TransferConfig(
    multipart_threshold=64 * MiB,
    multipart_chunksize=16 * MiB,
    max_concurrency=8,
    use_threads=True,
)

# S3 answers 409 ConditionalRequestConflict when another conditional write to the
# key is in flight; AWS says to retry. After this many tries we report "lost the
# race" and let the caller re-read.
_CONFLICT_RETRIES = 4

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_DENIED_CODES = frozenset(
    {"AccessDenied", "Forbidden", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
)
_UNREACHABLE = (
    bce.EndpointConnectionError,
    bce.ConnectTimeoutError,
    bce.ReadTimeoutError,
    bce.ConnectionClosedError,
)


def quick_timeout() -> float:
    """Seconds a small request waits for an answer, per try ($VFS_S3_TIMEOUT)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if not raw:
        return _QUICK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise UsageError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds")
    return value


def _client_config(read_timeout: float = _READ_TIMEOUT, attempts: int = _MAX_ATTEMPTS) -> Config:
    return Config(
        retries={"mode": "standard", "total_max_attempts": attempts},
        connect_timeout=_CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        max_pool_connections=_MAX_POOL,
        # Virtual-hosted style needs DNS for '<bucket>.<host>'; SeaweedFS, MinIO and
        # plain IP endpoints only understand path style. AWS still accepts it.
        # No SHA-256 of every uploaded byte for the signature: boto3 skips it on
        # https already, and on http it was 8% of a commit's CPU. What we upload is
        # content-addressed and verified on every read, and the transfer itself is
        # checked by the CRC32 checksum that boto3 still sends.
        s3={"addressing_style": "path", "payload_signing_enabled": False},
    )


def _url_getter() -> curl.UrlGetter | None:
    """The presigned-URL road, with boto3's connect timeout and certificates; None
    where boto3 would take a proxy from the environment (boto3 is asked then)."""
    if any(
        os.environ.get(name)
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")
    ):
        return None
    ca = os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)
    return curl.UrlGetter(ca if isinstance(ca, str) else None, _CONNECT_TIMEOUT)


def _error_code(exc: bce.ClientError) -> tuple[str, int]:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return code, status


class S3Backend(Backend):
    """A store in an S3 bucket, under an optional key prefix.

    The endpoint is `endpoint_url`, else the environment variable VFS_S3_ENDPOINT,
    else whatever boto3 resolves (AWS_ENDPOINT_URL, a profile, or AWS itself).
    Credentials come only from boto3's standard chain.
    """

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        if not bucket:
            raise ValueError("S3Backend needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._key_prefix = self.prefix + "/" if self.prefix else ""
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        endpoint = endpoint_url or os.environ.get("VFS_S3_ENDPOINT") or None
        # A private session: boto3's default session is not safe to create clients
        # from in several threads at once.
        session = boto3.session.Session()
        self._quick_timeout = quick_timeout()
        # Transfers: pack ranges and uploads. Everything else goes through _quick.
        self._client: S3Client = session.client(
            "s3", endpoint_url=endpoint, config=_client_config()
        )
        self._quick: S3Client = session.client(
            "s3",
            endpoint_url=endpoint,
            config=_client_config(self._quick_timeout, _QUICK_ATTEMPTS),
        )
        self.endpoint: str = self._client.meta.endpoint_url
        self._bucket_seen = False
        self._http = _url_getter()
        # key -> (time signed, presigned URL); a race costs one extra signature.
        self._urls: dict[str, tuple[float, str]] = {}

    def __repr__(self) -> str:
        return f"S3Backend({self.url!r}, endpoint={self.endpoint!r})"

    def close(self) -> None:
        self._client.close()
        self._quick.close()
        if self._http is not None:
            self._http.close()

    # -- names and errors -----------------------------------------------------

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/")):
            raise ValueError(f"invalid object key {key!r}")
        return self._key_prefix + key

    def _where(self, key: str | None) -> str:
        obj = f"s3://{self.bucket}/{self._key_prefix}{key}" if key else f"s3://{self.bucket}"
        return f"{obj} at {self.endpoint}"

    def _error(self, exc: Exception, key: str | None) -> VfsError:
        """The one table from boto3/botocore exceptions to vfs errors."""
        if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, Exception):
            # boto3's managed transfer wraps the ClientError it got in a string.
            exc = exc.__context__
        if isinstance(exc, bce.ClientError):
            code, status = _error_code(exc)
            if code == "NoSuchBucket":
                return BackendError(f"bucket '{self.bucket}' does not exist at {self.endpoint}")
            if code in _NOT_FOUND_CODES or (status == 404 and key is not None):
                return NotFound(f"no such object: {self._where(key)}")
            if code in _DENIED_CODES or status == 403:
                reason = (
                    "credentials rejected"
                    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch")
                    else "access denied"
                )
                return PermissionDenied(f"{reason} ({code or status}) for {self._where(key)}")
            return BackendError(f"S3 error {code or status} for {self._where(key)}")
        if isinstance(exc, bce.ReadTimeoutError):
            return Unreachable(self._silent())
        if isinstance(exc, _UNREACHABLE):
            return Unreachable(f"cannot reach S3 endpoint {self.endpoint}: {exc}")
        if isinstance(exc, bce.NoCredentialsError):
            return BackendError(
                f"no S3 credentials found for {self._where(None)} "
                "(set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
            )
        # botocore's own messages name parameters and URLs, never secret values.
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return BackendError(f"S3 request for {self._where(key)} failed: {detail}")

    def _silent(self) -> str:
        return (
            f"the S3 endpoint {self.endpoint} accepted a connection but did not answer "
            f"(waited {self._quick_timeout:g} s per try for small requests, "
            f"{_READ_TIMEOUT:g} s for transfers); if it is only slow, raise the limit "
            f"with {TIMEOUT_ENV}=SECONDS"
        )

    def _check_bucket(self) -> None:
        """Raise if the bucket is missing. A HEAD answers a bare 404 both for a
        missing key and a missing bucket, so a 404 is checked once per backend."""
        if self._bucket_seen:
            return
        try:
            self._quick.head_bucket(Bucket=self.bucket)
        except (bce.ClientError, bce.BotoCoreError) as exc:
            if isinstance(exc, bce.ClientError) and _error_code(exc)[1] == 404:
                raise BackendError(
                    f"bucket '{self.bucket}' does not exist at {self.endpoint}"
                ) from exc
            if isinstance(exc, bce.ClientError) and _error_code(exc)[1] == 403:
                # HeadBucket needs ListBucket; without it we cannot tell, and the
                # object's 404 is the best answer we have.
                return
            raise self._error(exc, None) from exc
        self._bucket_seen = True

    def _head(self, key: str) -> dict[str, Any] | None:
        """The object's metadata, or None if it does not exist."""
        try:
            return dict(self._quick.head_object(Bucket=self.bucket, Key=self._key(key)))
        except bce.ClientError as exc:
            if _error_code(exc)[1] == 404:
                self._check_bucket()
                return None
            raise self._error(exc, key) from exc
        except bce.BotoCoreError as exc:
            raise self._error(exc, key) from exc

    # -- reading --------------------------------------------------------------

    def _get_object(self, key: str, **kwargs: Any) -> tuple[bytes, dict[str, Any]]:
        client = self._client if "Range" in kwargs else self._quick
        try:
            resp = client.get_object(Bucket=self.bucket, Key=self._key(key), **kwargs)
            # read() is the one copy of the body: http.client allocates the bytes and
            # reads the socket straight into them. urllib3's readinto() is a read()
            # plus a copy, so a preallocated buffer would cost one more, not one less.
            return resp["Body"].read(), dict(resp)
        except (bce.ClientError, bce.BotoCoreError) as exc:
            raise self._error(exc, key) from exc

    def _signed(self, key: str, headers: dict[str, str]) -> str | None:
        """The presigned URL of a GET of `key`, reused for _URL_REUSE seconds, or
        None: then the caller asks boto3 (no credentials, or a hook of boto3's sends,
        such as the fault injection layer's throttling, answered this request)."""
        now = time.monotonic()
        signed = self._urls.get(key)
        if signed is None or now - signed[0] > _URL_REUSE:
            try:
                url = self._client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": self._key(key)},
                    ExpiresIn=_URL_EXPIRES,
                )
            except bce.BotoCoreError:
                return None
            if len(self._urls) >= _MAX_URLS:
                self._urls.clear()
            signed = self._urls[key] = (now, url)
        # Whoever hooks boto3's sends sees this one too: if a hook answers it, boto3
        # makes the whole call instead.
        answers = self._client.meta.events.emit(
            "before-send.s3.GetObject", request=AWSRequest("GET", signed[1], headers)
        )
        if any(answer is not None for _, answer in answers):
            return None
        return signed[1]

    def _answered(
        self, key: str, status: int, body: bytes | memoryview
    ) -> tuple[int, bytes | memoryview] | None:
        """A URL GET's reply as (status, body) if it is an answer (200, 206, 416),
        NotFound if it says NoSuchKey, else None: ask boto3."""
        if status in (200, 206, 416):
            return status, body
        if status == 404 and b"<Code>NoSuchKey</Code>" in bytes(body):
            # As the error table says it (a boto3 call's first use costs ~0.3 s of
            # CPU loading its models: a mount asks for optional keys at start).
            raise NotFound(f"no such object: {self._where(key)}")
        if status == 403:  # perhaps the URL, not the key: sign afresh next time
            self._urls.pop(key, None)
        return None

    def _fast_get(
        self, key: str, byte_range: str | None, into: memoryview | None = None
    ) -> tuple[int, bytes | memoryview] | None:
        """(status, body) of a GET of `key` by its presigned URL, or None: then the
        caller asks boto3 (no libcurl road, no credentials, or an answer other than
        200, 206, 416 or NoSuchKey; see the module's docstring). NotFound for a
        missing key."""
        if self._http is None:
            return None
        url = self._signed(key, {"Range": byte_range} if byte_range else {})
        if url is None:
            return None
        silence = _READ_TIMEOUT if byte_range else self._quick_timeout
        try:
            status, body = self._http.get(
                url, [f"Range: {byte_range}"] if byte_range else [], silence, into
            )
        except curl.Silent:
            raise Unreachable(self._silent()) from None
        except curl.Unreachable as exc:
            raise Unreachable(f"cannot reach S3 endpoint {self.endpoint}: {exc}") from None
        except curl.Failed:
            return None
        return self._answered(key, status, body)

    @staticmethod
    def _ranged(
        status: int, data: bytes | memoryview, offset: int, length: int
    ) -> bytes | memoryview:
        """The bytes of a ranged GET's answer (200, 206 or 416)."""
        if status == 416:
            return b""  # as in get_range
        if status == 200:  # a server that ignored Range: the whole object
            data = data[offset : offset + length]
        return data.toreadonly() if isinstance(data, memoryview) else data

    def url_read(self, key: str, offset: int, length: int) -> UrlRead | None:
        if self._http is None or offset < 0 or length <= 0:
            return None
        byte_range = f"bytes={offset}-{offset + length - 1}"
        url = self._signed(key, {"Range": byte_range})
        if url is None:
            return None

        def answer(status: int, body: bytes) -> bytes | memoryview | None:
            fast = self._answered(key, status, body)
            return None if fast is None else self._ranged(fast[0], fast[1], offset, length)

        return UrlRead(
            url,
            [f"Range: {byte_range}"],
            _READ_TIMEOUT,
            _CONNECT_TIMEOUT,
            self._http.ca_file,
            answer,
        )

    def get(self, key: str) -> bytes:
        fast = self._fast_get(key, None)
        if fast is not None and fast[0] == 200:
            return bytes(fast[1])  # received into new memory: already bytes
        return self._get_object(key)[0]

    def get_range(self, key: str, offset: int, length: int) -> bytes | memoryview:
        """A large range (a pack window, a readahead part) is received into a buffer
        of _BODIES and comes back as a read-only view of it (see that pool)."""
        if offset < 0 or length < 0:
            raise ValueError(f"invalid range offset={offset} length={length}")
        if length == 0:
            # An empty Range is not expressible; still say NotFound for a missing key.
            if self._head(key) is None:
                raise NotFound(f"no such object: {self._where(key)}")
            return b""
        byte_range = f"bytes={offset}-{offset + length - 1}"
        into = _BODIES.lend(length) if self._http is not None else None
        fast = self._fast_get(key, byte_range, into)
        del into  # only the answer's own view, if any, keeps the buffer lent
        if fast is not None:
            return self._ranged(fast[0], fast[1], offset, length)
        try:
            data, resp = self._get_object(key, Range=byte_range)
        except BackendError as exc:
            cause = exc.__cause__
            if isinstance(cause, bce.ClientError) and _error_code(cause)[1] == 416:
                # The range starts at or past the end (also: any range of an empty
                # object). The key exists, or S3 would have said 404.
                return b""
            raise
        if "ContentRange" not in resp:
            # A server that ignores Range answers 200 with the whole object.
            data = data[offset : offset + length]
        return data

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise NotFound(f"no such object: {self._where(key)}")
        return int(head["ContentLength"])

    # -- writing --------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        client = self._quick if len(data) < 8 * MiB else self._client
        try:
            client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (bce.ClientError, bce.BotoCoreError) as exc:
            raise self._error(exc, key) from exc

    def put_file(self, key: str, path: str) -> None:
        # Checked here so that a bad local path is not reported as an S3 problem.
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise BackendError(f"cannot read {path}: not a readable file")
        try:
            # A multipart upload becomes visible only on CompleteMultipartUpload, so
            # this is as atomic as a single PUT.
            self._client.upload_file(path, self.bucket, self._key(key), Config=_TRANSFER)
        except (bce.ClientError, bce.BotoCoreError, S3UploadFailedError) as exc:
            raise self._error(exc, key) from exc

    def copy_from(self, source: Backend, key: str) -> bool:
        """Server-side copy (CopyObject) from another bucket or prefix of the same
        endpoint, with this backend's credentials; False for any other source, and
        when those credentials may not read the source (the caller then streams the
        bytes with the source's own). A copy is as atomic as a PUT."""
        if not isinstance(source, S3Backend) or source.endpoint != self.endpoint:
            return False
        try:
            self._client.copy_object(
                Bucket=self.bucket,
                Key=self._key(key),
                CopySource={"Bucket": source.bucket, "Key": source._key(key)},
            )
        except (bce.ClientError, bce.BotoCoreError) as exc:
            err = self._error(exc, key)
            if isinstance(err, PermissionDenied):
                log.info("server-side copy of %s refused (%s); copying through", key, err)
                return False
            if isinstance(err, NotFound):
                raise NotFound(f"no such object: {source._where(key)}") from exc
            raise err from exc
        return True

    def delete(self, key: str) -> None:
        try:
            # S3 answers 204 for a missing key too, which is what the contract wants.
            self._quick.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (bce.ClientError, bce.BotoCoreError) as exc:
            raise self._error(exc, key) from exc

    def delete_many(self, keys: Sequence[str]) -> None:
        # DeleteObjects takes at most 1,000 keys; a missing key counts as deleted. It
        # goes through the transfer client: a server may take longer than a small
        # request's bound to delete a thousand objects.
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            try:
                resp = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True},
                )
            except (bce.ClientError, bce.BotoCoreError) as exc:
                raise self._error(exc, batch[0] if batch else None) from exc
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise BackendError(
                    f"{self.url}: cannot delete {len(errors)} objects, first "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )

    # -- listing --------------------------------------------------------------

    def list(self, prefix: str) -> Iterator[str]:
        paginator = self._quick.get_paginator("list_objects_v2")
        cut = len(self._key_prefix)
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key_prefix + prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"][cut:]
        except (bce.ClientError, bce.BotoCoreError) as exc:
            raise self._error(exc, None) from exc

    def list_info(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self._quick.get_paginator("list_objects_v2")
        cut = len(self._key_prefix)
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key_prefix + prefix):
                for obj in page.get("Contents", []):
                    mtime = obj["LastModified"].timestamp()
                    yield ObjectInfo(obj["Key"][cut:], int(obj["Size"]), mtime)
        except (bce.ClientError, bce.BotoCoreError) as exc:
            raise self._error(exc, None) from exc

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        if prefix and not prefix.endswith("/"):
            raise ValueError(f"list_dirs prefix must end in '/': {prefix!r}")
        paginator = self._quick.get_paginator("list_objects_v2")
        full = self._key_prefix + prefix
        candidates: builtins.list[str] = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full, Delimiter="/"):
                candidates.extend(cp["Prefix"] for cp in page.get("CommonPrefixes", []))
        except (bce.ClientError, bce.BotoCoreError) as exc:
            raise self._error(exc, None) from exc
        # SeaweedFS keeps a directory whose keys were all deleted for about two
        # minutes (its filer removes empty folders lazily) and reports it as a common
        # prefix meanwhile; AWS never does. So each prefix must show one key to count.
        # The checks run a few at a time: list_dirs serves listings like the dataset
        # names, which are short, and this keeps them quick on high-latency links.
        with ThreadPoolExecutor(max_workers=min(8, len(candidates) or 1)) as pool:
            present = builtins.list(pool.map(self._has_keys, candidates))
        return sorted(
            cp[len(full) :].rstrip("/") for cp, ok in zip(candidates, present, strict=True) if ok
        )

    def _has_keys(self, full_prefix: str) -> bool:
        try:
            resp = self._quick.list_objects_v2(Bucket=self.bucket, Prefix=full_prefix, MaxKeys=1)
        except (bce.ClientError, bce.BotoCoreError) as exc:
            raise self._error(exc, None) from exc
        return bool(resp.get("KeyCount") or resp.get("Contents"))

    # -- compare-and-swap -----------------------------------------------------

    def get_versioned(self, key: str) -> Versioned:
        data, resp = self._get_object(key)
        return Versioned(data, str(resp["ETag"]))

    def put_if(self, key: str, data: bytes, token: str | None) -> bool:
        # Both conditions are checked and applied atomically by the server. SeaweedFS
        # (4.x, checked by tests/store/test_backends.py) honours them like AWS, including
        # under concurrent writers, with one difference: If-Match on a missing key
        # answers 412 where AWS answers 404 NoSuchKey; both mean "lost the race".
        # When many writers hit one key at the same instant, SeaweedFS makes some of
        # the losers wait one or two seconds for their 412 (measured, 4.x): slow,
        # but still correct.
        #
        # The ETag of a single-part PUT is the MD5 of the content, so the token is a
        # content digest as on local disk: rewriting identical bytes does not
        # invalidate a token, which is harmless for a compare-and-swap on content.
        #
        # One ambiguity is inherent: if a first attempt reaches the server but its
        # answer is lost (timeout, 5xx) and botocore retries, the retry can fail its
        # own condition and this returns False for a write that happened. Callers
        # re-read after False and so see their own value.
        full_key = self._key(key)
        for attempt in range(1, _CONFLICT_RETRIES + 1):
            try:
                if token is None:
                    self._quick.put_object(
                        Bucket=self.bucket, Key=full_key, Body=data, IfNoneMatch="*"
                    )
                else:
                    self._quick.put_object(
                        Bucket=self.bucket, Key=full_key, Body=data, IfMatch=token
                    )
                return True
            except bce.ClientError as exc:
                code, status = _error_code(exc)
                if status == 412 or code == "PreconditionFailed":
                    return False
                if token is not None and code == "NoSuchKey":
                    return False
                if status == 409 and code == "ConditionalRequestConflict":
                    log.debug("put_if %s: conflict, attempt %d", key, attempt)
                    time.sleep(0.05 * attempt)
                    continue
                raise self._error(exc, key) from exc
            except bce.BotoCoreError as exc:
                raise self._error(exc, key) from exc
        return False

    def delete_if(self, key: str, token: str) -> bool:
        # DeleteObject with If-Match: SeaweedFS (4.x) answers 412 to a stale ETag and
        # keeps the object (checked by tests/store/test_refs_guard.py). A server that
        # ignored the header would delete unconditionally; Store.delete_ref re-reads
        # the ref first for that case.
        try:
            self._quick.delete_object(Bucket=self.bucket, Key=self._key(key), IfMatch=token)
            return True
        except bce.ClientError as exc:
            code, status = _error_code(exc)
            if status in (404, 412) or code in ("PreconditionFailed", "NoSuchKey"):
                return False
            raise self._error(exc, key) from exc
        except bce.BotoCoreError as exc:
            raise self._error(exc, key) from exc
