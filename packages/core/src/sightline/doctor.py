"""``sightline doctor``: check that events can be delivered, and say what is in the way.

It checks, for the configuration that ``sightline.init()`` would use (arguments, then
``SIGHTLINE_*`` variables, then defaults):

- **endpoint**: is the collector reachable (``GET {endpoint}/health``)?
- **api key**: does it have the right shape (``sl_`` + at least 32 of ``[A-Za-z0-9_-]``), and does
  the collector accept it (an empty ``POST /api/v1/events``)? Credentials in the endpoint
  (``user:password@``) are not sent, as by the exporter: said here, a warning (a failure
  without a key).
- **spool**: where it is, how many batches, events and bytes wait there, how full it is, how old
  the oldest batch is, and whether any file is corrupt.

Each check prints one line; the exit code is 1 when a check failed, else 0. ``--json`` prints the
same as a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Check", "register", "run_checks", "run_doctor"]

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
_MARKS = {OK: "✓", WARN: "!", FAIL: "✗", SKIP: "-"}


@dataclass
class Check:
    """The result of one check."""

    name: str
    status: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "details": self.details,
        }


def register(cli: Any) -> None:
    """Add ``sightline doctor`` to the command line (``cli.command(name, help, handler)``)."""
    parser = cli.command(
        "doctor",
        "check endpoint reachability, API key validity and the spool",
        run_doctor,
    )
    _option(parser, "--endpoint", default=None, help="collector base URL (SIGHTLINE_ENDPOINT)")
    _option(parser, "--api-key", default=None, help="API key to check (SIGHTLINE_API_KEY)")
    _option(parser, "--spool-dir", default=None, help="spool directory (SIGHTLINE_SPOOL_DIR)")
    _option(parser, "--db", default=None, help="embedded store path (SIGHTLINE_DB)")
    _option(parser, "--timeout", type=float, default=5.0, help="seconds per network check")
    _option(parser, "--json", action="store_true", default=False, help="print JSON")


def _option(parser: argparse.ArgumentParser, *flags: str, **kwargs: Any) -> None:
    # The command line may already define shared options (--endpoint, --json...).
    try:
        parser.add_argument(*flags, **kwargs)
    except argparse.ArgumentError:
        pass


def run_doctor(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    """The ``sightline doctor`` handler: run every check, print them, return the exit code."""
    checks = run_checks(
        endpoint=getattr(args, "endpoint", None),
        api_key=getattr(args, "api_key", None),
        spool_dir=getattr(args, "spool_dir", None),
        db=getattr(args, "db", None),
        timeout=getattr(args, "timeout", None) or 5.0,
    )
    failed = any(check.status == FAIL for check in checks)
    if getattr(args, "json", False):
        out(json.dumps({"ok": not failed, "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        width = max(len(check.name) for check in checks)
        for check in checks:
            out(f"{_MARKS[check.status]} {check.name.ljust(width)}  {check.message}")
        out("" if not failed else "\nsightline doctor found a problem (exit code 1).")
    return 1 if failed else 0


def run_checks(
    endpoint: str | None = None,
    api_key: str | None = None,
    spool_dir: str | None = None,
    db: str | None = None,
    timeout: float = 5.0,
    environ: dict[str, str] | None = None,
) -> list[Check]:
    """Run the checks for this configuration and return them in order."""
    from sightline.config import Config
    from sightline.errors import ConfigError

    try:
        # Resolved disabled so that a bad key is reported by its check instead of raised here.
        config = Config.resolve(
            environ,
            endpoint=endpoint,
            api_key=api_key,
            spool_dir=spool_dir,
            db=db,
            enabled=False,
            instrument=False,
        )
    except ConfigError as exc:
        return [Check("config", FAIL, str(exc))]
    checks: list[Check] = []
    reachable = _check_endpoint(config, timeout, checks)
    _check_key(config, timeout, reachable, checks)
    if not config.endpoint or "sqlite" in config.exporter_names:
        _check_store(config, checks)
    _check_spool(config, checks)
    return checks


def _check_store(config: Any, checks: list[Check]) -> None:
    """The embedded store: a SQLite file of a schema this Sightline writes, that this user can
    write (SQLite also writes ``-wal`` / ``-shm`` files beside it), or a folder to create it in."""
    from sightline.spool import folder_obstacle
    from sightline.store.sqlite import SchemaVersionError, SqliteStore, write_obstacle

    path = os.path.abspath(config.db)
    # A link's target is where SQLite writes (and its folder where -wal and -shm go).
    folder = os.path.dirname(os.path.realpath(path))
    if not os.path.exists(path):
        obstacle = folder_obstacle(folder)
        if obstacle is None:
            checks.append(Check("store", OK, f"{path} will be created when events are recorded"))
        else:
            checks.append(Check("store", FAIL, f"{path} cannot be created: {obstacle}"))
        return
    try:
        store = SqliteStore(path, readonly=True)
        store.close()
    except SchemaVersionError as exc:
        if exc.found > exc.supported:
            checks.append(Check("store", FAIL, str(exc)))
            return
        checks.append(
            Check("store", WARN, f"{path}: {exc}; the next program that records upgrades it")
        )
        return
    except Exception as exc:
        checks.append(Check("store", FAIL, f"{path} cannot be read: {type(exc).__name__}: {exc}"))
        return
    why = write_obstacle(path)  # the file, a -wal or -shm another user left, or its folder
    if why is not None:
        checks.append(Check("store", FAIL, f"{path} is readable but {why}"))
        return
    checks.append(Check("store", OK, f"{path} is a Sightline store this user can write"))


def _check_endpoint(config: Any, timeout: float, checks: list[Check]) -> bool:
    if not config.endpoint:
        checks.append(
            Check(
                "endpoint",
                OK,
                f"none configured: events go to the embedded store {os.path.abspath(config.db)}",
            )
        )
        return False
    from sightline.config import endpoint_url, redact_url, redacted_endpoint_url

    # What is printed never holds credentials or query values (the report may be pasted).
    shown = redact_url(config.endpoint)
    if not config.endpoint.startswith(("http://", "https://")):
        checks.append(Check("endpoint", FAIL, f"{shown!r} is not an http(s) URL"))
        return False
    import httpx

    url = endpoint_url(config.endpoint, "/health")
    shown_url = redacted_endpoint_url(config.endpoint, "/health")
    started = time.perf_counter()
    try:
        response = httpx.get(url, timeout=timeout, headers=_headers(None))
    except Exception as exc:
        checks.append(
            Check(
                "endpoint",
                FAIL,
                f"{shown} is unreachable: {type(exc).__name__}: "
                f"{str(exc).replace(config.endpoint, shown)} "
                "(events are spooled until it answers)",
                {"url": shown_url},
            )
        )
        return False
    elapsed = (time.perf_counter() - started) * 1000
    details = {"url": shown_url, "status": response.status_code, "ms": round(elapsed, 1)}
    if response.status_code >= 500:
        checks.append(
            Check("endpoint", FAIL, f"{shown_url} answered {response.status_code}", details)
        )
        return False
    checks.append(
        Check(
            "endpoint",
            OK,
            f"{shown} is reachable (GET /health → {response.status_code} in {elapsed:.0f} ms)",
            details,
        )
    )
    return True


def _check_key(config: Any, timeout: float, reachable: bool, checks: list[Check]) -> None:
    """The key check; an endpoint holding ``user:password@`` is said to be so here, as the
    exporter says it: those credentials are not sent, the key is (a warning at best)."""
    from sightline.config import strip_userinfo, userinfo_ignored

    if not config.endpoint:
        checks.append(Check("api key", SKIP, "not needed for the embedded store"))
        return
    before = len(checks)
    _check_key_itself(config, timeout, reachable, checks)
    if not strip_userinfo(config.endpoint)[1]:
        return
    check = checks[before]
    if not config.api_key:
        check.message = (
            f"missing: {userinfo_ignored(config.endpoint)}. Remove them from the URL and set "
            "SIGHTLINE_API_KEY / api_key= instead"
        )
        return
    check.message += f"; {userinfo_ignored(config.endpoint)}: remove them from the URL"
    if check.status == OK:
        check.status = WARN


def _check_key_itself(config: Any, timeout: float, reachable: bool, checks: list[Check]) -> None:
    from sightline.config import validate_api_key
    from sightline.errors import ConfigError

    if not config.api_key:
        checks.append(
            Check("api key", FAIL, "missing: a remote endpoint needs SIGHTLINE_API_KEY / api_key=")
        )
        return
    try:
        validate_api_key(config.api_key)
    except ConfigError as exc:
        checks.append(Check("api key", FAIL, str(exc)))
        return
    from sightline.config import endpoint_url, redact_url

    shown = f"{config.api_key[:6]}…{config.api_key[-4:]}"
    if not reachable:
        checks.append(
            Check("api key", WARN, f"{shown} has the right shape; not verified (no collector)")
        )
        return
    import httpx

    url = endpoint_url(config.endpoint, "/api/v1/events")
    try:
        response = httpx.post(
            url, json={"events": []}, timeout=timeout, headers=_headers(config.api_key)
        )
    except Exception as exc:
        checks.append(
            Check(
                "api key",
                WARN,
                f"{shown}: could not verify: {type(exc).__name__}: "
                f"{str(exc).replace(config.endpoint, redact_url(config.endpoint))}",
            )
        )
        return
    status = response.status_code
    if 200 <= status < 300:
        checks.append(
            Check("api key", OK, f"{shown} is accepted by the collector", {"status": status})
        )
    elif status in (401, 403):
        checks.append(
            Check(
                "api key",
                FAIL,
                f"{shown} is rejected by the collector ({status}): get a valid key from the "
                "collector's operator",
                {"status": status},
            )
        )
    else:
        checks.append(
            Check(
                "api key",
                WARN,
                f"{shown}: the collector answered {status} to an empty batch; not verified",
                {"status": status},
            )
        )


def _check_spool(config: Any, checks: list[Check]) -> None:
    from sightline.spool import SpoolDirectory, folder_obstacle, spool_path_for

    base = config.resolved_spool_dir
    if config.spool_max_bytes <= 0:
        checks.append(
            Check(
                "spool",
                WARN,
                "disabled (SIGHTLINE_SPOOL_MAX_BYTES=0): undeliverable batches are dropped",
            )
        )
        return
    obstacle = folder_obstacle(base)
    if obstacle is not None and not os.path.isdir(base):
        # A file where the spool's folder should be (or above it), or a folder this user cannot
        # create: nothing can be spooled.
        checks.append(
            Check(
                "spool",
                FAIL,
                f"none can be kept in {base}: {obstacle}; set SIGHTLINE_SPOOL_DIR (or "
                "--spool-dir) to a folder this user can write",
                {"path": base},
            )
        )
        return
    paths: list[str] = []
    if config.endpoint:
        paths.append(spool_path_for(base, config.endpoint))
    try:
        others = sorted(
            os.path.join(base, name)
            for name in os.listdir(base)
            if os.path.isdir(os.path.join(base, name))
        )
    except OSError:  # not there yet, or not a folder this user can list (said below)
        others = []
    paths += [p for p in others if p not in paths]
    paths = [p for p in paths if os.path.isdir(p)]
    if not paths:
        checks.append(
            Check(
                "spool",
                OK if obstacle is None else FAIL,
                f"empty ({base}, limit {_size(config.spool_max_bytes)})"
                + ("" if obstacle is None else f"; {obstacle}"),
                {"path": base, "files": 0, "events": 0, "bytes": 0},
            )
        )
        return
    for path in paths:
        spool = SpoolDirectory(path, config.spool_max_bytes)
        usage = spool.usage()
        corrupt = 0
        for entry in spool.entries():
            try:
                spool.read(entry)
            except Exception:
                corrupt += 1
        details = {**usage.to_dict(), "unreadable": corrupt}
        share = usage.bytes / config.spool_max_bytes
        text = (
            f"{_count(usage.files, 'batch', 'batches')}, {_count(usage.events, 'event', 'events')}, "
            f"{_size(usage.bytes)} of "
            f"{_size(config.spool_max_bytes)} ({share:.0%}) in {path}"
        )
        if usage.oldest_ns is not None:
            age = max(0.0, time.time() - usage.oldest_ns / 1e9)
            text += f"; oldest {_age(age)} old"
        status = OK
        if corrupt or usage.corrupt_files:
            status = WARN
            text += f"; {corrupt + usage.corrupt_files} corrupt file(s) set aside"
        if share >= 0.8:
            status = WARN
            text += "; nearly full: the oldest batches will be evicted"
        if config.endpoint and path != paths[0]:
            text += " (another endpoint's spool; delivered only by a client configured for it)"
        if folder_obstacle(path) is not None:
            status = FAIL
            text += "; not writable"
        checks.append(Check("spool", status, text, details))


def _headers(api_key: str | None) -> dict[str, str]:
    from sightline import __version__

    headers = {"User-Agent": f"sightline-python/{__version__} (doctor)"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _count(number: int, one: str, many: str) -> str:
    """``1 batch``, ``3 batches``."""
    return f"{number} {one if number == 1 else many}"
