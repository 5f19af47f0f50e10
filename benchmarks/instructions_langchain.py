"""Instructions executed per invoke of the LangChain chain of ``bench_langchain.py``, counted by
valgrind's callgrind: a figure that does not move with the machine's load, to tell a real change
of the LangChain adapter's cost from the noise of timed runs (±10 µs from run to run here).

For each configuration (no callbacks, a do-nothing handler, ``SightlineCallbackHandler`` to a
counting in-memory exporter) the chain runs in a fresh interpreter under callgrind twice, with
100 warm-up invokes and then ``--small`` and ``--large`` more; the difference of the two totals
divided by the difference of the counts is the cost of one invoke, everything else (imports,
set-up, warm-up, exit) cancelling out. Every thread is counted, the Sightline worker too, so
the figure matches ``bench_langchain.py``'s whole-process CPU column. Keep the counts large:
with a few dozen invokes, work that comes in steps (garbage collections, the worker's batches)
does not cancel out (20 and 120 invokes gave 4.7x where 300 and 1,300 give 3.6x).

    python benchmarks/instructions_langchain.py [--small 300] [--large 1300]

Needs valgrind (Debian: ``apt-get install valgrind``). Under callgrind Python runs about 50 times
slower: the default counts take about 15 minutes on a 2-core machine. Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

CONFIGURATIONS = ("none", "do-nothing", "sightline")

_RUN = """
import sys
sys.path.insert(0, {benchmarks!r})
import bench_langchain as bench
import sightline
from sightline_langchain import SightlineCallbackHandler

mode, count = sys.argv[1], int(sys.argv[2])
client = sightline.Client(exporters=[bench.CountingExporter()])
chain = bench.build_chain()
if mode == "none":
    config = None
elif mode == "do-nothing":
    config = bench.noop_config().setup()
else:
    config = {{"callbacks": [SightlineCallbackHandler(client)]}}
for _ in range(100 + count):
    chain.invoke({{"question": "How long do refunds take?"}}, config=config)
client.flush(120)
if mode == "sightline":
    exported = client.stats()["exported"]
    assert exported == 4 * (100 + count), f"{{exported}} events of {{4 * (100 + count)}}"
client.close()
"""


def instructions(mode: str, count: int, workdir: str) -> int:
    """Instructions callgrind counted for a whole run of ``count`` invokes (after the warm-up)."""
    script = os.path.join(workdir, "run.py")
    with open(script, "w") as file:
        file.write(_RUN.format(benchmarks=os.path.dirname(os.path.abspath(__file__))))
    out = os.path.join(workdir, f"callgrind-{mode}-{count}.out")
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
    done = subprocess.run(
        [*command, script, mode, str(count)],
        capture_output=True,
        text=True,
        env={**os.environ, "LANGSMITH_TRACING": "false", "OTEL_SDK_DISABLED": "true"},
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode}, {count} invokes failed:\n{done.stderr[-2000:]}")
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=300, help="invokes of the first run")
    parser.add_argument("--large", type=int, default=1300, help="invokes of the second run")
    args = parser.parse_args()
    if args.large <= args.small:
        parser.error("--large must be more than --small")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    per_invoke: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for mode in CONFIGURATIONS:
            print(f"{mode}: {args.small} then {args.large} invokes under callgrind…", flush=True)
            small = instructions(mode, args.small, workdir)
            large = instructions(mode, args.large, workdir)
            per_invoke[mode] = (large - small) / (args.large - args.small)
    base = per_invoke["none"]
    floor = per_invoke["do-nothing"] - base
    print()
    print(f"{'configuration':<14} {'instructions':>14} {'added':>12} {'x floor':>8}")
    for mode in CONFIGURATIONS:
        added = per_invoke[mode] - base
        ratio = f"{added / floor:.2f}" if mode != "none" else "-"
        shown = f"{added:,.0f}" if mode != "none" else "-"
        print(f"{mode:<14} {per_invoke[mode]:>14,.0f} {shown:>12} {ratio:>8}")
    print("instructions per invoke, every thread; x floor: added over the do-nothing handler's")


if __name__ == "__main__":
    main()
