"""sightline.imports: adapters act when their framework is imported, never import it first."""

from __future__ import annotations

import sys
import textwrap

from sightline.imports import when_imported


def test_callback_runs_after_the_module_is_imported_and_not_before(tmp_path, monkeypatch):
    (tmp_path / "late_framework.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[tuple[str, int]] = []
    watch = when_imported(
        ["late_framework"], lambda name, module: seen.append((name, module.VALUE))
    )
    try:
        assert seen == []
        assert "late_framework" not in sys.modules
        import late_framework  # type: ignore[import-not-found]

        assert late_framework.VALUE == 42
        assert seen == [("late_framework", 42)]
    finally:
        watch.cancel()
        sys.modules.pop("late_framework", None)


def test_callback_runs_at_once_for_a_module_already_imported():
    seen: list[str] = []
    watch = when_imported(["json"], lambda name, module: seen.append(module.__name__))
    watch.cancel()
    assert seen == ["json"]


def test_a_raising_callback_never_breaks_the_import(tmp_path, monkeypatch, caplog):
    (tmp_path / "fragile_framework.py").write_text(textwrap.dedent("OK = True\n"))
    monkeypatch.syspath_prepend(str(tmp_path))

    def explode(name, module):
        raise RuntimeError("adapter bug")

    watch = when_imported(["fragile_framework"], explode)
    try:
        import fragile_framework  # type: ignore[import-not-found]

        assert fragile_framework.OK is True
        assert "post-import hook for fragile_framework failed: RuntimeError: adapter bug" in (
            caplog.text
        )
    finally:
        watch.cancel()
        sys.modules.pop("fragile_framework", None)


def test_cancel_stops_watching(tmp_path, monkeypatch):
    (tmp_path / "never_watched.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[str] = []
    watch = when_imported(["never_watched"], lambda name, module: seen.append(name))
    watch.cancel()
    watch.cancel()
    try:
        import never_watched  # type: ignore[import-not-found]  # noqa: F401

        assert seen == []
    finally:
        sys.modules.pop("never_watched", None)
