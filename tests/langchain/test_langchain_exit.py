"""At interpreter exit, LangChain runs that finished but whose end the worker had not replayed yet
end as they did: Sightline settles the queue before it ends the spans still open as incomplete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
    import atexit, json
    import sightline
    from sightline.testing import InMemoryExporter
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from tests.langchain.langchain_scripted import chat_model, reply

    exporter = InMemoryExporter()

    def report():  # registered before Sightline's exit hook: runs after it
        print(json.dumps(sorted(
            (e.name, str(e.status), e.error.type if e.error else None) for e in exporter.events
        )))

    atexit.register(report)
    client = sightline.init(exporters=[exporter], batch_size=100_000, flush_interval=1000)
    chain = (
        ChatPromptTemplate.from_messages([("human", "{q}")])
        | chat_model(reply("hi", input_tokens=3, output_tokens=1), reply("hello there"))
        | StrOutputParser()
    )
    chain.invoke({"q": "x"})
    if "{finished}" == "no":
        kept = chain.stream({"q": "x"})  # a stream left open, still referenced at exit
        next(kept)
    # The worker has replayed the start callbacks only, as if the program ended right then.
    pipeline = client._pipeline
    for record in [r for r in pipeline._queue if r[2].__name__.endswith("_start")]:
        pipeline._queue.remove(record)
        pipeline._replay(record)
"""


def run(finished: str) -> list[list[str | None]]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROGRAM).replace("{finished}", finished)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "SIGHTLINE_HANDLE_SIGNALS": "false"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_runs_finished_before_exit_are_recorded_ok_though_their_ends_were_still_queued():
    assert run("yes") == [
        ["ChatPromptTemplate", "ok", None],
        ["RunnableSequence", "ok", None],
        ["ScriptedChatModel", "ok", None],
        ["StrOutputParser", "ok", None],
    ]


def test_a_stream_still_open_at_exit_is_recorded_incomplete_and_the_rest_ok():
    assert run("no") == [
        ["ChatPromptTemplate", "ok", None],
        ["ChatPromptTemplate", "ok", None],  # the stream's prompt had finished
        ["RunnableSequence", "error", "Incomplete"],
        ["RunnableSequence", "ok", None],
        ["ScriptedChatModel", "error", "Incomplete"],
        ["ScriptedChatModel", "ok", None],
        ["StrOutputParser", "error", "Incomplete"],
        ["StrOutputParser", "ok", None],
    ]
