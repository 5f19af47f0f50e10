"""Estimated costs end to end: a program records model calls into the embedded store with no
cost given, and ``sightline show`` / ``stats`` print what each call, run and model cost, with
the digits a cheap call needs (a few millionths of a dollar is not "$0.0000")."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sightline.cli import _cost
from tests.core.test_cli import cli_env, sightline_cli

PROGRAM = """
import sightline

sightline.init(agent="support-bot")
with sightline.trace("ticket") as run:
    for model, tokens_in, tokens_out in [
        ("gpt-4o-mini-2024-07-18", 212, 18),
        ("claude-sonnet-4-5-20250929", 3000, 400),
        ("house-model", 10, 10),
    ]:
        with run.step("respond", "answer", model=model) as call:
            call.set_usage(input_tokens=tokens_in, output_tokens=tokens_out)
            if model.startswith("claude"):
                call.set_metadata(usage_details={"cache_read_tokens": 2000})
sightline.shutdown()
"""


def test_show_and_stats_print_the_estimated_costs(tmp_path):
    env = cli_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    # gpt-4o-mini: 212 * $0.15 + 18 * $0.60 per million = $0.0000426;
    # claude-sonnet-4-5, 2000 of the 3000 input tokens read from the cache:
    # 1000 * $3 + 2000 * $0.30 + 400 * $15 per million = $0.0096; house-model: unknown
    shown = sightline_cli("show", "latest", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].endswith("· 4 events · 3,650 tokens · $0.0096")
    assert [line.split("  ", 2)[-1] for line in lines[2:]] == [
        "gpt-4o-mini-2024-07-18  212→18 tokens  $0.000043",
        "claude-sonnet-4-5-20250929  3000→400 tokens (2000 cached)  $0.0096",
        "house-model  10→10 tokens",  # not priced: no cost printed
    ]
    stats = sightline_cli("stats", cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    by_model = stats.stdout.split("By model\n")[1].splitlines()
    costs = {row.split()[0]: row.split()[5] for row in by_model[1:]}
    assert costs == {
        "claude-sonnet-4-5-20250929": "$0.0096",
        "gpt-4o-mini-2024-07-18": "$0.000043",
        "house-model": "-",
    }


@pytest.mark.parametrize(
    ("dollars", "shown"),
    [
        (None, "-"),
        (0.0, "-"),
        (0.0000426, "$0.000043"),
        (0.00034, "$0.00034"),
        (0.004, "$0.0040"),
        (0.0152, "$0.0152"),
        (0.99996, "$1.0000"),
        (12.5, "$12.50"),
        (1234.5, "$1,234.50"),
        (1e-10, "<$0.00000001"),
    ],
)
def test_a_cost_is_printed_with_at_least_two_significant_digits(dollars, shown):
    assert _cost(dollars) == shown
