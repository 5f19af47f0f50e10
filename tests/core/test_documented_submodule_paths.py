"""The README writes some names through their module (``sightline.testing.capture()``,
``sightline.schema.schema_path()``, ``sightline.span.add_parent_source``...): after a plain
``import sightline`` those paths work, in a fresh interpreter where nothing imported the module
first (outside pytest, whose plugin imports ``sightline.testing``), and stay lazy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

DOCUMENTED = {
    "testing": "capture",
    "schema": "schema_path",
    "span": "add_parent_source",
    "capture": "bounded_copy",
    "client": "call_before_exit_close",
    "governance": "with_schema_defaults",
    "config": "redact_url",
}


def run_fresh(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(("module", "name"), sorted(DOCUMENTED.items()))
def test_documented_module_path_works_after_a_plain_import(module, name):
    result = run_fresh(
        f"""
        import sightline
        assert callable(sightline.{module}.{name})
        """
    )
    assert result.returncode == 0, result.stderr


def test_readme_capture_outside_pytest_records_a_trace():
    result = run_fresh(
        """
        import sightline

        with sightline.testing.capture() as cap:
            with sightline.trace("support-ticket"):
                pass
        print(cap.tree()[0]["name"])
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "support-ticket"


def test_module_paths_stay_lazy_and_unknown_names_still_raise_attribute_error():
    result = run_fresh(
        """
        import sys
        import sightline
        assert "sightline.testing" not in sys.modules
        assert "sightline.schema" not in sys.modules
        assert not hasattr(sightline, "no_such_module")
        assert "testing" in dir(sightline)
        """
    )
    assert result.returncode == 0, result.stderr
