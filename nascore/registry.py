"""Plugin loading and the component registry.

Discovery is lazy and idempotent (:func:`get_registry`): nascore's own built-ins
(:data:`nascore.builtin.DEFAULT_PLUGINS`) are registered by module, then every entry point of the
group ``nascore`` is loaded in *our own* loop, so one plugin that fails to import, fails pluggy's
validation or raises in a hook is recorded as a :class:`PluginFailure` and the rest keep working.

Switches (environment):

* ``NASCORE_LOAD_PLUGINS`` — comma-separated allow-list of distributions or entry-point names;
  empty string = built-ins only (what the core's own tests use).
* ``NASCORE_DISABLE_PLUGINS`` — comma-separated block-list.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata as md
import os
import sys
import traceback
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pluggy
from pydantic import BaseModel, ConfigDict, ValidationError

from nascore import hookspecs
from nascore._version import __version__
from nascore.config import format_pydantic
from nascore.errors import ConfigError, NascoreError, PluginError, UnknownComponent
from nascore.hookspecs import Register, hookimpl

__all__ = ["Component", "NoOptions", "PluginFailure", "PluginInfo", "Register", "Registry", "build_registry",
           "get_registry", "hookimpl", "plugin_error_of", "set_registry"]

ENTRY_POINT_GROUP = "nascore"


class NoOptions(BaseModel):
    """Options model of components that take none."""

    model_config = ConfigDict(extra="forbid")


@attrs.frozen
class Component:
    """A registered component: what it is, how to build it, and who registered it."""

    role: str
    name: str
    factory: Any
    config: type[BaseModel]
    summary: str
    plugin: str
    dist: str
    version: str

    def build(self, options: BaseModel | dict | None, ctx: Any) -> Any:
        try:
            cfg = options if isinstance(options, BaseModel) else self.config.model_validate(options or {})
        except ValidationError as e:
            raise ConfigError(format_pydantic(e, prefix="options"), source=f"{self.role} {self.name!r}") from None
        try:
            obj = self.factory(cfg, ctx)
        except Exception as e:  # noqa: BLE001 - any error from plugin code is reported with its name
            if isinstance(e, NascoreError):
                raise
            raise PluginError(
                f"{self.role} {self.name!r} from plugin {self.dist!r} failed to build: {type(e).__name__}: {e}"
                f"{_where(e)}"
            ) from e
        return obj

    @property
    def label(self) -> str:
        """``trainer 'spos' from plugin 'nascore-spos' 0.1.0``: how errors name the component."""
        return f"{self.role} {self.name!r} from plugin {self.dist!r} {self.version}"


@attrs.frozen
class PluginFailure:
    """A plugin that could not be loaded or whose hook raised (shown by ``nascore plugins``)."""

    plugin: str
    dist: str
    version: str
    phase: str
    error: str


@attrs.frozen
class PluginInfo:
    name: str
    dist: str
    version: str
    entry_point: str
    builtin: bool


class Registry:
    """Components by role and name, the plugins they came from, and plugin failures."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("nascore")
        self.pm.add_hookspecs(hookspecs)
        self.components: dict[str, dict[str, Component]] = {r: {} for r in hookspecs.ROLES}
        self.plugins: list[PluginInfo] = []
        self.failures: list[PluginFailure] = []
        self.skipped: list[tuple[Any, str, str]] = []  # (entry point, distribution, why): not loaded on purpose
        self._roots: list[tuple[str, PluginInfo]] = []  # where each non-built-in plugin's code lives

    # -- loading -----------------------------------------------------------------------------
    def add_plugin(self, module: Any, info: PluginInfo) -> bool:
        """Register a module (or object) of hookimpls and collect its components."""
        try:
            self.pm.register(module, name=info.name)
        except Exception as e:  # noqa: BLE001
            self.failures.append(PluginFailure(info.name, info.dist, info.version, "validate", _one_line(e)))
            return False
        before = {r: dict(c) for r, c in self.components.items()}
        for role, hook in hookspecs.ROLES.items():
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                if impl.plugin_name != info.name:
                    continue
                try:
                    impl.function(register=self._register_fn(role, info))
                except Exception as e:  # noqa: BLE001
                    self.components = before
                    self.pm.unregister(name=info.name)
                    self.failures.append(
                        PluginFailure(info.name, info.dist, info.version, f"{hook}", _one_line(e))
                    )
                    return False
        self.plugins.append(info)
        root = None if info.builtin else _code_root(module)
        if root is not None:
            self._roots.append((root, info))
        return True

    # -- errors from plugin code ---------------------------------------------------------------
    def blame(self, exc: BaseException, active: Iterable[Component] = (),
              doing: str | Callable[[], str] = "") -> PluginError | None:
        """A :class:`PluginError` naming the plugin (distribution) and component whose code raised
        ``exc`` (the innermost frame of the traceback inside a non-built-in plugin), or None when no
        plugin code is on the traceback (then it is nascore's own error).

        ``active`` are the components in use (the run's); among a plugin's components the one whose
        factory is defined in the raising file is named, else the plugin's first active one.
        """
        if isinstance(exc, NascoreError) or not self._roots:
            return None
        frames = traceback.extract_tb(exc.__traceback__)
        for frame in reversed(frames):
            path = os.path.realpath(frame.filename)
            for root, info in self._roots:
                if path == root or path.startswith(root + os.sep):
                    comp = self._component_of(info, path, list(active))
                    who = comp.label if comp is not None else f"plugin {info.dist!r} {info.version}"
                    here = f" (at {_short(frame.filename)}:{frame.lineno} in {frame.name})"
                    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
                    doing = doing() if callable(doing) else doing
                    return PluginError(
                        f"{who} raised {type(exc).__name__}: {text}{here}" + (f" while {doing}" if doing else ""),
                        hint=f"this is an error in the plugin {info.dist!r}, not in nascore: report it to its authors "
                             f"(`nascore --debug …` shows the traceback), or leave it out with "
                             f"NASCORE_DISABLE_PLUGINS={info.name}",
                    )
        return None

    def _component_of(self, info: PluginInfo, path: str, active: list[Component]) -> Component | None:
        mine = [c for c in active if c.plugin == info.name]
        every = [c for comps in self.components.values() for c in comps.values() if c.plugin == info.name]
        for pool in (mine, every):
            for c in pool:
                if _defined_in(c.factory) == path:
                    return c
        return mine[0] if mine else (every[0] if len(every) == 1 else None)

    @contextlib.contextmanager
    def guard(self, active: Iterable[Component] = (), doing: str | Callable[[], str] = "") -> Iterator[None]:
        """Name the plugin and component on an exception raised by plugin code.

        The exception itself propagates unchanged (its type is what a caller or a test catches); it
        carries the :class:`PluginError` the CLI prints (:func:`plugin_error_of`) and, as a note in
        its traceback, the same words.
        """
        try:
            yield
        except Exception as e:
            if plugin_error_of(e) is None:
                err = self.blame(e, active, doing)
                if err is not None:
                    e.nascore_plugin_error = err  # type: ignore[attr-defined]
                    if hasattr(e, "add_note"):
                        e.add_note(f"nascore: {str(err).splitlines()[0]}")
            raise

    def _register_fn(self, role: str, info: PluginInfo) -> Register:
        def register(name: str, factory: Any, config: type[BaseModel] | None = None, summary: str = "") -> None:
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin {info.dist!r} registered a {role} with an invalid name {name!r}")
            existing = self.components[role].get(name)
            if existing is not None:
                raise PluginError(
                    f"{role} {name!r} is registered by both {existing.dist!r} and {info.dist!r}",
                    hint="uninstall one of them or block it with NASCORE_DISABLE_PLUGINS",
                )
            if role != "recipe":
                if config is None:
                    config = NoOptions
                if not (isinstance(config, type) and issubclass(config, BaseModel)):
                    raise PluginError(f"{role} {name!r}: config must be a pydantic BaseModel subclass, got {config!r}")
                if not callable(factory):
                    raise PluginError(f"{role} {name!r}: factory is not callable")
            self.components[role][name] = Component(
                role, name, factory, config or NoOptions, summary or _summary_of(factory), info.name, info.dist, info.version
            )

        return register

    # -- lookup ------------------------------------------------------------------------------
    def get(self, role: str, name: str) -> Component:
        comps = self.components[role]
        if name in comps:
            return comps[name]
        failed = [f for f in self.failures]
        msg = f"no {role} named {name!r}"
        close = difflib.get_close_matches(name, list(comps), n=1)
        if close:
            msg += f"; did you mean {close[0]!r}?"
        hint = f"installed {role}s: {', '.join(sorted(comps)) or '(none)'} (see `nascore plugins`)"
        if failed:
            hint += "; failed plugins: " + ", ".join(f"{f.dist} ({f.error})" for f in failed)
        disabled = self._disabled_provider(role, name)
        if disabled is not None:
            dist, why = disabled
            msg = f"{role} {name!r} comes from plugin {dist!r}, which is disabled ({why})"
            hint = (f"enable it: remove {dist} from NASCORE_DISABLE_PLUGINS" if why.startswith("NASCORE_DISABLE")
                    else f"enable it: add {dist} to NASCORE_LOAD_PLUGINS (or unset it)") + "; see `nascore plugins`"
        raise UnknownComponent(msg, hint=hint)

    def _disabled_provider(self, role: str, name: str) -> tuple[str, str] | None:
        """(distribution, why) of a plugin left out on purpose that would register ``role`` ``name``."""
        for ep, dist, why in self.skipped:
            try:  # only on this error path: load it into a scratch registry to see what it provides
                scratch = Registry()
                scratch.add_plugin(ep.load(), PluginInfo(ep.name, dist, "?", getattr(ep, "value", ""), False))
            except Exception:  # noqa: BLE001 - a broken disabled plugin just does not count
                continue
            if name in scratch.components.get(role, {}):
                return dist, why
        return None

    def names(self, role: str) -> list[str]:
        return sorted(self.components[role])

    def by_plugin(self, plugin: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for role, comps in self.components.items():
            names = sorted(n for n, c in comps.items() if c.plugin == plugin)
            if names:
                out[role] = names
        return out


def plugin_error_of(exc: BaseException) -> PluginError | None:
    """The :class:`PluginError` :meth:`Registry.guard` attached to ``exc`` (None when no plugin raised it)."""
    err = getattr(exc, "nascore_plugin_error", None)
    return err if isinstance(err, PluginError) else None


def _code_root(module: Any) -> str | None:
    """The folder of the top-level package ``module`` (or an object of hookimpls) belongs to; the
    module's own file when it is no package."""
    name = module.__name__ if isinstance(module, types.ModuleType) else getattr(module, "__module__", None)
    if not isinstance(name, str):
        return None
    for candidate in (sys.modules.get(name.split(".")[0]), sys.modules.get(name)):
        path = getattr(candidate, "__file__", None)
        if path:
            p = Path(os.path.realpath(path))
            return str(p.parent) if p.name == "__init__.py" else str(p)
    return None


def _defined_in(obj: Any) -> str | None:
    mod = sys.modules.get(getattr(obj, "__module__", "") or "")
    path = getattr(mod, "__file__", None)
    return os.path.realpath(path) if path else None


def _short(path: str) -> str:
    parts = Path(path).parts
    return str(Path(*parts[-2:])) if len(parts) >= 2 else path


def _where(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    return f" (at {_short(tb[-1].filename)}:{tb[-1].lineno} in {tb[-1].name})" if tb else ""


def _summary_of(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _one_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return text[0] if text else type(e).__name__


def _csv_env(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {v.strip() for v in value.split(",") if v.strip()}


def _nascore_version() -> str:
    try:
        return md.version("nascore")
    except md.PackageNotFoundError:
        return __version__


def entry_points() -> Iterable[md.EntryPoint]:
    return md.entry_points(group=ENTRY_POINT_GROUP)


def build_registry(load_entry_points: bool = True, extra: Iterable[tuple[Any, str]] = ()) -> Registry:
    """A fresh registry: built-ins, then entry points (each failure kept apart), then ``extra``."""
    from nascore.builtin import DEFAULT_PLUGINS

    reg = Registry()
    version = _nascore_version()
    for modname in DEFAULT_PLUGINS:
        module = importlib.import_module(modname)
        reg.add_plugin(module, PluginInfo(modname, "nascore", version, modname, True))
    allow = _csv_env("NASCORE_LOAD_PLUGINS")
    block = _csv_env("NASCORE_DISABLE_PLUGINS") or set()
    if load_entry_points:
        seen: set[str] = set()
        for ep in entry_points():
            dist = ep.dist.name if ep.dist is not None else ep.name
            dver = ep.dist.version if ep.dist is not None else "?"
            if ep.name in seen:
                continue
            seen.add(ep.name)
            if allow is not None and ep.name not in allow and dist not in allow:
                reg.skipped.append((ep, dist, f"not in NASCORE_LOAD_PLUGINS={os.environ.get('NASCORE_LOAD_PLUGINS', '')}"))
                continue
            if ep.name in block or dist in block:
                reg.skipped.append((ep, dist, f"NASCORE_DISABLE_PLUGINS={os.environ.get('NASCORE_DISABLE_PLUGINS', '')}"))
                continue
            try:
                module = ep.load()
            except BaseException as e:  # noqa: BLE001 - SystemExit from a plugin must not kill the CLI
                if isinstance(e, KeyboardInterrupt):
                    raise
                reg.failures.append(PluginFailure(ep.name, dist, dver, "import", _one_line(e)))
                continue
            reg.add_plugin(module, PluginInfo(ep.name, dist, dver, ep.value, False))
    for module, name in extra:
        reg.add_plugin(module, PluginInfo(name, name, "0", name, False))
    return reg


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = build_registry()
    return _REGISTRY


def set_registry(reg: Registry | None) -> None:
    """Replace the process-wide registry (tests); ``None`` rebuilds it on next use."""
    global _REGISTRY
    _REGISTRY = reg


