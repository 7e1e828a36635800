"""`ModelRepository`: models -> versions -> loaded backends, with load-then-swap reloads.

Requests take a *lease* (a `ModelVersion.hold`) on a version; a version leaves the
serving set at once when it is replaced or removed, and is unloaded only after its last
lease is returned, so no request fails during a swap. All filesystem and framework work
happens in the caller's thread (the watcher runs it off the event loop). The version
types live in `sts.versions`, the collector's schedule in `sts.garbage`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sts.backends.artefacts import platform_hint
from sts.backends.base import (
    FRAMEWORK_MODULES,
    Backend,
    backend_class,
    framework_imported,
    import_framework,
)
from sts.errors import (
    ConfigError,
    InvalidInput,
    LabelNotFound,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    StsError,
    VersionNotFound,
    describe_errors,
    shorten,
)
from sts.garbage import garbage_settler
from sts.model_config import ModelConfig
from sts.storage import is_url, open_store
from sts.versions import ModelVersion, ServedModel, VersionState, fingerprint
from sts.warmup import warm_up

logger = logging.getLogger("sts.repository")

# How long an unload waits for in-flight requests before it frees the model anyway.
UNLOAD_DRAIN_SECONDS = 300.0


# The GIL switch interval while a model loads (seconds; Python's default is 0.005). A
# load runs long stretches of Python (TensorFlow restoring and tracing functions, warm-up
# requests) that hold the GIL; a serving thread asking for it waits up to one interval
# each time, several times per request. A shorter interval while loads run bounds that
# wait, at the cost of more switches; it is put back when the last load ends.
LOAD_SWITCH_INTERVAL = 0.001


class _ShortSwitches:
    """`sys.setswitchinterval(LOAD_SWITCH_INTERVAL)` while at least one load runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._saved = sys.getswitchinterval()

    @contextlib.contextmanager
    def during_load(self) -> Iterator[None]:
        with self._lock:
            if self._active == 0:
                self._saved = sys.getswitchinterval()
                sys.setswitchinterval(min(self._saved, LOAD_SWITCH_INTERVAL))
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    sys.setswitchinterval(self._saved)


_short_switches = _ShortSwitches()


def check_configs(configs: Sequence[ModelConfig]) -> None:
    """What a `ModelRepository` checks before it loads anything, without building one: for
    a process that hands the configs to others (ConfigError naming the entry)."""
    _new_models(configs)


def missing_base_paths(configs: Sequence[ModelConfig]) -> list[str]:
    """`model 'name': base path /absolute/path does not exist` for each local base path
    that neither exists nor names a model in another layout (the original's checkpoint
    prefix); URLs are not checked here."""
    missing = []
    for config in configs:
        if is_url(config.base_path):
            continue
        base = Path(config.base_path).absolute()
        if base.exists() or backend_class(config.platform).discover_versions(base):
            continue
        missing.append(f"model {config.name!r}: base path {base} does not exist")
    return missing


def _new_models(configs: Sequence[ModelConfig], cache_dir: Path | None = None) -> list[ServedModel]:
    """A served model per config, its backend options built and checked once (and across
    models, for settings a framework keeps per process); ConfigError naming the entry."""
    models = [_new_model(config, cache_dir) for config in configs]
    by_class: dict[type[Backend[Any]], list[ServedModel]] = {}
    for model in models:
        by_class.setdefault(model.backend_cls, []).append(model)
    for cls, group in by_class.items():
        cls.plan_process([m.options for m in group], [m.name for m in group])
    return models


def _new_model(config: ModelConfig, cache_dir: Path | None = None) -> ServedModel:
    try:
        cls = backend_class(config.platform)
    except ConfigError as exc:
        raise ConfigError(f"model config {config.where}: {exc}") from None
    try:
        options = cls.build_options(config)
    except ValidationError as exc:
        problems = describe_errors(exc.errors())
        raise ConfigError(
            f"model config {config.where}: bad options for {config.platform}: {problems}"
        ) from None
    unused = cls.unused_session_config(config)
    if unused:
        logger.warning(
            "model %r: session_config keys %s mean nothing to platform %s and are not used",
            config.name,
            unused,
            config.platform,
        )
    # A URL base path gets a local mirror (sts/storage.py); `cache_dir` is where.
    store = open_store(
        config.name, config.base_path, config.storage_options, config.version_marker, cache_dir
    )
    return ServedModel(config=config, backend_cls=cls, options=options, store=store)


class ModelRepository:
    """Every served model. Thread-safe; `poll` is called by one thread at a time."""

    def __init__(
        self, configs: Sequence[ModelConfig], load_workers: int = 4, cache_dir: Path | None = None
    ) -> None:
        """Builds every model's backend options first: ConfigError (naming the entry) when
        a platform is unknown or options do not fit, before anything loads. `cache_dir`:
        where URL base paths are mirrored (sts/storage.py)."""
        self._cache_dir = cache_dir
        models = _new_models(configs, cache_dir)
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._models: dict[str, ServedModel] = {}
        self._pending: dict[str, ServedModel] = {}  # changed configs still loading
        self._unloaded: set[str] = set()  # taken out of service by `unload_model`
        self._load_pool = ThreadPoolExecutor(
            max_workers=load_workers, thread_name_prefix="sts-load"
        )
        self._unload_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sts-unload")
        self._unloads: list[Future[None]] = []
        self._unloads_lock = threading.Lock()
        # The running poll's framework imports (FRAMEWORK_MODULES name -> its seconds).
        self._imports: dict[str, Future[float]] = {}
        self._failed_imports: set[str] = set()  # not imported ahead again (loads retry them)
        self._closing = False
        self.ready = threading.Event()
        self.started_at = time.time()
        self._models = {model.name: model for model in models}

    # ------------------------------------------------------------ lookups

    def models(self) -> list[ServedModel]:
        with self._lock:
            return list(self._models.values())

    def model(self, name: Any) -> ServedModel:
        if not isinstance(name, str):
            raise InvalidInput("model_name must be a string")
        with self._lock:
            model = self._models.get(name)
            known = sorted(self._models)
        if model is None:
            raise ModelNotFound(f"model '{shorten(name)}' not found; models: {known}")
        return model

    def is_unloaded(self, name: str) -> bool:
        return name in self._unloaded

    def label_version(self, name: Any, label: str) -> int:
        """The version number a label stands for (even a numeric-looking label)."""
        model = self.model(name)
        try:
            return model.config.version_labels[label]
        except KeyError:
            raise LabelNotFound(
                f"model '{model.name}' has no version label '{shorten(label)}'; "
                f"labels: {sorted(model.config.version_labels)}"
            ) from None

    def resolve(self, name: Any, version: Any = None) -> ModelVersion:
        """The version a request asks for: a number, a numeric string, a label, or None (latest)."""
        model = self.model(name)
        with self._lock:
            return self._resolve_locked(model, version)

    def _resolve_locked(self, model: ServedModel, version: Any) -> ModelVersion:
        if model.name in self._unloaded:
            raise ModelNotReady(_why_not_ready(model, unloaded=True))
        if version is None or version == "":
            latest = model.latest()
            if latest is None:
                raise ModelNotReady(_why_not_ready(model))
            return latest
        number = _version_number(model, version)
        found = model.serving.get(number)
        if found is not None:
            return found
        known = model.versions.get(number)
        if known is not None and known.state in (VersionState.START, VersionState.LOADING):
            raise ModelNotReady(f"model '{model.name}' version {number} is still loading")
        if known is not None and known.error:
            raise ModelNotReady(
                f"model '{model.name}' version {number} failed to load: {known.error}"
            )
        raise VersionNotFound(
            f"model '{model.name}' has no version {number}; "
            f"available versions: {sorted(model.serving)}"
        )

    @contextlib.contextmanager
    def lease(self, name: Any, version: Any = None) -> Iterator[ModelVersion]:
        """Hold a serving version for one request; it is not unloaded while held."""
        model = self.model(name)
        with contextlib.ExitStack() as stack:
            with self._lock:  # resolved and held at once: a swap cannot unload it between
                chosen = self._resolve_locked(model, version)
                stack.enter_context(chosen.hold())
            yield chosen

    # ------------------------------------------------------------ loading

    def load_all(self) -> None:
        """The first load of every model, in parallel; then the repository is ready."""
        try:
            self.poll()
        finally:
            self.ready.set()

    def poll(self) -> None:
        """Look at every model's folder once: load new versions, unload removed ones."""
        with self._poll_lock:
            with self._lock:
                models = [
                    m
                    for m in [*self._models.values(), *self._pending.values()]
                    if m.name not in self._unloaded
                ]
            # Models of a platform without a framework import (the JVM's) first: they start
            # while the imports run.
            models.sort(key=lambda m: m.backend_cls.platform in FRAMEWORK_MODULES)
            self._imports = self._start_imports(models)
            try:
                list(self._load_pool.map(self._reconcile, models))
            finally:
                self._imports = {}
            self._promote_pending()

    def _start_imports(self, models: list[ServedModel]) -> dict[str, Future[float]]:
        """Import, each in its own thread at once, every framework not imported yet of the
        models that have versions to load; each is frozen when its import ends
        (sts/garbage.py). The poll's framework loads wait for all of them: a model that
        loaded during another framework's import would be frozen with it, and its unload
        would need a full settle (0.2-5 s holding the GIL)."""
        wanted: dict[str, type[Backend[Any]]] = {}
        for model in models:
            cls = model.backend_cls
            module = FRAMEWORK_MODULES.get(cls.platform)
            if module is None or module in wanted or module in self._failed_imports:
                continue
            if framework_imported(cls) or not _has_versions(model):
                continue
            wanted[module] = cls
        if not wanted:
            return {}
        pool = ThreadPoolExecutor(max_workers=len(wanted), thread_name_prefix="sts-import")
        try:
            return {
                module: pool.submit(self._import, module, cls) for module, cls in wanted.items()
            }
        finally:
            pool.shutdown(wait=False)

    def _import(self, module: str, cls: type[Backend[Any]]) -> float:
        """The framework's first import in this process (seconds; 0.0 when it failed: the
        load imports it again and names the problem), then its freeze. Imports race other
        imports and the JVM's start, not requests: they keep the default switch interval."""
        with garbage_settler.paused():
            seconds = import_framework(cls)
        if seconds:  # its objects live as long as the process: out of the collector's way
            garbage_settler.freeze_import(module)
        elif not framework_imported(cls):
            self._failed_imports.add(module)
        return seconds

    # ------------------------------------------------------------ explicit control

    def unload_model(self, name: Any) -> None:
        """Take a configured model out of service until `load_model`; polls skip it.
        In-flight requests finish first."""
        model = self.model(name)
        with self._poll_lock, self._lock:
            self._unloaded.add(model.name)
            pending = self._pending.pop(model.name, None)
            self._retire_locked(model)
            if pending is not None:
                self._retire_locked(pending)
        logger.info("model %r unloaded on request", model.name)

    def load_model(self, name: Any) -> ServedModel:
        """Put a model back in service (or re-read its folder now) and wait for the load.
        Raises ModelNotReady when no version could be loaded."""
        model = self.model(name)
        with self._poll_lock:
            self._unloaded.discard(model.name)
            with self._lock:
                # A config change made while unloaded is what gets loaded.
                target = self._pending.get(model.name, model)
            self._reconcile(target)
            self._promote_pending()
        model = self.model(model.name)
        if not model.serving:
            raise ModelNotReady(_why_not_ready(model))
        return model

    def _reconcile(self, model: ServedModel) -> None:
        try:
            self._reconcile_model(model)
        except Exception:  # one broken model must not stop the others from loading
            logger.exception("model %r: reconcile failed", model.name)
        finally:
            model.polled = True

    def _reconcile_model(self, model: ServedModel) -> None:
        # A URL base path: its complete versions are mirrored into a local folder first.
        base = model.store.sync() if model.store is not None else model.base_path
        store_problem = model.store.problem() if model.store is not None else ""
        on_disk = model.backend_cls.discover_versions(base)
        # Said once per change, not once per poll.
        problem = "" if on_disk else model.backend_cls.describe_missing(base)
        if problem and base.exists():  # a model file straight in the base path?
            problem += platform_hint(base, model.config.platform)
        problem = store_problem or problem  # the store's own (listing, downloads) first
        if problem and problem != model.problem and not model.serving:
            logger.warning("model %r: %s", model.name, problem)
        model.problem = problem

        # A version that failed stays failed until its files change.
        failed = {
            v
            for v, mv in model.versions.items()
            if v in on_disk
            and mv.state == VersionState.END
            and mv.error
            and mv.fingerprint is not None
            and mv.fingerprint == fingerprint(on_disk[v])
        }
        wanted = model.config.version_policy.select(set(on_disk) - failed)
        loaded = {
            v: self._load_version(model, v, on_disk[v])
            for v in sorted(wanted)
            if v not in model.serving
        }

        with self._lock:
            candidates = dict(model.serving)
            candidates.update(
                {v: mv for v, mv in loaded.items() if mv.state == VersionState.LOADING}
            )
            keep = model.config.version_policy.select(set(candidates) & set(on_disk))
            new_serving = {v: candidates[v] for v in sorted(keep)}
            removed = [mv for v, mv in model.serving.items() if v not in keep]
            for mv in new_serving.values():
                mv.state = VersionState.AVAILABLE
            for mv in removed:
                mv.state = VersionState.UNLOADING
            # Loaded but not kept (a newer one won the race): never served.
            unused = [mv for v, mv in loaded.items() if v not in keep and mv.backend is not None]
            model.serving = new_serving
            for mv in unused:
                mv.state = VersionState.UNLOADING
            # Forget versions that are gone from disk and no longer in use.
            for v in list(model.versions):
                mv = model.versions[v]
                if v not in on_disk and mv.state == VersionState.END:
                    del model.versions[v]
        for mv in new_serving.values():
            if mv.version in loaded:
                logger.info("model %r: version %d is AVAILABLE", model.name, mv.version)
        for mv in [*removed, *unused]:
            logger.info("model %r: unloading version %d", model.name, mv.version)
            self._schedule_unload(mv)
        self._reload_changed(model, on_disk)

    def _reload_changed(self, model: ServedModel, on_disk: dict[int, Path]) -> None:
        """A serving version whose files changed (a re-export into `1/`, an added
        `signature.json`) is loaded again beside the serving one, then swapped in and the
        old one drained, as a new version is. When the new files fail to load, the old
        ones keep serving and the version shows the error until its files change again."""
        for number, old in sorted(model.serving.items()):
            path = on_disk.get(number)
            if path is None:
                continue
            now = fingerprint(path)
            if now in (old.fingerprint, old.rejected_fingerprint):
                continue
            logger.info(
                "model %r: files of serving version %d changed; loading them beside it",
                model.name,
                number,
            )
            new = self._load_version(model, number, path, replacing=True)
            if new.backend is None:
                old.error = (
                    f"changed files failed to load, still serving the earlier ones: {new.error}"
                )
                old.rejected_fingerprint = new.fingerprint
                continue
            with self._lock:
                if model.serving.get(number) is not old:  # unloaded or replaced meanwhile
                    stale = new
                else:
                    new.state = VersionState.AVAILABLE
                    model.versions[number] = new
                    model.serving = {**model.serving, number: new}
                    old.state = VersionState.UNLOADING
                    stale = old
            if stale is old:
                logger.info(
                    "model %r: version %d reloaded from its changed files", model.name, number
                )
            else:
                stale.state = VersionState.UNLOADING
            self._schedule_unload(stale)

    def _load_version(
        self, model: ServedModel, version: int, path: Path, replacing: bool = False
    ) -> ModelVersion:
        """Load one version; `replacing`: beside the serving one, which stays listed."""
        mv = ModelVersion(model.name, version, path)
        mv.state = VersionState.LOADING
        if not replacing:
            with self._lock:
                model.versions[version] = mv
        logger.info("model %r: loading version %d from %s", model.name, version, path)
        before = fingerprint(path)
        import_seconds = self._wait_imports(model.backend_cls)
        # Freezes from now on may freeze this version's objects (sts/garbage.py).
        mv.freeze_epoch = garbage_settler.epoch
        started = time.perf_counter()
        backend: Backend[Any] | None = None
        changed_while_loading = False
        try:
            with _short_switches.during_load():
                backend = model.backend_cls(path, model.options)
                backend.load()
                signatures = backend.signatures()
                default = backend.default_signature()
                # Before the version serves: a version that cannot answer never does.
                warm_started = time.perf_counter()
                mv.warmup_requests = warm_up(backend, path, signatures, default, model.config.image)
                mv.warmup_seconds = time.perf_counter() - warm_started
            if fingerprint(path) != before:
                changed_while_loading = True
                raise ModelLoadError(
                    "files changed while loading (still being copied?); will retry"
                )
        except Exception as exc:
            message = exc.message if isinstance(exc, StsError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, ModelLoadError):  # another framework's files? name its platform
                message += platform_hint(path, model.config.platform)
            if not isinstance(exc, StsError):
                logger.exception(
                    "model %r version %d: unexpected load failure", model.name, version
                )
            if backend is not None:
                with contextlib.suppress(Exception):
                    backend.unload()
            mv.state = VersionState.END
            mv.error = message
            # A failed version is retried when its files change; one that changed while
            # loading is retried on the next poll, whatever its files look like then.
            mv.fingerprint = None if changed_while_loading else fingerprint(path)
            logger.error("model %r: version %d failed to load: %s", model.name, version, message)
            return mv
        mv.backend = backend
        mv.signatures = signatures
        mv.default_signature = default
        mv.fingerprint = before
        mv.import_seconds = import_seconds
        mv.load_seconds = time.perf_counter() - started
        mv.loaded_at = time.time()
        return mv

    def _wait_imports(self, cls: type[Backend[Any]]) -> float:
        """Before a framework's model loads: the seconds its framework's first import took
        (0.0 once imported). In a poll, after every import the poll started has ended and
        been frozen; a platform without a framework import (the JVM's) does not wait."""
        module = FRAMEWORK_MODULES.get(cls.platform)
        if module is None:
            return 0.0
        imports = self._imports
        for future in imports.values():
            future.result()
        own = imports.get(module)
        if own is not None:
            return own.result()
        return self._import(module, cls)  # outside a poll (load_model), or not foreseen

    def _schedule_unload(self, mv: ModelVersion) -> None:
        future = self._unload_pool.submit(self._unload, mv)
        with self._unloads_lock:
            self._unloads = [f for f in self._unloads if not f.done()]
            self._unloads.append(future)

    def _unload(self, mv: ModelVersion) -> None:
        if not mv.wait_idle(UNLOAD_DRAIN_SECONDS):
            logger.warning(
                "model %r version %d: %d requests still running after %.0fs; unloading anyway",
                mv.model,
                mv.version,
                mv.inflight,
                UNLOAD_DRAIN_SECONDS,
            )
        try:
            if mv.backend is not None:
                mv.backend.unload()
        except Exception:
            logger.exception("model %r version %d: unload failed", mv.model, mv.version)
        mv.backend = None
        if not self._closing:  # a process about to exit needs no collection
            garbage_settler.after_unload(mv.freeze_epoch)  # the model's reference cycles
        mv.state = VersionState.END
        logger.info("model %r: version %d unloaded", mv.model, mv.version)

    # ------------------------------------------------------------ config changes

    def update_configs(self, configs: Sequence[ModelConfig]) -> None:
        """Apply a new model list: add, remove and replace models without a restart.

        A changed model keeps serving with its old config until the new one has a
        version available. ConfigError (and nothing changes) when an entry's platform or
        options are bad.
        """
        built = {m.name: m for m in _new_models(configs, self._cache_dir)}
        with self._lock:
            current = dict(self._models)
        removed = [m for name, m in current.items() if name not in built]
        with self._lock:
            for model in removed:
                del self._models[model.name]
                self._pending.pop(model.name, None)
                self._unloaded.discard(model.name)
            for name, fresh in built.items():
                old = self._models.get(name)
                if old is None:
                    self._models[name] = fresh
                    logger.info("model %r added", name)
                elif not old.config.same_settings(fresh.config):
                    pending = self._pending.get(name)
                    if pending is None or not pending.config.same_settings(fresh.config):
                        self._pending[name] = fresh
                        logger.info("model %r: config changed; loading it beside the old one", name)
                elif name in self._pending:
                    del self._pending[name]  # changed back
        for model in removed:
            logger.info("model %r removed", model.name)
            self._retire(model)

    def _promote_pending(self) -> None:
        with self._lock:
            ready = [m for m in self._pending.values() if m.serving]
            for model in ready:
                old = self._models.get(model.name)
                self._models[model.name] = model
                del self._pending[model.name]
                if old is not None:
                    self._retire_locked(old)
        for model in ready:
            logger.info("model %r: new config is serving", model.name)

    def _retire(self, model: ServedModel) -> None:
        with self._lock:
            self._retire_locked(model)

    def _retire_locked(self, model: ServedModel) -> None:
        versions = list(model.serving.values())
        model.serving = {}
        for mv in versions:
            mv.state = VersionState.UNLOADING
            self._schedule_unload(mv)

    # ------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Unload everything (after in-flight requests) and stop the worker pools; no
        collection after the unloads, and a deferred settle is dropped: the process is
        about to exit."""
        self._closing = True
        garbage_settler.cancel()
        with self._poll_lock:
            with self._lock:
                models = list(self._models.values()) + list(self._pending.values())
                for model in models:
                    self._retire_locked(model)
            self.wait_unloads()
        self._load_pool.shutdown(wait=True)
        self._unload_pool.shutdown(wait=True)

    def wait_unloads(self) -> None:
        """Block until every unload started so far has finished (for tests and shutdown)."""
        with self._unloads_lock:
            pending = list(self._unloads)
        for future in pending:
            future.result()


def _has_versions(model: ServedModel) -> bool:
    """Whether the model may have a version to load (a URL base path: yet unknown, so yes)."""
    if model.store is not None:
        return True
    try:
        return bool(model.backend_cls.discover_versions(model.base_path))
    except Exception:  # the reconcile names the problem
        return False


def _version_number(model: ServedModel, version: Any) -> int:
    if isinstance(version, bool):
        raise InvalidInput("model_version must be an integer or a version label")
    if isinstance(version, int):
        return version
    if isinstance(version, str):
        text = version.strip()
        if text.isdigit():
            return int(text)
        labels = model.config.version_labels
        if text in labels:
            return labels[text]
        raise LabelNotFound(
            f"model '{model.name}' has no version label '{shorten(text)}'; labels: {sorted(labels)}"
        )
    raise InvalidInput("model_version must be an integer or a version label")


def _why_not_ready(model: ServedModel, unloaded: bool = False) -> str:
    if unloaded:
        return f"model '{model.name}' was unloaded through the repository API; load it again"
    loading = [
        mv.version
        for mv in model.versions.values()
        if mv.state in (VersionState.START, VersionState.LOADING)
    ]
    if loading or not model.polled:
        return f"model '{model.name}' is loading"
    failed = [mv for mv in model.version_list() if mv.error]
    if failed:
        last = failed[-1]
        return (
            f"model '{model.name}' has no available version: "
            f"version {last.version} failed to load: {last.error}"
        )
    if model.problem:
        return f"model '{model.name}' has no available version: {model.problem}"
    return f"model '{model.name}' has no available version"
