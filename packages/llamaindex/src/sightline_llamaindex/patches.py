"""The few LlamaIndex methods the adapter wraps, from ``instrument()`` to ``uninstrument()``.

Recording needs no patch: LlamaIndex's dispatcher reports its spans and events. Two things it
does not report do:

- a tool about to run, with its arguments: governance asks the ``sightline_authorize_tool``
  plugins then (:mod:`sightline_llamaindex.governance`), in the methods that run a tool;
- a workflow step suspending itself until an event arrives: ``Context.wait_for_event`` raises
  ``WaitingForEvent``, which LlamaIndex's step runner catches before the step's span ends (the
  span ends as if the step had returned nothing); the wrapper tells the handlers.

The tools governed are every subclass of LlamaIndex's ``BaseTool``:

- ``FunctionTool``, ``QueryEngineTool`` and ``RetrieverTool`` by name (their ``call`` and
  ``acall``, listed by :func:`patched_methods`), when their module is imported;
- every other one, LlamaIndex's (``QueryPlanTool``, ``OnDemandLoaderTool``...) and yours, by the
  ``call``, ``acall`` and ``__call__`` it implements itself, and those it inherits from a class
  that is no tool (a mixin: LlamaIndex makes no span of them, and no governed class holds them),
  by a wrapper put on the tool class itself (all listed by :func:`governed_tool_methods`): the
  classes that exist when ``llama_index.core.tools.types`` is imported (or at once, if it is),
  and each class made afterwards, from a ``BaseTool.__init_subclass__`` the adapter adds. That
  is the moment LlamaIndex itself makes those methods spans
  (``DispatcherSpanMixin.__init_subclass__``), so every tool method that has a span of its own
  is governed. The classes of ``llama_index.core.tools.types`` are not:
  ``AsyncBaseTool.__call__`` calls ``call``, and ``BaseToolAsyncAdapter`` (which agents put
  around a tool without ``acall``) calls the tool it adapts, governed itself.

A tool object asks once per call: inside a governed method of a tool, the governed methods of
that same tool run without asking again (``acall`` calling ``call``, an override calling
``super().call()``); another tool called from it asks for itself.

``RouterQueryEngine`` and ``SubQuestionQueryEngine`` keep only the engines of the
``QueryEngineTool`` they are given and query them themselves, so no tool method runs: their
``_query`` / ``_aquery`` are wrapped (listed by :func:`governed_engine_methods`) to query each
engine they choose as a call of its tool, asked first, in a tool span of its own.

Each method is wrapped when its module is imported (:func:`sightline.imports.when_imported`:
instrumenting does not import LlamaIndex) and restored by :func:`remove`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from types import FunctionType, ModuleType
from typing import Any

from sightline.imports import PostImportHook, when_imported
from sightline.logs import log_safely
from sightline_llamaindex import governance
from sightline_llamaindex.mapping import query_text

__all__ = [
    "client",
    "governed_engine_methods",
    "governed_tool_methods",
    "install",
    "patched_methods",
    "remove",
]


_lock = threading.RLock()  # re-entrant: when_imported() calls back at once for loaded modules
_wanted = False
_client: Any = None
_watcher: PostImportHook | None = None
# (class, method) -> (the original attribute, our wrapper): the methods wrapped by name
_applied: dict[tuple[type, str], tuple[Any, Any]] = {}
# The wrappers put on other tool classes, each with whether it stands for an inherited method (the
# class had no such attribute of its own: removing the wrapper restores it). A class holds its
# wrapper, which holds the original (``__wrapped__``); weak, so that a tool class made and dropped
# while instrumented is freed.
_tool_wrappers: weakref.WeakKeyDictionary[Callable[..., Any], bool] = weakref.WeakKeyDictionary()
# (BaseTool, its own ``__init_subclass__`` before ours or _ABSENT, ours), while installed
_subclass_hook: tuple[type, Any, Any] | None = None
_ABSENT = object()
# The tool object whose governed method is running in this context (it asked already).
_governing: ContextVar[Any] = ContextVar("sightline_llamaindex_governing", default=None)
# The query a router hands the engine of a tool it chose, while that tool call is asked.
_routed_query: ContextVar[Any] = ContextVar("sightline_llamaindex_routed_query", default=None)
# What ``dispatcher.span`` marks the function it made a span of with.
_SPAN_MARK = "__dispatcher_span_decorated__"


def install(client: Any = None) -> None:
    """Wrap the methods (now for the modules already imported, else when they are; idempotent:
    again, only the client changes). ``client``: the Sightline client whose governance plugins
    decide; ``None``, the global one at the time of each tool call."""
    global _wanted, _client, _watcher
    with _lock:
        _client = client
        if _wanted:
            return
        _wanted = True
        _watcher = when_imported([*_PATCHES, _TOOL_TYPES], _on_import)


def remove() -> None:
    """Restore every method :func:`install` wrapped, and ``BaseTool.__init_subclass__``
    (idempotent)."""
    global _wanted, _client, _watcher
    with _lock:
        _wanted = False
        _client = None
        watcher, _watcher = _watcher, None
        applied = list(_applied.items())
        _applied.clear()
        _remove_subclass_hook()
    if watcher is not None:
        watcher.cancel()
    for (owner, attribute), (original, wrapper) in applied:
        if owner.__dict__.get(attribute) is wrapper:  # unless someone wrapped it after us
            setattr(owner, attribute, original)


def client() -> Any:
    """The client given to :func:`install` (``None``: the global one)."""
    return _client


def patched_methods() -> list[str]:
    """``Class.method`` of each tool method currently wrapped by name: LlamaIndex's
    ``FunctionTool``, ``QueryEngineTool`` and ``RetrieverTool`` (``call``, ``acall``), and
    ``Context.wait_for_event``. The other tool classes are listed by
    :func:`governed_tool_methods`, the query engines that run their tools' engines themselves by
    :func:`governed_engine_methods`."""
    with _lock:
        return sorted(
            f"{owner.__name__}.{attribute}"
            for owner, attribute in _applied
            if attribute not in _ENGINE_METHODS
        )


def governed_engine_methods() -> list[str]:
    """``Class.method`` of each query engine method currently wrapped so that the engines of
    the ``QueryEngineTool`` it was given ask as those tools: ``RouterQueryEngine`` and
    ``SubQuestionQueryEngine`` (``_query``, ``_aquery``)."""
    with _lock:
        return sorted(
            f"{owner.__name__}.{attribute}"
            for owner, attribute in _applied
            if attribute in _ENGINE_METHODS
        )


def governed_tool_methods() -> list[str]:
    """``Class.method`` of each method of another ``BaseTool`` subclass currently governed (the
    ``call``, ``acall`` and ``__call__`` it implements itself; yours, or LlamaIndex's
    ``QueryPlanTool.__call__``...)."""
    with _lock:
        base = _subclass_hook[0] if _subclass_hook is not None else None
        if base is None:
            return []
        return sorted(
            f"{cls.__name__}.{attribute}"
            for cls in _subclasses(base)
            for attribute in _TOOL_CLASS_METHODS
            if _is_tool_wrapper(cls.__dict__.get(attribute))
        )


def _on_import(name: str, module: ModuleType) -> None:
    with _lock:
        if not _wanted:
            return
        for class_name, attributes, wrap in _PATCHES.get(name, ()):
            owner = getattr(module, class_name, None)
            if isinstance(owner, type):
                for attribute in attributes:
                    _patch(owner, attribute, wrap)
        if name == _TOOL_TYPES:
            base = getattr(module, "BaseTool", None)
            if isinstance(base, type):
                # bases first (a shorter MRO), as when the classes were made: a class then sees
                # the wrappers its tool bases got, and governs only what is not governed yet
                for cls in sorted(_subclasses(base), key=lambda cls: len(cls.__mro__)):
                    _govern_tool_class(cls)
                _add_subclass_hook(base)


def _patch(owner: type, attribute: str, wrap: _Wrap) -> None:
    if (owner, attribute) in _applied:
        return
    try:
        original = owner.__dict__[attribute]
        wrapper = wrap(owner, original)
        setattr(owner, attribute, wrapper)
    except Exception as exc:  # a changed LlamaIndex: this one method stays as it is
        log_safely(
            logging.DEBUG,
            "sightline: llamaindex %s.%s not wrapped: %r",
            owner.__name__,
            attribute,
            exc,
        )
        return
    _applied[(owner, attribute)] = (original, wrapper)


# -- tool governance ----------------------------------------------------------------------------


def _governed(owner: type, original: Any, spanned: bool = False) -> Callable[..., Any]:
    """A tool method (``call``, ``acall``, ``__call__``) of ``owner`` that asks governance
    first when a policy is registered.

    Without a policy it calls ``original`` after one :func:`~sightline.governance.enforced`
    check. With one it calls the method LlamaIndex made a span of, made a span again around
    the question (:func:`_asking`): a denied call is then a failed tool call, as an allowed call
    is a tool call, with its ``decision`` under it (whether an agent or your code called it).
    ``spanned``: ``original`` is no span but should be (a method ``owner`` inherits from a class
    that is no tool, which LlamaIndex would have made a span of had ``owner`` defined it): the
    governed call is made one. ``functools.wraps`` keeps what LlamaIndex reads off the method
    (its name, its signature, the mark that makes subclasses' overrides spans)."""
    function = _span_function(original)
    if function is not None:
        governed = _made_span(owner, _asking(function))
    elif spanned:
        governed = _made_span(owner, _asking(original))
    else:  # a method LlamaIndex makes no span of: ask before it runs, outside any tool span
        governed = _asking(original)

    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def acall(self: Any, *args: Any, **kwargs: Any) -> Any:
            method = governed if governance.enforced(_client) else original
            return await method.__get__(self, type(self))(*args, **kwargs)

        return acall

    @functools.wraps(original)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        method = governed if governance.enforced(_client) else original
        return method.__get__(self, type(self))(*args, **kwargs)

    return call


def _asking(function: Any) -> Callable[..., Any]:
    """``function`` (a tool method), run with the arguments governance allowed, once per tool
    object: inside it, the same tool's governed methods do not ask again."""
    # updated=(): not the span mark, which would make dispatcher.span() leave it as it is.
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function, updated=())
        async def acall(self: Any, *args: Any, **kwargs: Any) -> Any:
            bound = function.__get__(self, type(self))
            args, kwargs, token = _ask_once(self, bound, args, kwargs)
            try:
                return await bound(*args, **kwargs)
            finally:
                if token is not None:
                    _governing.reset(token)

        return acall

    @functools.wraps(function, updated=())
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = function.__get__(self, type(self))
        args, kwargs, token = _ask_once(self, bound, args, kwargs)
        try:
            return bound(*args, **kwargs)
        finally:
            if token is not None:
                _governing.reset(token)

    return call


def _ask_once(
    tool: Any, bound: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any], Token[Any] | None]:
    """The arguments to run ``tool``'s method ``bound`` with, and the token marking ``tool`` as
    governed here until it returns (``None``: a governed method of ``tool`` asked already)."""
    if _governing.get() is tool:
        return args, kwargs, None
    args, kwargs = governance.authorized(tool, args, kwargs, _client, bound)
    return args, kwargs, _governing.set(tool)


def _span_function(method: Any) -> FunctionType | None:
    """The function LlamaIndex made ``method`` a span of (``dispatcher.span`` wraps it in a
    wrapt proxy and marks it), or ``None``."""
    if type(method) is FunctionType:
        return None
    function = getattr(method, "__wrapped__", None)
    if type(function) is FunctionType and function.__dict__.get(_SPAN_MARK):
        return function
    return None


def _made_span(owner: type, function: Callable[..., Any]) -> Any:
    """``function`` made a span by the dispatcher LlamaIndex uses for ``owner``'s methods (the
    one of its module, as ``DispatcherSpanMixin`` does)."""
    from sightline_llamaindex._framework import get_dispatcher

    return get_dispatcher(owner.__module__).span(function)


def _govern_tool_class(cls: type) -> None:
    """Wrap the tool methods of ``cls`` (a class of the types module, or one wrapped by name,
    excepted): those it implements itself, and those it inherits that are not governed yet (from
    a class that is no tool, a mixin: a wrapper on ``cls`` itself, which ``uninstrument()``
    removes)."""
    if _exempt(cls):
        return
    for attribute in _TOOL_CLASS_METHODS:
        inherited = attribute not in cls.__dict__
        if inherited:
            owner = next((base for base in cls.__mro__ if attribute in base.__dict__), None)
            if owner is None or _exempt(owner):
                continue  # none, or one that is governed by name or calls a governed one
            method = owner.__dict__[attribute]
        else:
            method = cls.__dict__[attribute]
        if _is_tool_wrapper(method):
            continue
        if getattr(method, "__isabstractmethod__", False):
            continue
        if type(method) is not FunctionType and _span_function(method) is None:
            continue  # a staticmethod, a property...: not a method of the tool object
        try:
            wrapper = _governed(cls, method, inherited and _span_expected(cls, attribute))
            setattr(cls, attribute, wrapper)
        except Exception as exc:  # this one method stays as it is
            log_safely(
                logging.DEBUG,
                "sightline: llamaindex %s.%s not wrapped: %r",
                cls.__name__,
                attribute,
                exc,
            )
            continue
        _tool_wrappers[wrapper] = inherited


def _exempt(cls: type) -> bool:
    """A class of the types module (``AsyncBaseTool.__call__`` and ``BaseToolAsyncAdapter`` call
    a tool that asks itself) or one wrapped by name: its methods get no wrapper of this kind."""
    return cls.__module__ == _TOOL_TYPES or (cls.__module__, cls.__name__) in _BY_NAME


def _span_expected(cls: type, attribute: str) -> bool:
    """Whether LlamaIndex would make ``attribute`` a span, were it defined on ``cls`` (as
    ``DispatcherSpanMixin`` does: a base has it abstract, or made a span)."""
    for base in cls.__mro__[1:]:
        method = base.__dict__.get(attribute)
        if method is not None and (
            getattr(method, "__isabstractmethod__", False) or hasattr(method, _SPAN_MARK)
        ):
            return True
    return False


def _is_tool_wrapper(method: Any) -> bool:
    try:
        return method is not None and method in _tool_wrappers
    except TypeError:  # not weak-referenceable: not ours
        return False


def _add_subclass_hook(base: type) -> None:
    """Add ``base.__init_subclass__`` (``BaseTool``'s): it governs each tool class made from now
    on, after the ``__init_subclass__`` it stands in front of (LlamaIndex's, which makes the
    methods spans) has run."""
    global _subclass_hook
    if _subclass_hook is not None:
        return
    previous = base.__dict__.get("__init_subclass__", _ABSENT)

    def __init_subclass__(cls: Any, **kwargs: Any) -> None:
        if previous is _ABSENT:
            super(base, cls).__init_subclass__(**kwargs)  # type: ignore[arg-type]
        else:
            previous.__get__(None, cls)(**kwargs)
        if _wanted:
            with _lock:
                if _wanted:
                    _govern_tool_class(cls)

    hook: Any = classmethod(__init_subclass__)
    base.__init_subclass__ = hook  # type: ignore[method-assign]
    _subclass_hook = (base, previous, hook)


def _remove_subclass_hook() -> None:
    """Put ``BaseTool.__init_subclass__`` back and the tool classes' methods (under ``_lock``)."""
    global _subclass_hook
    if _subclass_hook is None:
        return
    base, previous, hook = _subclass_hook
    _subclass_hook = None
    if base.__dict__.get("__init_subclass__") is hook:  # unless someone replaced it after us
        if previous is _ABSENT:
            delattr(base, "__init_subclass__")
        else:
            base.__init_subclass__ = previous  # type: ignore[method-assign]
    for cls in _subclasses(base):
        for attribute in _TOOL_CLASS_METHODS:
            wrapper = cls.__dict__.get(attribute)
            if not _is_tool_wrapper(wrapper):
                continue
            if _tool_wrappers.get(wrapper):  # type: ignore[arg-type]
                delattr(cls, attribute)  # inherited: the class had none of its own
            else:
                setattr(cls, attribute, wrapper.__wrapped__)  # type: ignore[union-attr]


def _subclasses(base: type) -> Iterator[type]:
    """Every class below ``base``, once each."""
    seen: set[int] = set()
    pending: list[type] = list(type.__subclasses__(base))
    while pending:
        cls = pending.pop()
        if id(cls) in seen:
            continue
        seen.add(id(cls))
        yield cls
        pending.extend(type.__subclasses__(cls))


# -- query engines that query the engines of their tools themselves ---------------------------


def _routing(owner: type, original: Any) -> Callable[..., Any]:
    """``_query`` / ``_aquery`` of ``RouterQueryEngine`` or ``SubQuestionQueryEngine``, with
    the engines of their ``QueryEngineTool`` governed as those tools.

    Those engines keep only ``tool.query_engine`` (and ``tool.metadata``) of the tools they are
    given, and query the engines they choose themselves: the governed tool methods never run.
    With a policy registered, the method runs on a shallow copy of the engine whose
    ``_query_engines`` are :class:`_RoutedEngine` stand-ins (a copy per query: concurrent
    queries of one engine do not meet); without one, after one
    :func:`~sightline.governance.enforced` check, as it is."""
    from llama_index.core.tools.query_engine import QueryEngineTool

    def call(self: Any, **kwargs: Any) -> Any:
        return self.query_engine.query(_routed_query_allowed(self, kwargs))

    async def acall(self: Any, **kwargs: Any) -> Any:
        return await self.query_engine.aquery(_routed_query_allowed(self, kwargs))

    # Methods of the QueryEngineTool the engine was given as, to LlamaIndex's spans and ours
    # (a ``tool_call`` named after the tool, its input ``{"input": query}``, as an agent's).
    spans = (_made_span(QueryEngineTool, call), _made_span(QueryEngineTool, acall))

    def routed(engine: Any) -> Any:
        if not governance.enforced(_client):
            return engine
        view = _routed_copy(engine, QueryEngineTool, spans)
        if view is None:
            log_safely(
                logging.WARNING,
                "sightline: llamaindex %s: the engines of its tools are not governed (an "
                "unknown version of it)",
                type(engine).__name__,
            )
            return engine
        return view

    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def aquery(self: Any, *args: Any, **kwargs: Any) -> Any:
            engine = routed(self)
            return await original.__get__(engine, type(engine))(*args, **kwargs)

        return aquery

    @functools.wraps(original)
    def query(self: Any, *args: Any, **kwargs: Any) -> Any:
        engine = routed(self)
        return original.__get__(engine, type(engine))(*args, **kwargs)

    return query


def _routed_copy(engine: Any, tool_class: type, spans: tuple[Any, Any]) -> Any:
    """A shallow copy of ``engine`` whose ``_query_engines`` (a list parallel to
    ``_metadatas``: ``RouterQueryEngine``; by tool name: ``SubQuestionQueryEngine``) are
    :class:`_RoutedEngine` stand-ins; ``None`` when it holds neither."""
    try:
        engines = engine.__dict__.get("_query_engines")
        metadatas = engine.__dict__.get("_metadatas")
        if not isinstance(metadatas, list):
            return None
        routed: Any
        if isinstance(engines, list) and len(engines) == len(metadatas):
            routed = [
                _RoutedEngine(tool_class, one, metadata, spans)
                for one, metadata in zip(engines, metadatas, strict=True)
            ]
        elif isinstance(engines, dict):
            by_name = {metadata.name: metadata for metadata in metadatas}
            if set(by_name) != set(engines):
                return None
            routed = {
                name: _RoutedEngine(tool_class, one, by_name[name], spans)
                for name, one in engines.items()
            }
        else:
            return None
        view = copy.copy(engine)
        view._query_engines = routed
        return view
    except Exception as exc:
        log_safely(logging.DEBUG, "sightline: llamaindex %r not copied: %r", engine, exc)
        return None


class _RoutedEngine:
    """The engine of a ``QueryEngineTool``, queried by a router: ``query`` / ``aquery`` run
    as a call of that tool (a ``QueryEngineTool`` of the same engine and metadata), in a tool
    span, after the policy allowed ``{"input": <the query's text>}``. Anything else is the
    engine's."""

    __slots__ = ("_engine", "_metadata", "_spans", "_tool_class")

    def __init__(self, tool_class: type, engine: Any, metadata: Any, spans: tuple[Any, Any]):
        self._tool_class = tool_class
        self._engine = engine
        self._metadata = metadata
        self._spans = spans

    def query(self, query: Any) -> Any:
        tool = self._tool_class(query_engine=self._engine, metadata=self._metadata)
        token = _routed_query.set(query)
        try:
            return self._spans[0].__get__(tool, type(tool))(input=query_text(query))
        finally:
            _routed_query.reset(token)

    async def aquery(self, query: Any) -> Any:
        tool = self._tool_class(query_engine=self._engine, metadata=self._metadata)
        token = _routed_query.set(query)
        try:
            return await self._spans[1].__get__(tool, type(tool))(input=query_text(query))
        finally:
            _routed_query.reset(token)

    def __getattr__(self, name: str) -> Any:
        if name in _RoutedEngine.__slots__:  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self._engine, name)


def _routed_query_allowed(tool: Any, kwargs: dict[str, Any]) -> Any:
    """What the routed ``tool``'s engine is to be queried with: the router's own query (a
    ``QueryBundle`` as it was) once the policy allowed it, or the input the policy replaced it
    with (ToolDenied if denied)."""
    query = _routed_query.get()
    _, allowed = governance.authorized(tool, (), kwargs, _client)
    if allowed is kwargs:
        return query
    return allowed["input"] if "input" in allowed else str(allowed)  # as QueryEngineTool does


# -- waiting steps ------------------------------------------------------------------------------


def _noting_waits(owner: type, original: Any) -> Callable[..., Any]:
    """``Context.wait_for_event``, telling the handlers when it suspends the step (by the
    exception's class name: importing it would load LlamaIndex's workflows package)."""
    from sightline_llamaindex.handlers import WAITING, step_waiting

    @functools.wraps(original)
    async def wait_for_event(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original.__get__(self, type(self))(*args, **kwargs)
        except Exception as exc:
            if type(exc).__name__ in WAITING:
                step_waiting(exc)
            raise

    return wait_for_event


_Wrap = Callable[[type, Any], Callable[..., Any]]
_TOOL_METHODS = ("call", "acall")
# The methods of a tool class that run it: ``__call__`` is the one of a ``BaseTool`` that is no
# ``AsyncBaseTool`` (an agent calls it through ``BaseToolAsyncAdapter``).
_TOOL_CLASS_METHODS = ("call", "acall", "__call__")
_TOOL_TYPES = "llama_index.core.tools.types"
_ENGINE_METHODS = ("_query", "_aquery")
# module -> (class, its methods to wrap, the wrapper factory)
_PATCHES: dict[str, tuple[tuple[str, tuple[str, ...], _Wrap], ...]] = {
    "llama_index.core.tools.function_tool": (("FunctionTool", _TOOL_METHODS, _governed),),
    "llama_index.core.tools.query_engine": (("QueryEngineTool", _TOOL_METHODS, _governed),),
    "llama_index.core.tools.retriever_tool": (("RetrieverTool", _TOOL_METHODS, _governed),),
    "workflows.context.context": (("Context", ("wait_for_event",), _noting_waits),),
    "llama_index.core.query_engine.router_query_engine": (
        ("RouterQueryEngine", _ENGINE_METHODS, _routing),
    ),
    "llama_index.core.query_engine.sub_question_query_engine": (
        ("SubQuestionQueryEngine", _ENGINE_METHODS, _routing),
    ),
}
# The tool classes wrapped by name, which the subclass hook leaves to their module's import.
_BY_NAME = frozenset(
    (module, class_name)
    for module, entries in _PATCHES.items()
    for class_name, _, wrap in entries
    if wrap is _governed
)
