"""Every model the service serves, the experiments that route among them, and their
replacement without a pause (POST /admin/reload).

The whole set (models file + loaded bundles) is one immutable `ServedModels`, swapped in with
one assignment. A ranking call reads `registry.current` once and keeps it to the end, so a
call in flight finishes on the models it started with; old bundles are freed when the last
such call lets go. New bundles are loaded, validated and warmed up in a thread beside the old
ones, and a reload swaps in only when every one of them loads: all or nothing.

Without MOERANK_MODELS_FILE the set is one bundle (MOERANK_BUNDLE_PATH) named "default".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from contract.models_file import ModelsFile, ModelsFileError, assign, load_models_file
from service import metrics
from service.background_encoder import lower_priority
from service.bundle import Bundle, BundleError
from service.rejections import Rejected
from service.schemas import ReloadRequest
from service.settings import Settings

DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class Source:
    """Where the served set comes from: a models file (or, without one, a single bundle), and
    bundles swapped in by name since it was read. Plain JSON, so other workers can follow."""

    models_file: str | None = None
    bundles: dict[str, str] = field(default_factory=dict)  # name -> path, over the file's

    def to_json(self) -> dict:
        return {"models_file": self.models_file, "bundles": self.bundles}

    @classmethod
    def from_json(cls, data: dict) -> Source:
        return cls(data.get("models_file"), dict(data.get("bundles") or {}))

    def read(self) -> ModelsFile:
        """The models file this source names (ModelsFileError), or the single-bundle one."""
        if self.models_file:
            return load_models_file(self.models_file)
        return ModelsFile.single(Path(self.bundles[DEFAULT_MODEL]), DEFAULT_MODEL)

    def paths(self, file: ModelsFile) -> dict[str, Path]:
        return {name: Path(self.bundles.get(name, path)) for name, path in file.models.items()}


@dataclass(frozen=True)
class Route:
    """What serves one request: the model by its models-file name, and why."""

    model: str
    bundle: Bundle
    experiment: str | None = None
    variant: str | None = None
    unit: str | None = None  # the field whose value was hashed
    shadows: tuple[tuple[str, Bundle], ...] = ()


@dataclass(frozen=True)
class ServedModels:
    source: Source
    file: ModelsFile
    paths: dict[str, Path]
    bundles: dict[str, Bundle]

    @property
    def default_bundle(self) -> Bundle:
        """The bundle a plain request gets (an experiment's first variant): /v1/items embeds
        with its encoder and /v1/models describes it at the top level."""
        default = self.file.default
        if default in self.bundles:
            return self.bundles[default]
        return self.bundles[self.file.experiments[default].variants[0].model]

    def route(self, model: str | None, experiment: str | None, units: dict) -> Route:
        """An explicit `model` wins; else `experiment`, else the file's default. `units` holds
        the request's user_id, session_id and request_id (always set)."""
        if model is not None:
            if model not in self.bundles:
                raise Rejected.one(
                    404, "unknown_model", "model", f"no model {model!r}; {sorted(self.bundles)}"
                )
            return Route(model, self.bundles[model])
        if experiment is not None and experiment not in self.file.experiments:
            raise Rejected.one(
                404,
                "unknown_experiment",
                "experiment",
                f"no experiment {experiment!r}; {sorted(self.file.experiments)}",
            )
        target = experiment or self.file.default
        if target in self.bundles:
            return Route(target, self.bundles[target])
        spec = self.file.experiments[target]
        unit = spec.unit if units.get(spec.unit) is not None else "request_id"
        variant = assign(target, spec, units[unit])
        shadows = tuple((name, self.bundles[name]) for name in spec.shadows)
        return Route(
            variant.model, self.bundles[variant.model], target, variant.name, unit, shadows
        )

    def describe(self) -> dict:
        return {
            "default": self.file.default,
            "models_file": self.source.models_file,
            "models": {
                name: {**bundle.describe(), "bundle_path": str(self.paths[name])}
                for name, bundle in self.bundles.items()
            },
            "experiments": {
                name: spec.model_dump(mode="json") for name, spec in self.file.experiments.items()
            },
        }


def build(
    source: Source,
    load: Callable[[Path], Bundle],
    keep: ServedModels | None = None,
    reload_names: Iterable[str] | None = None,
) -> ServedModels:
    """Load every bundle `source` names (blocking: run it in a thread). With `keep`, a model
    whose path is unchanged and is not in `reload_names` keeps its loaded bundle; a path named
    twice is loaded once. BundleError naming the model if any fails (nothing is swapped)."""
    try:
        file = source.read()
    except ModelsFileError as exc:
        raise BundleError(f"models file: {exc}") from exc
    paths = source.paths(file)
    again = set(reload_names) if reload_names is not None else set(paths)
    loaded: dict[Path, Bundle] = {}
    bundles = {}
    for name, path in paths.items():
        if keep and name not in again and keep.paths.get(name) == path:
            bundles[name] = keep.bundles[name]
            continue
        if path not in loaded:
            try:
                loaded[path] = load(path)
            except BundleError as exc:
                raise BundleError(f"model {name!r} ({path}): {exc}") from exc
            except Exception as exc:  # whatever failed, the old models keep serving
                raise BundleError(f"model {name!r} ({path}): {type(exc).__name__}: {exc}") from exc
        bundles[name] = loaded[path]
    return ServedModels(source, file, paths, bundles)


class ModelRegistry:
    def __init__(self, served: ServedModels, load: Callable[[Path], Bundle]):
        self.current, self._load = served, load
        self._lock = asyncio.Lock()  # one reload at a time; requests never wait on it
        # Reloads load and warm up at nice 19, so the loop's calls keep the CPU: the P99 of
        # calls overlapping a reload went from 3.5x to 1.46x the rest (reload_latency.json).
        self._thread = ThreadPoolExecutor(1, "moerank-reload", initializer=lower_priority)
        _announce(None, served)

    @classmethod
    async def start(cls, source: Source, load: Callable[[Path], Bundle]) -> ModelRegistry:
        return cls(await asyncio.to_thread(build, source, load), load)

    async def reload(
        self, source: Source, reload_names: Iterable[str] | None = None
    ) -> ServedModels:
        """Swap in the set `source` names once every bundle in it loads (`reload_names`: the
        models to load again even if their path is unchanged; None: all). BundleError (old
        set untouched) otherwise."""
        async with self._lock:
            try:
                served = await asyncio.get_running_loop().run_in_executor(
                    self._thread, build, source, self._load, self.current, reload_names
                )
            except BundleError:
                metrics.RELOADS.labels("rejected").inc()
                raise
            old, self.current = self.current, served
            _announce(old, served)
            metrics.RELOADS.labels("ok").inc()
            return served

    def replacing(self, name: str, path: Path | None) -> Source:
        """The current source with model `name` served from `path` (None: its path now, read
        again in place). Rejected if there is no such model."""
        served = self.current
        if name not in served.bundles:
            raise Rejected.one(404, "unknown_model", "model", f"no model {name!r}")
        bundles = {**served.source.bundles, name: str(path or served.paths[name])}
        return replace(served.source, bundles=bundles)


def _announce(old: ServedModels | None, new: ServedModels) -> None:
    fresh = {id(b) for b in new.bundles.values()}
    for bundle in old.bundles.values() if old else ():
        if id(bundle) not in fresh:
            metrics.MODEL_INFO.labels(bundle.name, bundle.version, bundle.encoder_id).set(0)
    for bundle in new.bundles.values():
        metrics.MODEL_INFO.labels(bundle.name, bundle.version, bundle.encoder_id).set(1)


def configured_source(settings: Settings) -> Source:
    """MOERANK_MODELS_FILE, or else MOERANK_BUNDLE_PATH served as model "default"."""
    if settings.models_file:
        return Source(models_file=str(settings.models_file))
    return Source(bundles={DEFAULT_MODEL: str(settings.bundle_path)})


def reload_source(
    registry: ModelRegistry, settings: Settings, payload: ReloadRequest
) -> tuple[Source, list[str] | None, str | None]:
    """What POST /admin/reload asks for: (the source to serve, the models to load again (None:
    all), the model it names). Empty: the configured models file or bundle, all read again."""
    if payload.models_file is not None:
        if payload.model is not None or payload.bundle_path is not None:
            raise Rejected.one(
                422, "invalid_value", "models_file", "a models file replaces every model: "
                "send it without model and bundle_path",
            )  # fmt: skip
        return Source(models_file=payload.models_file), None, None
    name = payload.model
    if name is None and payload.bundle_path is None:
        return configured_source(settings), None, None
    if name is None:
        name = registry.current.file.default
        if name not in registry.current.bundles:
            raise Rejected.one(
                409, "invalid_value", "model", f"the default {name!r} is an experiment: name "
                "the model to replace",
            )  # fmt: skip
    path = Path(payload.bundle_path) if payload.bundle_path else None
    return registry.replacing(name, path), [name], name
