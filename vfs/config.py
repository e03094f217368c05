"""Settings from files, the environment and flags: `vfs.toml` and its layers.

Sources, lowest precedence first (a later one overrides an earlier one, key by key):

    user      $XDG_CONFIG_HOME/vfs/config.toml (~/.config/vfs/config.toml)
    project   vfs.toml, found by walking up from the working directory as git finds
              .git (stopping at the filesystem root or a mount boundary); committed
    local     vfs.local.toml beside vfs.toml: this clone's own settings, not committed
    env       $VFS_STORE (core.store), $VFS_CACHE_DIR (core.cache_dir),
              $VFS_REMOTE (core.remote)
    flags     --store, --cache-dir (the CLI hands them to resolve_store/resolve_cache_dir)

The keys are few, and every one is in KEYS or REMOTE_KEYS; anything else is refused
with a did-you-mean. Secrets are refused in every file: vfs hands S3 credentials to
nobody, boto3's credential chain finds them (docs/config.md says where they go).

A relative local path in a file (core.store, core.cache_dir, remote.NAME.url) is
relative to that file's directory, so a committed vfs.toml means the same store in
every clone, wherever the command runs from.

A store is named by a URL, a path, or a remote name (resolve_store has the rule). The
CLI's light paths pay for none of this unless they need it: an explicit path
loads no file (an s3:// URL does, for the endpoint of a remote with that URL), tomllib is imported only when a file exists, tomlkit only to write one.
Standard library only at import time.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from vfs.defaults import (
    DEFAULT_CACHE_BYTES,
    _xdg_home,
    default_cache_dir,
    default_store_dir,
    parse_size,
)
from vfs.errors import UsageError

log = logging.getLogger(__name__)

__all__ = [
    "KEYS",
    "REMOTE_KEYS",
    "SCOPES",
    "Remote",
    "Settings",
    "StoreTarget",
    "check_key",
    "is_path_key",
    "load",
    "load_file",
    "resolve_cache_dir",
    "resolve_cache_size",
    "resolve_store",
    "scope_path",
    "set_value",
    "spec_target",
    "split_remote",
    "unset_value",
]

PROJECT_FILE = "vfs.toml"
LOCAL_FILE = "vfs.local.toml"
# Like GIT_CEILING_DIRECTORIES: a ':'-separated list of directories the walk up for
# vfs.toml never enters (the test suite sets it, so a stray vfs.toml above a
# temporary directory cannot change what a test sees).
CEILING_ENV = "VFS_CONFIG_CEILING"

KEYS: dict[str, str] = {
    "core.store": "the default store: a URL, a directory, or a remote's name",
    "core.cache_dir": "the chunk cache directory",
    "core.cache_size": "the chunk cache's cap (10G, 512M), for every command and mount using it",
    "core.remote": "the remote push and pull use when none is named",
}
REMOTE_KEYS: dict[str, str] = {
    "url": "the remote's store: s3://bucket[/prefix] or a directory",
    "endpoint_url": "the S3 endpoint (http[s]://host[:port]), when not AWS's",
}
ENV: dict[str, str] = {
    "VFS_STORE": "core.store",
    "VFS_CACHE_DIR": "core.cache_dir",
    "VFS_CACHE_SIZE": "core.cache_size",
    "VFS_REMOTE": "core.remote",
}

# scope -> what --SCOPE writes; in precedence order, lowest first.
SCOPES = ("user", "project", "local")

_SECRET = re.compile(
    r"secret|password|passwd|token|credential|access_key|session|private_key|api_key",
    re.IGNORECASE,
)
_SECRETS_GO = (
    "vfs never reads secrets from its config files (a committed vfs.toml would publish "
    "them): give S3 credentials to boto3's credential chain instead, as "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, or a profile in "
    "~/.aws/credentials chosen with AWS_PROFILE"
)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@]*@")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's rule for a bucket's name
_REMOTE_PREFIX = re.compile(r"([A-Za-z0-9_][A-Za-z0-9._+-]*):(?!//)(.*)", re.DOTALL)


class Value(NamedTuple):
    """A setting's raw text, where it came from, and the directory a relative path
    in it is relative to."""

    text: str
    origin: str  # a file's path, or "env VFS_STORE"
    base_dir: str


class Remote(NamedTuple):
    name: str
    url: str  # resolved: a relative path made absolute against its file's directory
    endpoint_url: str | None
    origin: str

    def target(self) -> StoreTarget:
        """What opens this remote's store: vfs.ops.base.open_target(remote.target())."""
        return StoreTarget(self.url, self.endpoint_url, self.name, f"remote {self.name}")


class StoreTarget(NamedTuple):
    """The store a command uses: what Store.open needs, and how it was chosen."""

    url: str
    endpoint_url: str | None = None
    remote: str | None = None  # the remote's name, when one was named
    origin: str = "default"


# --- finding the files ---------------------------------------------------------------


def user_file() -> str:
    return os.path.join(_xdg_home("XDG_CONFIG_HOME", "~/.config"), "vfs", "config.toml")


def _ceilings() -> set[str]:
    dirs = os.environ.get(CEILING_ENV, "").split(":")
    return {os.path.normpath(d) for d in dirs if os.path.isabs(d)}


def project_dir(cwd: str | None = None) -> str | None:
    """The nearest directory, from `cwd` up, holding vfs.toml or vfs.local.toml.
    The walk stops at the root, at a mount boundary (as git's does) and before a
    directory of $VFS_CONFIG_CEILING."""
    d = os.path.abspath(cwd or os.getcwd())
    ceilings = _ceilings()
    try:
        dev = os.stat(d).st_dev
    except OSError:
        return None
    while True:
        if any(os.path.isfile(os.path.join(d, f)) for f in (PROJECT_FILE, LOCAL_FILE)):
            return d
        parent = os.path.dirname(d)
        if parent == d or parent in ceilings:
            return None
        try:
            if os.stat(parent).st_dev != dev:
                return None
        except OSError:
            return None
        d = parent


def scope_path(scope: str, cwd: str | None = None) -> str:
    """The file a scope's writes go to: the project's files beside the vfs.toml found
    from `cwd`, else in `cwd` itself (where a new project starts)."""
    if scope == "user":
        return user_file()
    where = project_dir(cwd) or os.path.abspath(cwd or os.getcwd())
    if scope == "project":
        return os.path.join(where, PROJECT_FILE)
    if scope == "local":
        return os.path.join(where, LOCAL_FILE)
    raise ValueError(scope)


# --- reading -------------------------------------------------------------------------


def check_key(key: str, origin: str = "") -> tuple[str, str | None]:
    """`key` checked: (section-level key, remote name or None). UsageError for a
    secret (saying where it belongs) or an unknown key (with a did-you-mean)."""
    where = f"{origin}: " if origin else ""
    if _SECRET.search(key.rpartition(".")[2]):
        raise UsageError(f"{where}{key} is a secret: {_SECRETS_GO}")
    parts = key.split(".")
    if key in KEYS:
        return key, None
    if len(parts) == 3 and parts[0] == "remote" and parts[2] in REMOTE_KEYS:
        if not _NAME.fullmatch(parts[1]) or ".." in parts[1]:
            raise UsageError(f"{where}invalid remote name {parts[1]!r} in {key}")
        return f"remote.*.{parts[2]}", parts[1]
    known = [*KEYS, *(f"remote.NAME.{k}" for k in REMOTE_KEYS)]
    candidates = [*KEYS]
    if len(parts) >= 2 and parts[0] == "remote":
        candidates += [f"remote.{parts[1]}.{k}" for k in REMOTE_KEYS]
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    raise UsageError(f"{where}unknown key {key!r}: {hint}the keys are {', '.join(known)}")


def check_setting(key: str, value: str) -> None:
    """UsageError unless `vfs config set KEY VALUE` would take it: checked before a
    command that sets several keys writes any of them."""
    check_key(key)
    _check_value(key, value, "")


def _check_value(key: str, value: Any, origin: str) -> str:
    where = f"{origin}: " if origin else ""
    if not isinstance(value, str):
        raise UsageError(f"{where}{key} must be a string, not {type(value).__name__}")
    if _USERINFO.match(value):
        raise UsageError(f"{where}{key} holds credentials in its URL: {_SECRETS_GO}")
    if key.endswith(".endpoint_url") and not re.match(r"^https?://[^/\s]+", value):
        raise UsageError(f"{where}{key} must be http://host[:port] or https://..., not {value!r}")
    if value.startswith("s3://") and not _BUCKET.fullmatch(value[5:].partition("/")[0]):
        raise UsageError(
            f"{where}{key}: {value[5:].partition('/')[0]!r} is not an S3 bucket name "
            "(3 to 63 lowercase letters, digits, '.' and '-', starting and ending with a "
            "letter or digit)"
        )
    if key == "core.cache_size":
        try:
            parse_size(value)
        except ValueError as e:
            raise UsageError(f"{where}{key}: {e}") from None
    if key == "core.remote" and not _NAME.fullmatch(value):
        raise UsageError(f"{where}core.remote must be a remote's name, not {value!r}")
    return value


def _flatten(doc: dict[str, Any], origin: str) -> Iterator[tuple[str, Any]]:
    for section, table in doc.items():
        if section == "remote" and isinstance(table, dict):
            for name, fields in table.items():
                if not isinstance(fields, dict):
                    raise UsageError(f"{origin}: remote.{name} must be a table ([remote.{name}])")
                for field, value in fields.items():
                    yield f"remote.{name}.{field}", value
        elif isinstance(table, dict):
            for k, value in table.items():
                if isinstance(value, dict):
                    raise UsageError(f"{origin}: unknown table [{section}.{k}]")
                yield f"{section}.{k}", value
        else:
            check_key(section, origin)  # a bare top-level key: say what the keys are
            raise UsageError(f"{origin}: unknown key {section!r}")  # pragma: no cover


def load_file(path: str) -> dict[str, str]:
    """One file's settings (key -> raw text), checked; {} when there is no file."""
    return _read(path)


def _read(path: str) -> dict[str, str]:
    """A file's settings, checked; {} when there is no file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    import tomllib  # only when a file exists: the CLI's light paths skip it

    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from None
    out = {}
    for key, value in _flatten(doc, path):
        check_key(key, path)
        out[key] = _check_value(key, value, path)
    return out


class Settings:
    """Every setting in effect, each with its origin; built by load()."""

    def __init__(self, cwd: str, files: list[tuple[str, str]]) -> None:
        self.cwd = cwd
        self.files = files  # (scope, path) of every file that exists, lowest first
        self.values: dict[str, Value] = {}
        self.by_scope: dict[str, dict[str, str]] = {}
        for scope, path in files:
            found = _read(path)
            self.by_scope[scope] = found
            base = os.path.dirname(path)
            for key, text in found.items():
                self.values[key] = Value(text, path, base)
        for env, key in ENV.items():
            given = os.environ.get(env)
            if given:
                self.values[key] = Value(_check_value(key, given, f"${env}"), f"env {env}", cwd)

    def get(self, key: str) -> str | None:
        check_key(key)
        v = self.values.get(key)
        return v.text if v else None

    def origin(self, key: str) -> str | None:
        v = self.values.get(key)
        return v.origin if v else None

    def items(self) -> list[tuple[str, Value]]:
        return sorted(self.values.items())

    def remotes(self) -> dict[str, Remote]:
        out: dict[str, Remote] = {}
        names = sorted({k.split(".")[1] for k in self.values if k.startswith("remote.")})
        for name in names:
            url = self.values.get(f"remote.{name}.url")
            endpoint = self.values.get(f"remote.{name}.endpoint_url")
            if url is None:
                where = (endpoint.origin if endpoint else "") or "config"
                raise UsageError(f"{where}: remote {name!r} has no url (remote.{name}.url)")
            out[name] = Remote(
                name,
                _as_path_or_url(url.text, url.base_dir),
                endpoint.text if endpoint else None,
                url.origin,
            )
        return out

    def remote(self, name: str) -> Remote:
        """The remote called `name`; UsageError naming the known ones if none is."""
        remotes = self.remotes()
        if name in remotes:
            return remotes[name]
        raise UsageError(unknown_remote(name, list(remotes)))

    def default_remote(self) -> Remote:
        """The remote of core.remote; UsageError saying how to set one if unset."""
        name = self.get("core.remote")
        if name is None:
            raise UsageError(
                "no default remote: name one, or set it with "
                "`vfs remote add NAME URL --default` (or `vfs config set core.remote NAME`)"
            )
        try:
            return self.remote(name)
        except UsageError as e:
            raise UsageError(f"core.remote ({self.origin('core.remote')}): {e}") from None

    def store(self, flag: str | None = None, create: bool = False) -> StoreTarget:
        """The store: `flag` (--store), else $VFS_STORE, else core.store, else the
        default directory (see resolve_store)."""
        if flag:
            return self._target(flag, self.cwd, "--store", create)
        v = self.values.get("core.store")
        if v is None:
            return StoreTarget(default_store_dir())
        return self._target(v.text, v.base_dir, v.origin, create)

    def with_endpoint(self, target: StoreTarget) -> StoreTarget:
        """`target` with the endpoint of the remote whose URL it is, if it has none:
        an S3 URL recorded by URL alone (vfs.lock, a script) reaches the bucket as
        the remote does. An S3 URL in a remote's bucket under another prefix
        (s3://team-bucket/scratch beside the remote's s3://team-bucket/walk) gets
        that bucket's endpoint too, when the remotes in that bucket agree on one: the
        bucket lives on that server, and asking AWS for it only fails."""
        if target.endpoint_url or not target.url.startswith("s3://"):
            return target
        url = target.url.rstrip("/")
        bucket = url[len("s3://") :].partition("/")[0]
        in_bucket = set()
        for r in self.remotes().values():
            if not r.endpoint_url or not r.url.startswith("s3://"):
                continue
            if r.url.rstrip("/") == url:
                return target._replace(endpoint_url=r.endpoint_url, remote=r.name)
            if r.url[len("s3://") :].partition("/")[0] == bucket:
                in_bucket.add(r.endpoint_url)
        if len(in_bucket) == 1:
            return target._replace(endpoint_url=in_bucket.pop())
        return target

    def cache_dir(self, flag: str | None = None) -> str:
        if flag:
            return flag
        v = self.values.get("core.cache_dir")
        return _as_path_or_url(v.text, v.base_dir) if v else default_cache_dir()

    def _target(self, text: str, base_dir: str, origin: str, create: bool) -> StoreTarget:
        if not _is_name(text):
            return self.with_endpoint(
                StoreTarget(_as_path_or_url(text, base_dir), None, None, origin)
            )
        remotes = self.remotes()
        if text in remotes:
            if os.path.isdir(os.path.join(base_dir, text)):
                log.warning(
                    "%r is a remote and a directory here: using the remote (write ./%s "
                    "for the directory)",
                    text,
                    text,
                )
            return remotes[text].target()._replace(origin=origin)
        if create or os.path.exists(os.path.join(base_dir, text)):
            return StoreTarget(_as_path_or_url(text, base_dir), None, None, origin)
        raise UsageError(
            f"{unknown_remote(text, list(remotes))}; for a new local store directory "
            f"write ./{text}" + (f" ({origin})" if origin != "--store" else "")
        )


def unknown_remote(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    have = f"the remotes are {', '.join(known)}" if known else "no remotes are configured"
    return f"unknown remote {name!r}{hint}: {have} (vfs remote list)"


def _is_name(text: str) -> bool:
    """A bare word that may name a remote: no scheme, no '/', not '.' or '~...'."""
    return bool(_NAME.fullmatch(text)) and ".." not in text


def _is_url(text: str) -> bool:
    return bool(_SCHEME.match(text)) and (text.startswith("file:") or "://" in text)


def _as_path_or_url(text: str, base_dir: str) -> str:
    """A URL as it is; a path with ~ expanded and made absolute against `base_dir`."""
    if _is_url(text):
        return text
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(text)))


def load(cwd: str | None = None) -> Settings:
    """The settings in effect for a command run in `cwd` (default: the working
    directory): the user file, the project's vfs.toml and vfs.local.toml, the
    environment. UsageError, naming the file, for anything malformed."""
    here = os.path.abspath(cwd or os.getcwd())
    files = [("user", user_file())]
    proj = project_dir(here)
    if proj is not None:
        files += [("project", os.path.join(proj, PROJECT_FILE))]
        files += [("local", os.path.join(proj, LOCAL_FILE))]
    return Settings(here, [(s, p) for s, p in files if os.path.isfile(p)])


def resolve_store(
    flag: str | None = None, cwd: str | None = None, create: bool = False
) -> StoreTarget:
    """The store a command uses: --store (`flag`), else $VFS_STORE, else core.store,
    else $XDG_DATA_HOME/vfs/store. Each may be a URL, a path, or a remote's name:

    * a URL (s3://..., file://...) or a path with a '/' (or '.', '~') is that store,
      and an s3:// URL that is a remote's URL gets that remote's endpoint;
    * a bare word names the remote of that name (a directory of the same name is
      then ./NAME); a bare word no remote has is a directory if one exists, else an
      error listing the remotes, so a mistyped name never becomes a new store (but
      with `create`, for `vfs init NAME`, which says it wants one: the directory).

    A path or file:// URL given by flag or environment loads no config file."""
    text, origin = (flag, "--store") if flag else (os.environ.get("VFS_STORE"), "$VFS_STORE")
    if text and not _is_name(text):
        target = StoreTarget(text, None, None, origin)
        return load(cwd).with_endpoint(target) if text.startswith("s3://") else target
    return load(cwd).store(flag, create)


def split_remote(text: str) -> tuple[str | None, str]:
    """`REMOTE:DATASET@REF` -> ("REMOTE", "DATASET@REF"); a spec without a remote part
    -> (None, text). `REMOTE:` alone names the remote's store (rest ""). A URL is not a
    remote part: `s3://b/p` stays whole, as ':' followed by '//' is a scheme. Remote,
    dataset and ref names cannot hold ':' (vfs.names), so the split is unambiguous."""
    m = _REMOTE_PREFIX.fullmatch(text)
    if m is None:
        return None, text
    return m.group(1), m.group(2)


def spec_target(
    flag: str | None, specs: Sequence[str | None]
) -> tuple[StoreTarget, list[str | None]]:
    """The store that `specs` (DATASET@REF, or REMOTE:DATASET@REF; None for an
    absent one) name, and the specs without their remote part. A remote part names
    that remote's store for this command only, leaving the default store alone. The
    specs of one command name one store (`@REF`, diff's B, is in A's), and a remote
    part with --store is refused as naming the store twice."""
    parts = [split_remote(s) if s is not None else (None, None) for s in specs]
    remotes = {r for r, _ in parts if r is not None}
    rests = [rest for _, rest in parts]
    if not remotes:
        return resolve_store(flag), rests
    plain = [rest for r, rest in parts if r is None and rest is not None and rest[:1] != "@"]
    if len(remotes) > 1 or plain:
        raise UsageError("these versions must name one store: give every one the same REMOTE:")
    if flag:
        raise UsageError("a REMOTE: part names the store already: drop --store")
    (name,) = remotes
    return load().remote(name).target(), rests


def resolve_cache_dir(flag: str | None = None, cwd: str | None = None) -> str:
    """--cache-dir, else $VFS_CACHE_DIR, else core.cache_dir, else the XDG cache."""
    if flag:
        return flag
    if os.environ.get("VFS_CACHE_DIR"):
        return default_cache_dir()
    return load(cwd).cache_dir()


def resolve_cache_size(flag: int | None = None, cwd: str | None = None) -> int:
    """--cache-size, else $VFS_CACHE_SIZE, else core.cache_size, else 10G: the cap
    every process using the cache keeps it to, so that one set in the config holds
    for mounts, prefetch, get and the Python API alike."""
    if flag:
        return flag
    env = os.environ.get("VFS_CACHE_SIZE")
    if env:
        try:
            return parse_size(env)
        except ValueError as e:
            raise UsageError(f"$VFS_CACHE_SIZE: {e}") from None
    v = load(cwd).values.get("core.cache_size")
    return parse_size(v.text) if v else DEFAULT_CACHE_BYTES


# --- writing -------------------------------------------------------------------------


def is_path_key(key: str) -> bool:
    """Whether `key`'s value may be a local path (relative to the file that sets it)."""
    return key in ("core.store", "core.cache_dir") or (
        key.startswith("remote.") and key.endswith(".url") and not key.endswith("endpoint_url")
    )


def path_for_file(text: str, path: str, cwd: str | None = None) -> str:
    """A local path typed at the shell (relative to `cwd`) as the file at `path`
    should hold it: relative to that file's directory in a project file (so the file
    means the same in every clone), absolute in the user's file. A URL or a bare
    word (a remote's name) is unchanged."""
    if _is_url(text) or _is_name(text):
        return text
    absolute = os.path.normpath(os.path.join(cwd or os.getcwd(), os.path.expanduser(text)))
    if os.path.basename(path) not in (PROJECT_FILE, LOCAL_FILE):
        return absolute
    rel = os.path.relpath(absolute, os.path.dirname(path))
    return rel if rel.startswith("..") else os.path.join(".", rel)


def _load_doc(path: str) -> Any:
    import tomlkit  # style-preserving: users' comments and layout survive a `set`

    try:
        with open(path, encoding="utf-8") as f:
            return tomlkit.parse(f.read())
    except FileNotFoundError:
        return tomlkit.document()
    except tomlkit.exceptions.ParseError as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from None


def _save_doc(path: str, doc: Any) -> None:
    import tomlkit

    from vfs.perms import write_file

    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_file(path, _spaced(tomlkit.dumps(doc)))


def _spaced(text: str) -> str:
    """`text` with a blank line before each table header that follows a key line.
    tomlkit glues a table added after a super-table to its last sub-table
    (`url = ...` then `[core]` on the next line); a header under a comment is left as
    written."""
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("[") and out and out[-1].strip() and not out[-1].startswith(("#", "[")):
            out.append("\n")
        out.append(line)
    return "".join(out)


def set_value(path: str, key: str, value: str) -> None:
    """Set `key` in the file at `path`, keeping the rest of it as written."""
    import tomlkit

    check_key(key)
    _check_value(key, value, "")
    doc = _load_doc(path)
    parts = key.split(".")
    if parts[0] == "remote":
        if "remote" not in doc:
            doc["remote"] = tomlkit.table(is_super_table=True)
        remotes = doc["remote"]
        if parts[1] not in remotes:
            remotes[parts[1]] = tomlkit.table()
        remotes[parts[1]][parts[2]] = value
    else:
        if parts[0] not in doc:
            doc[parts[0]] = tomlkit.table()
        doc[parts[0]][parts[1]] = value
    _save_doc(path, doc)
    _read(path)  # what was written reads back


def unset_value(path: str, key: str) -> bool:
    """Remove `key` from the file at `path` (and a table it leaves empty); False if
    the file does not set it."""
    check_key(key)
    if not os.path.isfile(path):
        return False
    doc = _load_doc(path)
    parts = key.split(".")
    tables = [doc]
    for part in parts[:-1]:
        if part not in tables[-1]:
            return False
        tables.append(tables[-1][part])
    if parts[-1] not in tables[-1]:
        return False
    del tables[-1][parts[-1]]
    for i in range(len(parts) - 1, 0, -1):  # drop the tables this emptied
        if len(tables[i]) == 0:
            del tables[i - 1][parts[i - 1]]
    _save_doc(path, doc)
    return True


def remove_remote(path: str, name: str) -> bool:
    """Remove [remote.NAME] from the file at `path`; False if it has none."""
    removed = False
    for field in REMOTE_KEYS:
        removed = unset_value(path, f"remote.{name}.{field}") or removed
    return removed
