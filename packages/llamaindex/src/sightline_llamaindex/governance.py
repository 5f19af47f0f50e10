"""Tool governance: LlamaIndex tools ask the ``sightline_authorize_tool`` plugins before they run.

LlamaIndex runs a tool through its ``call`` / ``acall`` method (``__call__`` for a ``BaseTool``
that is no ``AsyncBaseTool``): an agent's ``call_tool`` step (``FunctionAgent``,
``ReActAgent``, ``AgentWorkflow``), ``LLM.predict_and_call``, ``tool(...)`` and your own code
all do. ``instrument()`` wraps those methods of every ``BaseTool`` subclass, LlamaIndex's and
yours, including the ones defined later and those whose methods come from a mixin; and, as
``RouterQueryEngine`` and ``SubQuestionQueryEngine`` query the engines of their
``QueryEngineTool`` themselves, their ``_query`` / ``_aquery``, which query each engine they
choose as a call of its tool (see :mod:`sightline_llamaindex.patches`).

Without a policy the wrapper costs one :func:`sightline.governance.enforced` call. With one, the
tool's arguments (with the defaults of the parameters the call leaves out, as the tool will run
with them) go to :func:`sightline.governance.authorize` first, inside the tool's own
LlamaIndex span: a deny raises ``ToolDenied`` from the tool call (an agent hands it back to the
model as a failed tool call), which fails that ``tool_call`` with kind ``guardrail``, and
records a ``decision`` event under it; an allow runs the tool with the arguments the policy
returned.
"""

from __future__ import annotations

import inspect
from typing import Any

from sightline.governance import authorize, enforced
from sightline_llamaindex.mapping import FRAMEWORK, tool_name

__all__ = ["authorized", "enforced"]


def authorized(
    tool: Any, args: tuple[Any, ...], kwargs: dict[str, Any], client: Any, method: Any = None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments to run ``tool`` with, once the policy allowed them (ToolDenied if not).

    The policy sees the tool's arguments by name: keyword arguments as they are (without the
    workflow ``Context`` an agent passes to a tool that asks for it), positional ones named
    after the parameters of ``method`` (the bound tool method called: ``def call(self, query,
    limit)`` of a tool class of yours), else of a ``FunctionTool``'s function (``input`` for
    another tool's single argument); and the defaults of the parameters the call leaves out
    (see :func:`_defaults`). What it returns goes back the same way; the tool call's recorded
    input becomes those arguments. A policy that allows without replacing them leaves the call
    as it was: the tool fills its defaults in itself.
    """
    from sightline_llamaindex.handlers import record_tool_arguments, running_agent

    name = tool_name(tool) or type(tool).__name__
    context = {key: value for key, value in kwargs.items() if type(value).__name__ == "Context"}
    arguments = {key: value for key, value in kwargs.items() if key not in context}
    names = _positional_names(tool, method, len(args)) if args else []
    arguments.update(zip(names, args, strict=True))
    arguments.update(_defaults(tool, method, arguments, context))
    allowed = authorize(name, arguments, client=client, framework=FRAMEWORK, agent=running_agent())
    if allowed is arguments:
        return args, kwargs
    keywords = dict(allowed)
    positional = []
    for key in names:  # as BoundArguments.args: positional up to the first one left out
        if key not in keywords:
            break
        positional.append(keywords.pop(key))
    record_tool_arguments(name, positional, keywords)
    return tuple(positional), {**keywords, **context}


def _defaults(
    tool: Any, method: Any, given: dict[str, Any], context: dict[str, Any]
) -> dict[str, Any]:
    """The defaults of the parameters the call leaves out, as the tool will run with them: a
    limit on ``amount`` holds when the model leaves ``amount`` at its default.

    They are those of ``method`` (a tool class of yours: ``def call(self, sku, limit=5)``),
    else of a ``FunctionTool``'s function (LlamaIndex calls it with what it was given, so the
    function's defaults apply, a pydantic ``Field`` default as the tool computed it). Not the
    workflow ``Context`` nor a ``FunctionTool``'s ``partial_params``, which the application
    gives the tool (as its ``fn_schema`` leaves them out). Empty when none can be read."""
    try:
        function = method if _named_parameters(method) else _real_fn(tool)
        parameters = _named_parameters(function)
        if not parameters:
            return {}
        skipped = {
            *given,
            *context,
            *(getattr(tool, "partial_params", None) or ()),
            getattr(tool, "ctx_param_name", None),
        }
        computed = getattr(tool, "_field_defaults", None) or {}  # FunctionTool's Field defaults
        defaults = {}
        for parameter in parameters:
            if parameter.name in skipped or _is_context(parameter):
                continue
            if parameter.name in computed:
                defaults[parameter.name] = computed[parameter.name]
            elif parameter.default is not parameter.empty and not _is_field(parameter.default):
                defaults[parameter.name] = parameter.default
        return defaults
    except Exception:
        return {}  # the policy sees the arguments given


def _parameters(function: Any) -> list[inspect.Parameter]:
    """The parameters of ``function`` (none when it has no readable signature)."""
    if function is None:
        return []
    try:
        return list(inspect.signature(function).parameters.values())
    except Exception:  # no readable signature
        return []


def _named_parameters(function: Any) -> list[inspect.Parameter]:
    """The parameters of ``function`` that take an argument by name (no ``*args`` /
    ``**kwargs``, no ``self``)."""
    return [
        p
        for p in _parameters(function)
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"
    ]


def _is_context(parameter: inspect.Parameter) -> bool:
    """Whether the parameter takes a workflow ``Context`` (by the annotation's name: importing
    LlamaIndex's workflows to compare would load them)."""
    annotation = parameter.annotation
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return name == "Context" or str(name).endswith(".Context")


def _is_field(default: Any) -> bool:
    """A pydantic ``Field(...)`` default (its value is not the default itself)."""
    return type(default).__name__ == "FieldInfo"


def _positional_names(tool: Any, method: Any, count: int) -> list[str]:
    for function in (method, _real_fn(tool)):  # FunctionTool.call(*args) passes them to fn
        names = _positional_parameters(function)
        if len(names) >= count:
            return names[:count]
    if count == 1:
        return ["input"]  # BaseTool.call(input); what QueryEngineTool / RetrieverTool query
    return [f"arg{index}" for index in range(count)]


def _real_fn(tool: Any) -> Any:
    try:
        return tool.real_fn
    except Exception:  # not a FunctionTool
        return None


def _positional_parameters(function: Any) -> list[str]:
    return [
        p.name
        for p in _parameters(function)
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
