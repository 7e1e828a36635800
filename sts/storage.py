"""Remote model stores: a base path that is a URL (`s3://`, `gs://`, `hdfs://`, `az://`, ...).

A `RemoteStore` mirrors the *complete* versions under one URL into a local cache folder,
and the repository discovers versions in that folder exactly as in a local one. So every
backend's layouts work unchanged, and a version the repository can see is always whole.

Layout of a model's cache folder (`<model_cache_dir>/<name>-<hash of the URL>/`):

    versions/<n>/...     complete versions (numbered prefixes under the URL)
    root/<file or tree>  the original's single-file layout (or a folder without versions)
    state/<unit>.json    the listing each complete unit was downloaded from
    partial/             downloads in progress; removed at the start of every sync
    .lock                held while syncing, so `--workers N` processes share one cache

When is a remote version complete? Object stores have no atomic folders, so sts decides
from listings (keys, sizes and ETags or the store's equivalent):

- with a `version_marker` (e.g. `_SUCCESS`, uploaded last), once that object exists;
- without one, once two consecutive listings (one poll apart; at start-up, one second
  apart) agree: objects still appearing or changing mean an upload is in progress.

Then every object is downloaded (streamed to disk, `DOWNLOAD_CONCURRENCY` at a time), its
size (and MD5, for single-part S3 ETags) checked, the version listed once more and compared
with the listing downloaded from, and only then moved into `versions/`. A failed download
is retried with exponential backoff (`status()` shows it); a listing error keeps every
cached version (so the repository keeps serving them); a version removed from the store
is removed from the cache, and the repository unloads it on the same poll.

Credentials come from each library's usual sources (environment, profile files, instance
roles) or `storage_options`; their values are scrubbed from every message sts shows or logs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger("sts.storage")

# Objects downloaded at once, over every model of the process.
DOWNLOAD_CONCURRENCY = 4
# Backoff after a failed download: 1 s, 2 s, 4 s, ... at most this.
MAX_BACKOFF_SECONDS = 300.0
# At start-up there is no previous listing: list again after this long.
STARTUP_SETTLE_SECONDS = 1.0

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Which extra brings each protocol's fsspec implementation.
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}
EXTRAS |= {"abfss": "azure", "hdfs": "hdfs"}
# storage_options keys whose values are secrets (matched anywhere in the key, any case).
_SECRET_KEY = re.compile(r"secret|token|password|passwd|credential|sas|signature|key", re.I)
_SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_CLIENT_SECRET",
)
# s3fs defaults that keep an unreachable store from stalling a poll for minutes; the
# model's storage_options override them.
_S3_DEFAULTS: dict[str, Any] = {
    "config_kwargs": {
        "connect_timeout": 5,
        "read_timeout": 60,
        "retries": {"max_attempts": 2, "mode": "standard"},
    }
}

_downloads = ThreadPoolExecutor(max_workers=DOWNLOAD_CONCURRENCY, thread_name_prefix="sts-fetch")


def is_url(base_path: str) -> bool:
    """True for `scheme://...` base paths (read through fsspec), False for local paths."""
    return _URL.match(base_path) is not None


def check_url(base_path: str) -> None:
    """Refuse URLs that carry secrets or name a protocol with no installed implementation.

    Raises ValueError (the config layer names the entry): for a password, query or fragment
    in the URL, or a protocol without an installed implementation (naming the extra).
    """
    parts = urlsplit(base_path)
    if parts.password is not None or parts.query or parts.fragment:
        raise ValueError(
            "base_path URL may not carry credentials, a query or a fragment; give them "
            "in the model's storage_options or the environment"
        )
    protocol = parts.scheme.lower()
    try:
        import fsspec

        fsspec.get_filesystem_class(protocol)
    except ImportError:
        extra = EXTRAS.get(protocol)
        hint = f"pip install 'sts[{extra}]'" if extra else "install its fsspec implementation"
        raise ValueError(f"base_path {base_path}: {protocol}:// needs {hint}") from None
    except ValueError:
        raise ValueError(f"base_path {base_path}: unknown protocol {protocol}://") from None


def default_cache_dir() -> Path:
    """Where downloaded models go when `--model_cache_dir` is not set."""
    return Path(tempfile.gettempdir()) / "sts-model-cache"


@dataclass(frozen=True)
class RemoteObject:
    """One listed object: its path relative to the unit, size in bytes, and change token."""

    key: str
    size: int
    token: str


Listing = dict[str, tuple[RemoteObject, ...]]  # unit ("" = root, "7" = version 7) -> objects


@dataclass
class UnitStatus:
    """What the store knows about one version (or the root unit) not yet, or just, cached."""

    state: str = "UPLOADING"  # UPLOADING, DOWNLOADING, RETRYING, CACHED
    error: str = ""
    attempts: int = 0
    retry_at: float = 0.0
    objects: int = 0
    bytes: int = 0
    listing: int = 0  # the store's listing that downloaded it (see `RemoteStore.listings`)

    def view(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "error": self.error,
            "attempts": self.attempts,
            "retry_at": self.retry_at or None,
            "objects": self.objects,
            "bytes": self.bytes,
            "listing": self.listing or None,
        }


@dataclass
class RemoteStore:
    """Mirrors the complete versions under `url` into `cache`. `sync` is called by one
    thread at a time per store (the repository's poll); processes share a cache through
    a file lock."""

    url: str
    cache: Path
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    version_marker: str = ""
    error: str = ""
    listed_at: float | None = None
    listings: int = 0  # successful listings so far
    units: dict[str, UnitStatus] = field(default_factory=dict)
    _previous: Listing | None = None
    _fs: Any = None
    _root: str = ""
    _single_file: str = ""  # the name, when the URL is one object
    _secrets: tuple[str, ...] = ()

    @classmethod
    def open(
        cls, name: str, url: str, storage_options: Mapping[str, Any], marker: str, cache_dir: Path
    ) -> RemoteStore:
        digest = hashlib.sha256(url.encode()).hexdigest()[:12]
        store = cls(url.rstrip("/"), cache_dir / f"{name}-{digest}", storage_options, marker)
        store._secrets = secret_values(storage_options)
        return store

    # ------------------------------------------------------------ the repository's view

    def sync(self) -> Path:
        """List the store, download what became complete, drop what was removed; returns
        the local base path to discover versions in. Never raises: problems go to
        `error` and the units' status, and the cache keeps serving."""
        self.cache.mkdir(parents=True, exist_ok=True)
        with self._locked():
            shutil.rmtree(self.cache / "partial", ignore_errors=True)
            try:
                listing = self._list()
                # Start-up: nothing to compare with. Cached units whose listing still
                # matches are complete; anything else waits for a second listing.
                if (
                    self._previous is None
                    and self.version_marker == ""
                    and any(objs != self._cached(unit) for unit, objs in listing.items())
                ):
                    self._previous = listing
                    time.sleep(STARTUP_SETTLE_SECONDS)
                    listing = self._list()
            except Exception as exc:
                self.error = f"cannot list {self.url}: {self.scrub(_describe(exc))}"
                logger.warning("%s; serving the versions already downloaded", self.error)
                return self.local_base()
            self.error = ""
            self.listed_at = time.time()
            self.listings += 1
            self._apply(listing)
            self._previous = listing
        return self.local_base()

    def local_base(self) -> Path:
        """The folder (or file) the backend's `discover_versions` reads."""
        root = self.cache / "root"
        if root.is_dir() and not self._has_versions():
            single = self._single_file or self._state("").get("single", "")
            return root / single if single else root
        return self.cache / "versions"

    def problem(self) -> str:
        """Why versions may be missing or stale, for the model's status ('' when none)."""
        if self.error:
            return self.error + "; serving the versions already downloaded"
        waiting = [
            f"version {u or 'root'} {s.state.lower()}" + (f": {s.error}" if s.error else "")
            for u, s in sorted(list(self.units.items()))  # a copy: sync may be running
            if s.state != "CACHED"
        ]
        if waiting:
            return f"{self.url}: " + "; ".join(waiting)
        if self.listed_at is not None and not self.units:
            return f"nothing under {self.url}"
        return ""

    def status(self) -> dict[str, Any]:
        """The store's state for the model's status page; holds no secrets."""
        return {
            "url": self.url,
            "cache": str(self.cache),
            "error": self.error,
            "listed_at": self.listed_at,
            "listings": self.listings,
            "version_marker": self.version_marker,
            "versions": {u or "root": s.view() for u, s in sorted(list(self.units.items()))},
        }

    def scrub(self, text: str) -> str:
        """`text` with every known secret value replaced by `***`."""
        for secret in (*self._secrets, *_env_secrets()):
            text = text.replace(secret, "***")
        return text

    # ------------------------------------------------------------ listing

    def _filesystem(self) -> tuple[Any, str]:
        if self._fs is None:
            from fsspec.core import url_to_fs

            options = dict(self.storage_options)
            protocol = urlsplit(self.url).scheme.lower()
            if protocol in ("s3", "s3a"):
                options = _merge(_S3_DEFAULTS, options)
            # Every poll must see the store as it is now: no listings cache, no instance
            # shared with other models (their credentials may differ).
            options.update(use_listings_cache=False, skip_instance_cache=True)
            self._fs, self._root = url_to_fs(self.url, **options)
            self._root = self._root.rstrip("/")
        return self._fs, self._root

    def _list(self) -> Listing:
        fs, root = self._filesystem()
        found: dict[str, dict[str, Any]] = fs.find(root, detail=True)
        units: dict[str, list[RemoteObject]] = {}
        self._single_file = ""
        for name, info in found.items():
            if info.get("type") == "directory" or name.endswith("/"):
                continue
            if name == root:  # the URL is one object: the original's single-file layout
                self._single_file = root.rsplit("/", 1)[-1]
                units[""] = [RemoteObject(self._single_file, _size(info), _token(info))]
                continue
            rel = name[len(root) + 1 :] if name.startswith(root + "/") else name
            head, _, rest = rel.partition("/")
            if head.isdigit() and rest:
                units.setdefault(str(int(head)), []).append(
                    RemoteObject(rest, _size(info), _token(info))
                )
            elif not rest or not head.isdigit():
                units.setdefault("", []).append(RemoteObject(rel, _size(info), _token(info)))
        if any(u for u in units):  # numbered versions exist: other objects are not a model
            units.pop("", None)
        return {u: tuple(sorted(objs, key=lambda o: o.key)) for u, objs in units.items()}

    # ------------------------------------------------------------ reconciling the cache

    def _apply(self, listing: Listing) -> None:
        for unit in self._cached_units():
            if unit not in listing:
                logger.info("%s: version %s removed from the store; dropping it", self.url, unit)
                self._drop(unit)
        for unit in list(self.units):
            if unit not in listing:
                del self.units[unit]
        for unit, objects in listing.items():
            status = self.units.setdefault(unit, UnitStatus())
            status.objects, status.bytes = len(objects), sum(o.size for o in objects)
            if objects == self._cached(unit):
                status.state, status.error = "CACHED", ""
                continue
            if not self._complete(unit, objects):
                status.state = "UPLOADING"
                continue
            if status.retry_at and time.time() < status.retry_at:
                status.state = "RETRYING"
                continue
            status.state = "DOWNLOADING"
            try:
                self._download(unit, objects)
            except Exception as exc:
                status.attempts += 1
                backoff = min(2.0 ** (status.attempts - 1), MAX_BACKOFF_SECONDS)
                status.retry_at = time.time() + backoff
                status.state = "RETRYING"
                status.error = self.scrub(_describe(exc))
                logger.warning(
                    "%s: version %s: download failed (attempt %d, next in %.0fs): %s",
                    self.url,
                    unit or "root",
                    status.attempts,
                    backoff,
                    status.error,
                )
                continue
            logger.info("%s: version %s downloaded to %s", self.url, unit or "root", self.cache)
            self.units[unit] = UnitStatus(
                "CACHED", "", 0, 0.0, status.objects, status.bytes, self.listings
            )

    def _complete(self, unit: str, objects: tuple[RemoteObject, ...]) -> bool:
        if self.version_marker:
            return any(o.key == self.version_marker for o in objects)
        previous = self._previous or {}
        return previous.get(unit) == objects

    def _download(self, unit: str, objects: tuple[RemoteObject, ...]) -> None:
        fs, root = self._filesystem()
        staging = self.cache / "partial" / f"{unit or 'root'}-{uuid.uuid4().hex[:8]}"
        remote = root if self._single_file and unit == "" else f"{root}/{unit}" if unit else root
        staging.mkdir(parents=True)

        def fetch(obj: RemoteObject) -> None:
            source = remote if self._single_file and unit == "" else f"{remote}/{obj.key}"
            target = staging / obj.key
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(source, str(target))  # streamed to disk in chunks by each library
            _verify(target, obj)

        for _ in _downloads.map(fetch, objects):
            pass
        # An upload that went on while we downloaded shows up here: start again later.
        again = self._list().get(unit)
        if again != objects:
            raise IncompleteVersion("objects changed while downloading (upload in progress?)")
        target = self._unit_dir(unit)
        old = self.cache / "partial" / f"old-{uuid.uuid4().hex[:8]}"
        if target.exists():
            target.rename(old)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)
        self._write_state(unit, objects)
        shutil.rmtree(old, ignore_errors=True)

    def _drop(self, unit: str) -> None:
        # The repository unloads the version on this poll; loaded backends hold their
        # model in memory (or keep open files alive), so the files can go now.
        with contextlib.suppress(FileNotFoundError):
            (self.cache / "state" / f"{unit or 'root'}.json").unlink()
        shutil.rmtree(self._unit_dir(unit), ignore_errors=True)

    # ------------------------------------------------------------ cache bookkeeping

    def _unit_dir(self, unit: str) -> Path:
        return self.cache / "versions" / unit if unit else self.cache / "root"

    def _has_versions(self) -> bool:
        versions = self.cache / "versions"
        return versions.is_dir() and any(p.name.isdigit() for p in versions.iterdir())

    def _cached_units(self) -> list[str]:
        units = [""] if (self.cache / "root").is_dir() else []
        versions = self.cache / "versions"
        if versions.is_dir():
            units += [p.name for p in versions.iterdir() if p.name.isdigit()]
        return units

    def _cached(self, unit: str) -> tuple[RemoteObject, ...] | None:
        """The listing a cached unit was downloaded from; None when it is not cached.
        A unit folder without its state file is a half-finished move: removed."""
        folder = self._unit_dir(unit)
        if not folder.is_dir():
            return None
        try:
            objects = self._state(unit)["objects"]
            return tuple(RemoteObject(o["key"], o["size"], o["token"]) for o in objects)
        except (KeyError, TypeError):
            shutil.rmtree(folder, ignore_errors=True)
            return None

    def _state(self, unit: str) -> dict[str, Any]:
        try:
            raw = json.loads((self.cache / "state" / f"{unit or 'root'}.json").read_text())
        except (OSError, ValueError):
            return {}
        return raw if isinstance(raw, dict) else {}

    def _write_state(self, unit: str, objects: tuple[RemoteObject, ...]) -> None:
        state = self.cache / "state"
        state.mkdir(exist_ok=True)
        body = {
            "url": self.url,
            "single": self._single_file if unit == "" else "",
            "objects": [o.__dict__ for o in objects],
        }
        tmp = state / f".{unit or 'root'}.json.tmp"
        tmp.write_text(json.dumps(body))
        tmp.replace(state / f"{unit or 'root'}.json")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.cache / ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class IncompleteVersion(Exception):
    """A version's objects do not match their listing (size, ETag, or the listing moved)."""


def open_store(
    name: str,
    base_path: str,
    storage_options: Mapping[str, Any],
    version_marker: str,
    cache_dir: Path | None,
) -> RemoteStore | None:
    """A store for a URL base path, None for a local one."""
    if not is_url(base_path):
        return None
    return RemoteStore.open(
        name, base_path, storage_options, version_marker, cache_dir or default_cache_dir()
    )


def secret_values(options: Mapping[str, Any]) -> tuple[str, ...]:
    """Every string value under a secret-looking key of `options` (nested too)."""
    found: list[str] = []

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, secret or bool(_SECRET_KEY.search(str(k))))
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v, secret)
        elif secret and isinstance(value, str) and len(value) >= 4:
            found.append(value)

    walk(options, False)
    return tuple(sorted(set(found), key=len, reverse=True))


def _env_secrets() -> list[str]:
    return [v for k in _SECRET_ENV if len(v := os.environ.get(k, "")) >= 4]


def _size(info: Mapping[str, Any]) -> int:
    return int(info.get("size") or info.get("Size") or 0)


def _token(info: Mapping[str, Any]) -> str:
    """What changes when an object is rewritten: ETag (S3, Azure), md5/generation (GCS),
    else the modification time (HDFS, local)."""
    for key in ("ETag", "etag", "md5Hash", "generation", "mtime", "LastModified", "created"):
        if info.get(key) not in (None, ""):
            return str(info[key]).strip('"')
    return ""


def _verify(path: Path, obj: RemoteObject) -> None:
    size = path.stat().st_size
    if size != obj.size:
        raise IncompleteVersion(f"{obj.key}: got {size} bytes, the listing says {obj.size}")
    if re.fullmatch(r"[0-9a-f]{32}", obj.token):  # a single-part S3 ETag is the MD5
        digest = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != obj.token:
            raise IncompleteVersion(f"{obj.key}: content does not match its ETag")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, PermissionError):
        text = f"access denied (check the credentials): {text}"
    return text if len(text) <= 300 else text[:297] + "..."


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
