"""The core's own plugins: built-in exporters and processors, registered like any other plugin."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sightline.hookspecs import hookimpl

if TYPE_CHECKING:
    from sightline.config import Config
    from sightline.pipeline import Exporter
    from sightline.plugins import PluginManager


class BuiltinExporters:
    """Offers the exporters that ship with the core: sqlite, http, jsonl, console, memory."""

    @hookimpl
    def sightline_exporters(self, config: Config) -> Mapping[str, Callable[[Config], Exporter]]:
        from sightline.exporters import builtin_exporter_factories

        return builtin_exporter_factories()


def register(manager: PluginManager, config: Any) -> None:
    """Register the built-in plugins on ``manager`` for a client configured by ``config``."""
    from sightline.processors import RedactionProcessor, SamplingProcessor

    if config is None:
        from sightline.config import Config

        config = Config.resolve()
    manager.register(BuiltinExporters(), "builtin-exporters", status="builtin")
    if getattr(config, "redact_detectors", ()) or getattr(config, "redact_rules", ()):
        # Only when configured: without them, events take the same path as before. Registered
        # first, so that it is called after the redaction (of processors marked tryfirst, the
        # one registered last is called first). Every built-in processor is called before any
        # processor of a plugin, tryfirst or not (PluginManager.implementations).
        from sightline.privacy import PrivacyProcessor

        manager.register(PrivacyProcessor(config), "builtin-privacy", status="builtin")
    manager.register(RedactionProcessor(config), "builtin-redaction", status="builtin")
    manager.register(SamplingProcessor(config), "builtin-sampling", status="builtin")
    if getattr(config, "estimate_cost", True):
        # Not tryfirst: called after the three above (tokens are clean integers by then, and a
        # sampled-out event is not priced), still before every plugin's processor.
        from sightline.pricing import CostProcessor

        manager.register(
            CostProcessor(getattr(config, "model_prices", ())), "builtin-cost", status="builtin"
        )
