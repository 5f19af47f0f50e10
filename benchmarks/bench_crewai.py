"""Added wall time per kickoff of a one-agent, one-tool CrewAI crew under Sightline.

The crew runs for real against the scripted OpenAI-compatible server of the test suite on
127.0.0.1 (two LLM calls and one tool call per kickoff: 6 Sightline events with the global
integration). Each configuration runs the same crew in the same process, interleaved round by
round so that drift in the machine affects them all alike:

- ``none``       no instrumentation (the baseline);
- ``global``     ``sightline_crewai.instrument()``: the listener on ``crewai_event_bus``;
- ``callback``   ``SightlineCrewCallback`` passed to ``Crew(step_callback=, task_callback=)``;
- ``both``       the two together (nothing is recorded twice).

Sightline exports to its embedded SQLite store in a temporary directory. Per configuration it
prints the median wall time of ``crew.kickoff()`` and the time added over ``none`` (absolute and
relative; the target is under 5%), the process CPU time per kickoff (every thread: CrewAI, its
handler pool, Sightline's worker, the local server; steadier than wall time on a busy machine),
the time then needed to drain CrewAI's handler pool and Sightline's pipeline, and how many
events were exported out of those expected.

    python benchmarks/bench_crewai.py [--kickoffs 25] [--rounds 4] [--configs none,global]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ["CREWAI_DISABLE_TELEMETRY"] = "true"
os.environ["CREWAI_DISABLE_VERSION_CHECK"] = "true"
os.environ["CREWAI_TRACING_ENABLED"] = "false"
os.environ.setdefault("CREWAI_STORAGE_DIR", tempfile.mkdtemp(prefix="bench-crewai-"))

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

from tests.support.openai_server import ScriptedOpenAIServer, tool_then_answer

EVENTS_PER_KICKOFF = {"none": 0, "global": 6, "callback": 2, "both": 7}


@dataclass
class Config:
    """One way of running the crew."""

    name: str
    kickoff_us: list[float] = field(default_factory=list)
    round_kickoff_us: list[list[float]] = field(default_factory=list)
    round_cpu_us: list[float] = field(default_factory=list)  # per kickoff, all threads, + drain
    drain_us: list[float] = field(default_factory=list)
    exported: int = 0
    kickoffs: int = 0


def build_crew(llm: Any, crew_options: dict[str, Any]) -> Any:
    from crewai import Agent, Crew, Task
    from crewai.tools import tool

    @tool("add")
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    agent = Agent(role="Calculator", goal="Add numbers", backstory="math", llm=llm, tools=[add])
    task = Task(description="Add 1 and 2", expected_output="The sum", agent=agent)
    return Crew(agents=[agent], tasks=[task], **crew_options)


def run_config(config: Config, base_url: str, kickoffs: int, db: str) -> None:
    from crewai import LLM
    from crewai.events import crewai_event_bus

    import sightline
    import sightline_crewai

    client = None
    crew_options: dict[str, Any] = {}
    if config.name != "none":
        client = sightline.init(db=db, instrument=False)
    if config.name in ("global", "both"):
        sightline_crewai.instrument()
    if config.name in ("callback", "both"):
        callback = sightline_crewai.SightlineCrewCallback()
        crew_options = {
            "step_callback": callback.step_callback,
            "task_callback": callback.task_callback,
        }
    llm = LLM(model="gpt-4o-mini", base_url=base_url, api_key="sk-bench")
    try:
        crews = [build_crew(llm, crew_options) for _ in range(kickoffs)]
        walls: list[float] = []
        cpu_started = time.process_time()
        for crew in crews:
            started = time.perf_counter()
            crew.kickoff()
            walls.append((time.perf_counter() - started) * 1e6)
        started = time.perf_counter()
        crewai_event_bus.flush(30.0)
        if client is not None:
            client.flush(30.0)
        config.drain_us.append((time.perf_counter() - started) * 1e6)
        config.round_cpu_us.append((time.process_time() - cpu_started) * 1e6 / kickoffs)
        config.kickoff_us.extend(walls)
        config.round_kickoff_us.append(walls)
        config.kickoffs += kickoffs
    finally:
        if config.name in ("global", "both"):
            sightline_crewai.uninstrument()
        if client is not None:
            config.exported += int(client.stats().get("exported", 0))
            sightline.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kickoffs", type=int, default=25, help="kickoffs per configuration per round"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--configs",
        default="none,global,callback,both",
        help="comma-separated subset of: none, global, callback, both (none always runs)",
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("crewai").setLevel(logging.ERROR)

    wanted = {name.strip() for name in args.configs.split(",")} | {"none"}
    configs = [Config(name) for name in EVENTS_PER_KICKOFF if name in wanted]
    answer = tool_then_answer(
        "add", {"a": 1, "b": 2}, "The sum is 3", prompt_tokens=40, completion_tokens=7
    )
    with ScriptedOpenAIServer(responder=answer) as server, tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        warmup = Config("global")
        run_config(warmup, server.base_url, 3, db)  # CrewAI's lazy imports, first connections
        run_config(Config("none"), server.base_url, 3, db)
        for round_number in range(args.rounds):
            order: list[Config] = configs if round_number % 2 == 0 else list(reversed(configs))
            for config in order:
                gc.collect()
                run_config(config, server.base_url, args.kickoffs, db)

    import crewai

    print(
        f"CrewAI {crewai.__version__}: {args.rounds} rounds x {args.kickoffs} kickoffs per "
        "configuration; 'added' is the median over rounds of each round's difference to 'none'"
    )
    print(
        f"{'config':<9} {'wall/kickoff':>12} {'added':>9} {'added %':>8} "
        f"{'cpu/kickoff':>11} {'added %':>8} {'drain':>8} {'events':>11}"
    )
    none = configs[0]
    for config in configs:
        wall = statistics.median(config.kickoff_us)
        cpu = statistics.median(config.round_cpu_us)
        added = [
            statistics.median(mine) - statistics.median(base)
            for mine, base in zip(config.round_kickoff_us, none.round_kickoff_us, strict=True)
        ]
        added_pct = [
            a / statistics.median(base) * 100
            for a, base in zip(added, none.round_kickoff_us, strict=True)
        ]
        cpu_pct = [
            (mine - base) / base * 100
            for mine, base in zip(config.round_cpu_us, none.round_cpu_us, strict=True)
        ]
        expected = EVENTS_PER_KICKOFF[config.name] * config.kickoffs
        drain = statistics.median(config.drain_us) if config.drain_us else 0.0
        print(
            f"{config.name:<9} {wall / 1000:>9.2f} ms {statistics.median(added) / 1000:>+6.2f} ms "
            f"{statistics.median(added_pct):>+7.1f}% {cpu / 1000:>8.2f} ms "
            f"{statistics.median(cpu_pct):>+7.1f}% {drain / 1000:>5.1f} ms "
            f"{config.exported:>5}/{expected:<5}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
