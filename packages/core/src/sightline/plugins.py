"""Plugin discovery and isolation on top of pluggy.

Discovery is through the ``sightline`` entry-point group only. Loading is lazy and idempotent.
A plugin that fails to import, or raises inside a hook, is logged once (logger ``sightline``)
and disabled; the application and the other plugins go on. The built-in processors are the
exception: they are never disabled (redaction must not switch off), and an event one of them
fails on is dropped and counted instead of being exported half processed. ``sightline plugins``
lists them all, failed ones with their error.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from sightline import hookspecs
from sightline.pipeline import log_safely

__all__ = [
    "PluginInfo",
    "PluginManager",
    "get_plugin_manager",
    "register_plugin",
    "unregister_plugin",
]

ENTRY_POINT_GROUP = "sightline"


@dataclass
class PluginInfo:
    """What ``sightline plugins`` shows about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | failed | disabled | builtin
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": list(self.hooks),
            "status": self.status,
            "error": self.error,
        }


class PluginManager:
    """A pluggy manager whose hook calls isolate each plugin from the others."""

    def __init__(self, config: Any = None) -> None:
        self.config = config
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._loaded = False
        self._lock = threading.RLock()
        self._trace = False
        self._failures_logged: set[tuple[str, str]] = set()  # see _failed_answer
        self._impl_cache: dict[str, list[tuple[str, Any]]] = {}
        self._logged_builtin: set[str] = set()  # built-in processors that raised (logged)

    # -- registration -------------------------------------------------------------------------

    def register(self, plugin: Any, name: str, *, status: str = "ok", **info: Any) -> None:
        """Register a plugin object or module under ``name`` (replacing nothing)."""
        with self._lock:
            if self.pm.get_plugin(name) is not None:
                return
            self.pm.register(plugin, name=name)
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            self.infos[name] = PluginInfo(name=name, hooks=hooks, status=status, **info)
            self._impl_cache.clear()

    def unregister(self, name: str) -> None:
        with self._lock:
            plugin = self.pm.get_plugin(name)
            if plugin is not None:
                self.pm.unregister(plugin, name=name)
            self.infos.pop(name, None)
            self._impl_cache.clear()

    def disable(self, name: str, error: BaseException | str) -> None:
        """Unregister a misbehaving plugin, keeping it listed as failed."""
        with self._lock:
            plugin = self.pm.get_plugin(name)
            if plugin is not None:
                self.pm.unregister(plugin, name=name)
            info = self.infos.setdefault(name, PluginInfo(name=name))
            info.status = "failed"
            info.error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            self._impl_cache.clear()

    def load(
        self,
        only: Iterable[str] | None = None,
        disabled: Iterable[str] = (),
        trace: bool = False,
    ) -> None:
        """Discover entry-point plugins once. ``only`` limits which load; ``disabled`` excludes."""
        with self._lock:
            self._trace = self._trace or trace or _env_flag("SIGHTLINE_TRACE_PLUGINS")
            if self._loaded:
                return
            self._loaded = True
            from sightline import builtins

            builtins.register(self, self.config)
            for name, plugin in list(_REGISTERED.items()):
                self.register(plugin, name, status="ok")
            only_set = set(only) if only is not None else None
            disabled_set = set(disabled) | set(_env_list("SIGHTLINE_DISABLE_PLUGINS"))
            entry_points = list(_entry_points())
            for entry_point in entry_points:
                self._load_entry_point(entry_point, only_set, disabled_set)
            if only_set:
                installed = sorted({entry_point.name for entry_point in entry_points})
                known = {*installed, *_REGISTERED, *self.infos}
                for unknown in sorted(only_set - known):
                    log_safely(
                        logging.WARNING,
                        "sightline: plugins= (init() / Client()) names %r, which is no "
                        "installed plugin; installed: %s",
                        unknown,
                        ", ".join(installed) or "none",
                    )

    def _load_entry_point(
        self, entry_point: Any, only: set[str] | None, disabled: set[str]
    ) -> None:
        name = entry_point.name
        dist = getattr(entry_point, "dist", None)
        meta: dict[str, Any] = {
            "distribution": getattr(dist, "name", None),
            "version": getattr(dist, "version", None),
        }
        if name in disabled or (only is not None and name not in only):
            self.infos[name] = PluginInfo(name=name, status="disabled", **meta)
            return
        if self.pm.get_plugin(name) is not None:
            return
        try:
            plugin = entry_point.load()
        except Exception as exc:
            log_safely(
                logging.ERROR,
                "sightline: plugin %r failed to import and is disabled: %s",
                name,
                exc,
            )
            self.infos[name] = PluginInfo(
                name=name, status="failed", error=f"{type(exc).__name__}: {exc}", **meta
            )
            return
        try:
            self.register(plugin, name, **meta)
        except Exception as exc:
            log_safely(logging.ERROR, "sightline: plugin %r could not be registered: %s", name, exc)
            self.infos[name] = PluginInfo(
                name=name, status="failed", error=f"{type(exc).__name__}: {exc}", **meta
            )

    # -- calling ------------------------------------------------------------------------------

    def implementations(self, hook_name: str) -> list[tuple[str, Any]]:
        """(plugin name, function) pairs of a hook, in call order: pluggy's (tryfirst first),
        except that the built-in processors come before every plugin's processor.

        A plugin's processor sees an event only once it is redacted, whatever the plugin
        declares (``tryfirst=True`` puts it first among plugins, not before the redaction)."""
        cached = self._impl_cache.get(hook_name)
        if cached is not None:
            return cached
        with self._lock:
            caller = getattr(self.pm.hook, hook_name)
            impls = [
                (self.pm.get_name(impl.plugin) or "?", impl.function)
                for impl in reversed(caller.get_hookimpls())
            ]
            if hook_name == "sightline_process_event":
                builtin = [pair for pair in impls if self._is_builtin(pair[0])]
                impls = builtin + [pair for pair in impls if not self._is_builtin(pair[0])]
                self._processors_changed(impls)
            self._impl_cache[hook_name] = impls
            return impls

    def _is_builtin(self, name: str) -> bool:
        info = self.infos.get(name)
        return info is not None and info.status == "builtin"

    def _processors_changed(self, impls: list[tuple[str, Any]]) -> None:
        """Tell the built-in redaction whether values it finds clean may be kept uncopied:
        only while every processor is a built-in one (none of which edits values in place)."""
        only_builtin = all(self._is_builtin(name) for name, _ in impls)
        for name, _ in impls:
            share = getattr(self.pm.get_plugin(name), "share_clean_values", None)
            if callable(share):
                share(only_builtin)

    def call(
        self,
        hook_name: str,
        firstresult: bool = False,
        accept: Callable[[Any], Any] | None = None,
        accepts: str = "",
        on_failure: Callable[[str, str], Any] | None = None,
        on_failure_says: str = "its answer is replaced",
        **kwargs: Any,
    ) -> Any:
        """Call every implementation; a raising plugin is logged once and disabled.

        ``accept`` turns each answer other than ``None`` into the result, and raises for an
        answer outside the hook's contract: that plugin is then broken, not answering, and is
        logged once and disabled like one that raises (``accepts`` says what was expected).

        ``on_failure(plugin name, what went wrong)``, when given, is what a plugin that raises
        or answers outside the contract answers instead, and the plugin stays enabled: a
        failure is logged at error level once per plugin (with ``on_failure_says``), later
        ones at debug level (governance: a policy that fails denies the call it failed on, see
        :func:`sightline.governance.authorize`).
        """
        results = []
        for name, function in self.implementations(hook_name):
            if self._trace:
                _trace_print(f"sightline: {hook_name} → {name}")
            try:
                result = function(**kwargs)
            except Exception as exc:
                if on_failure is not None:
                    result = self._failed_answer(
                        name,
                        hook_name,
                        f"{type(exc).__name__}: {exc}",
                        on_failure,
                        on_failure_says,
                    )
                else:
                    log_safely(
                        logging.ERROR,
                        "sightline: plugin %r raised in %s and is disabled: %s: %s",
                        name,
                        hook_name,
                        type(exc).__name__,
                        exc,
                    )
                    self.disable(name, exc)
                    continue
            else:
                if result is not None and accept is not None:
                    try:
                        result = accept(result)
                    except Exception as exc:  # TypeError, or whatever a hostile answer raised
                        message = (
                            str(exc)
                            if isinstance(exc, TypeError)
                            else f"{type(exc).__name__}: {exc}"
                        )
                        if on_failure is not None:
                            result = self._failed_answer(
                                name, hook_name, message, on_failure, on_failure_says
                            )
                        else:
                            log_safely(
                                logging.ERROR,
                                "sightline: plugin %r is disabled: %s%s",
                                name,
                                message,
                                accepts,
                            )
                            self.disable(name, message)
                            continue
            if result is not None:
                if firstresult:
                    return result
                results.append(result)
        return None if firstresult else results

    def _failed_answer(
        self,
        name: str,
        hook_name: str,
        problem: str,
        on_failure: Callable[[str, str], Any],
        says: str,
    ) -> Any:
        """What plugin ``name``, which failed in ``hook_name``, answers: ``on_failure``'s
        answer. Logged at error level the first time for this plugin and hook."""
        first = (name, hook_name) not in self._failures_logged
        if first:
            self._failures_logged.add((name, hook_name))
        log_safely(
            logging.ERROR if first else logging.DEBUG,
            "sightline: plugin %r failed in %s: %s; %s. It stays enabled (further failures of "
            "it are logged at debug level)",
            name,
            hook_name,
            problem,
            says,
        )
        return on_failure(name, problem)

    def process_event(self, event: Any) -> bool:
        """Run every ``sightline_process_event``; False when one of them drops the event."""
        keep = True
        for name, function in self.implementations("sightline_process_event"):
            if self._trace:
                _trace_print(f"sightline: sightline_process_event → {name} (event {event.name!r})")
            try:
                if function(event=event) is False:
                    keep = False
                    break
            except Exception as exc:
                info = self.infos.get(name)
                if info is not None and info.status == "builtin":
                    self._builtin_failed(name, exc)
                    from sightline.pipeline import ProcessingFailed

                    raise ProcessingFailed(name) from None
                log_safely(
                    logging.ERROR,
                    "sightline: plugin %r raised in sightline_process_event and is disabled: "
                    "%s: %s",
                    name,
                    type(exc).__name__,
                    exc,
                )
                self.disable(name, exc)
        return keep

    def _builtin_failed(self, name: str, exc: Exception) -> None:
        """A built-in processor raised: the event may be unredacted, so the pipeline drops and
        counts it (:class:`ProcessingFailed`), and the processor stays on for the next events.
        Logged once per processor, by exception type only (its message may quote the event's
        content)."""
        with self._lock:
            first = name not in self._logged_builtin
            self._logged_builtin.add(name)
        if first:
            log_safely(
                logging.ERROR,
                "sightline: built-in processor %r raised %s on an event; the event is dropped, "
                "not exported unprocessed, and the processor stays on (such events are counted "
                "in client.stats()['processor_errors'])",
                name,
                type(exc).__name__,
            )

    def list(self) -> list[PluginInfo]:
        return sorted(self.infos.values(), key=lambda info: (info.status != "builtin", info.name))


def _trace_print(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _entry_points() -> list[Any]:
    from importlib.metadata import entry_points

    try:
        return list(entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:  # a broken environment must not break the application
        log_safely(logging.ERROR, "sightline: could not read entry points: %s", exc)
        return []


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str) -> list[str]:
    return [p.strip() for p in os.environ.get(name, "").split(",") if p.strip()]


_REGISTERED: dict[str, Any] = {}


def register_plugin(plugin: Any, name: str) -> None:
    """Register a plugin object for every client created from now on (no entry point needed).

    Useful in applications, notebooks and tests; packaged plugins use the ``sightline``
    entry-point group instead. The running global client sees it too.
    """
    _REGISTERED[name] = plugin
    from sightline.client import _GLOBAL

    if _GLOBAL is not None and _GLOBAL._plugins is not None:
        _GLOBAL._plugins.register(plugin, name)


def unregister_plugin(name: str) -> None:
    """Undo :func:`register_plugin` (also on the running global client)."""
    _REGISTERED.pop(name, None)
    from sightline.client import _GLOBAL

    if _GLOBAL is not None and _GLOBAL._plugins is not None:
        _GLOBAL._plugins.unregister(name)


def get_plugin_manager(config: Any = None) -> PluginManager:
    """A loaded plugin manager for ``config`` (each client owns one; the CLI makes its own)."""
    if config is None:
        from sightline.config import Config

        config = Config.resolve()
    manager = PluginManager(config)
    manager.load(only=config.plugins, disabled=config.disable_plugins, trace=config.trace_plugins)
    return manager
