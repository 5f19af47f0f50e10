"""The durable spool: request bodies that could not be delivered yet, kept on disk in order.

A :class:`SpoolDirectory` holds one file per batch. Its guarantees:

- **Atomic writes.** A batch is written to a temporary file, ``fsync``-ed, then renamed into
  place (and the directory ``fsync``-ed), so a crash leaves either the whole file or none of it.
  Each file carries a header with the body's length and CRC-32; a file that fails the check is
  moved to ``corrupt/`` and counted, never sent.
- **Order.** File names start with a nanosecond timestamp (made strictly increasing within a
  process), then the process id and a sequence number; :meth:`SpoolDirectory.entries` lists them
  oldest first.
- **Bounded bytes.** Before a write, the oldest batches are evicted until the new one fits under
  ``max_bytes``; evicted events are counted (the count is in each file name).
- **Several processes, one spool.** A sender *claims* a file with an exclusive, non-blocking
  ``flock`` and checks that the path still names the inode it locked; it deletes the file after
  a 2xx, still holding the lock. Another process (or thread) skips a locked file, so no batch is
  sent twice by two senders, and a sender that dies releases its lock with its last descriptor,
  so nothing is stranded. On platforms without ``fcntl`` the spool works for one process.

File format (version 1)::

    SLSPOOL1\\n
    {"events": 512, "encoding": "gzip", "length": 48213, "crc32": 2840127791, "created_ns": ...}\\n
    <length bytes of body: the JSON request body {"events": [...]}, gzip-compressed if so encoded>
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sightline.logs import log_safely

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: single-process spool
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "ClaimedBatch",
    "SpoolCorrupt",
    "SpoolDirectory",
    "SpoolEntry",
    "SpoolUsage",
    "adopt_legacy_spool",
    "folder_obstacle",
    "spool_path_for",
]


MAGIC = b"SLSPOOL1\n"
SUFFIX = ".batch"
TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 300.0
_NAME = re.compile(r"^(\d{20})-(\d+)-(\d+)-n(\d+)\.batch$")


class SpoolCorrupt(ValueError):
    """A spool file does not have the expected header, length or checksum."""


@dataclass(frozen=True)
class SpoolEntry:
    """One spooled batch as listed from the directory (not read yet)."""

    name: str
    path: str
    events: int
    size: int
    created_ns: int


@dataclass(frozen=True)
class SpoolUsage:
    """What a spool holds right now."""

    path: str
    files: int
    events: int
    bytes: int
    max_bytes: int
    oldest_ns: int | None
    temp_files: int
    corrupt_files: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "files": self.files,
            "events": self.events,
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "oldest_ns": self.oldest_ns,
            "temp_files": self.temp_files,
            "corrupt_files": self.corrupt_files,
        }


def spool_path_for(base_dir: str, endpoint: str) -> str:
    """The spool directory of one endpoint inside ``base_dir``.

    Batches are kept per endpoint so that a process never delivers another collector's events
    (say, a local test server's) to the endpoint it is configured with now. Credentials in the
    URL (``user:password@``) are not part of the name (nor of its digest): they say nothing
    about where events go, and must not be written on disk.
    """
    import hashlib

    normalized = endpoint.strip().rstrip("/").lower()
    scheme, separator, rest = normalized.partition("://")
    if not separator:
        scheme, rest = "", normalized
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    host = rest[:cut]
    if "@" in host:
        host = host.rpartition("@")[2]
        normalized = scheme + separator + host + rest[cut:]
    slug = re.sub(r"[^a-z0-9]+", "_", host).strip("_")[:40] or "endpoint"
    digest = hashlib.sha256(normalized.encode()).hexdigest()[:8]
    return os.path.join(base_dir, f"{slug}-{digest}")


def folder_obstacle(path: str) -> str | None:
    """Why no spool can be kept in the folder ``path`` (a phrase naming what is in the way), or
    ``None`` when it is a folder this user can write, or one it can create.

    Example: ``"/var/tmp/sightline is not a folder"`` when a file of that name is there.
    """
    path = os.path.abspath(path)
    existing = path
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)  # the root always exists
    if not os.path.isdir(existing):
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"this user cannot write {existing}"
    return None


def _make_private_folders(path: str) -> None:
    """Create the folder ``path`` and its missing parents, each readable by this user only
    (``0700``); folders that exist already, such as a ``SIGHTLINE_SPOOL_DIR`` the user made, are
    left as they are.

    ``os.makedirs(path, mode=0o700)`` would give the parents it creates the default mode
    (``0755`` under the usual umask), so the endpoint's folder would show the names of its
    batches to every user.
    """
    missing: list[str] = []
    folder = os.path.abspath(path)
    while not os.path.isdir(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            if not os.path.isdir(folder):  # a file, or a link to nowhere, is in the way
                raise


def _legacy_spool_path_for(base_dir: str, endpoint: str) -> str:
    """The name earlier versions gave an endpoint's spool (credentials and query included)."""
    import hashlib

    normalized = endpoint.strip().rstrip("/").lower()
    host = normalized.split("://", 1)[-1].split("/", 1)[0]
    slug = re.sub(r"[^a-z0-9]+", "_", host).strip("_")[:40] or "endpoint"
    digest = hashlib.sha256(normalized.encode()).hexdigest()[:8]
    return os.path.join(base_dir, f"{slug}-{digest}")


def adopt_legacy_spool(base_dir: str, endpoint: str) -> int:
    """Move the batches an earlier version spooled for ``endpoint`` under its old directory name
    (which held the URL's credentials or query) into today's (:func:`spool_path_for`), and
    remove the old directory when it is left empty. Returns how many batches moved; never
    raises. A batch another process is sending is moved too: that sender finds its path gone
    and leaves it (see the module doc)."""
    try:
        old = _legacy_spool_path_for(base_dir, endpoint)
        new = spool_path_for(base_dir, endpoint)
        if old == new or not os.path.isdir(old):
            return 0
        _make_private_folders(new)
        moved = 0
        for name in os.listdir(old):
            if _NAME.match(name):
                try:
                    os.replace(os.path.join(old, name), os.path.join(new, name))
                    moved += 1
                except OSError:
                    pass
        for leftover in (os.path.join(old, "corrupt"), old):
            try:
                os.rmdir(leftover)  # only when empty
            except OSError:
                pass
        if moved:
            log_safely(
                logging.INFO,
                "sightline: %d spooled batch(es) moved to the spool's new directory",
                moved,
            )
        return moved
    except Exception:
        log_safely(
            logging.DEBUG, "sightline: could not look for an older spool directory", exc_info=True
        )
        return 0


class ClaimedBatch:
    """A spooled batch this process holds the lock of; :meth:`delete` or :meth:`release` it.

    Usable as a context manager that releases the lock (without deleting) on exit.
    """

    def __init__(
        self, spool: SpoolDirectory, entry: SpoolEntry, fd: int, header: dict[str, Any], body: bytes
    ) -> None:
        self.spool = spool
        self.entry = entry
        self.header = header
        self.body = body
        self._fd: int | None = fd

    @property
    def events(self) -> int:
        return int(self.header.get("events", self.entry.events))

    @property
    def encoding(self) -> str:
        return str(self.header.get("encoding", "identity"))

    def delete(self) -> None:
        """Remove the file (delivered or given up on), then release the lock."""
        try:
            os.unlink(self.entry.path)
        except FileNotFoundError:
            pass
        self.spool._forget(self.entry.size)
        self.release()

    def release(self) -> None:
        """Release the lock and leave the file for a later attempt."""
        fd, self._fd = self._fd, None
        if fd is not None:
            self.spool._claims.discard(self)
            os.close(fd)

    def __enter__(self) -> ClaimedBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class SpoolDirectory:
    """Batches on disk, oldest first, bounded in bytes, shared safely by several processes.

    Example::

        spool = SpoolDirectory("/var/tmp/sightline/spool", max_bytes=64 * 1024 * 1024)
        spool.write(body, events=512, encoding="gzip")
        for entry in spool.entries():
            claimed = spool.claim(entry)
            if claimed is None:
                continue  # another sender has it
            if send(claimed.body):
                claimed.delete()
            else:
                claimed.release()
    """

    def __init__(
        self, path: str, max_bytes: int = 256 * 1024 * 1024, *, fsync: bool = True
    ) -> None:
        self.path = os.path.abspath(path)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.written_events = 0
        self.written_batches = 0
        self.evicted_events = 0
        self.evicted_batches = 0
        self.corrupt_files = 0
        self._lock = threading.Lock()
        self._seq = 0
        self._last_ns = 0
        self._known_bytes = 0
        self._scanned_at = 0.0
        self._claims: set[ClaimedBatch] = set()
        self._made = False

    @property
    def enabled(self) -> bool:
        """False when ``max_bytes`` is 0: nothing is spooled."""
        return self.max_bytes > 0

    # -- writing ------------------------------------------------------------------------------

    def write(self, body: bytes, events: int, encoding: str = "identity") -> str | None:
        """Store one batch durably; returns its path, or ``None`` when it cannot be kept.

        The oldest batches are evicted first to make room. A batch larger than ``max_bytes``
        on its own (or any batch when the spool is disabled) is not kept and counts as evicted.
        """
        header = json.dumps(
            {
                "events": events,
                "encoding": encoding,
                "length": len(body),
                "crc32": zlib.crc32(body),
                "created_ns": time.time_ns(),
                "pid": os.getpid(),
            },
            separators=(",", ":"),
        ).encode()
        data = MAGIC + header + b"\n" + body
        with self._lock:
            if len(data) > self.max_bytes:
                self.evicted_events += events
                self.evicted_batches += 1
                if self.enabled:
                    log_safely(
                        logging.WARNING,
                        "sightline: a batch of %d events (%d bytes) is larger than the whole "
                        "spool (%d bytes) and was not kept",
                        events,
                        len(data),
                        self.max_bytes,
                    )
                return None
            self._ensure_dir()
            self._make_room(len(data))
            now = time.time_ns()
            self._last_ns = max(now, self._last_ns + 1)
            self._seq += 1
            pid = os.getpid()
            name = f"{self._last_ns:020d}-{pid}-{self._seq}-n{events}{SUFFIX}"
            temp = os.path.join(self.path, f"{TEMP_PREFIX}{pid}-{self._seq}-{os.urandom(4).hex()}")
            final = os.path.join(self.path, name)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if self.fsync:
                    os.fsync(fd)
            except BaseException:
                os.close(fd)
                _unlink_quietly(temp)
                raise
            os.close(fd)
            os.rename(temp, final)
            if self.fsync:
                self._fsync_dir()
            self._known_bytes += len(data)
            self.written_events += events
            self.written_batches += 1
            return final

    def _ensure_dir(self) -> None:
        if not self._made or not os.path.isdir(self.path):
            _make_private_folders(os.path.join(self.path, "corrupt"))
            self._made = True

    def _fsync_dir(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | _CLOEXEC)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _make_room(self, needed: int) -> None:
        # Other processes write here too, so the byte count is re-read from disk when it may
        # be stale or when it says we are over the limit.
        now = time.monotonic()
        if now - self._scanned_at > 1.0 or self._known_bytes + needed > self.max_bytes:
            entries = self.entries()
            self._known_bytes = sum(e.size for e in entries)
            self._scanned_at = now
            if self._known_bytes + needed <= self.max_bytes:
                return
            for entry in entries:
                if self._known_bytes + needed <= self.max_bytes:
                    break
                if self._evict(entry):
                    self._known_bytes -= entry.size

    def _evict(self, entry: SpoolEntry) -> bool:
        claimed = self._lock_file(entry)
        if claimed is None:
            return False  # being sent right now, or already gone
        fd, _ = claimed
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            return False
        finally:
            os.close(fd)
        self.evicted_events += entry.events
        self.evicted_batches += 1
        if self.evicted_batches in (1, 10, 100) or self.evicted_batches % 1000 == 0:
            log_safely(
                logging.WARNING,
                "sightline: spool %s is full (%d bytes); evicted its oldest batches "
                "(%d events so far)",
                self.path,
                self.max_bytes,
                self.evicted_events,
            )
        return True

    # -- reading ------------------------------------------------------------------------------

    def entries(self) -> list[SpoolEntry]:
        """The spooled batches, oldest first (temporary and corrupt files are not listed)."""
        found: list[SpoolEntry] = []
        try:
            iterator = os.scandir(self.path)
        except OSError:
            # Not there yet, or it cannot be (a file in the way, no permission): nothing spooled
            # to list. Writing there fails, and the exporter counts and reports that.
            return found
        with iterator:
            for item in iterator:
                match = _NAME.match(item.name)
                if match is None:
                    continue
                try:
                    size = item.stat().st_size
                except FileNotFoundError:
                    continue
                found.append(
                    SpoolEntry(
                        name=item.name,
                        path=item.path,
                        events=int(match.group(4)),
                        size=size,
                        created_ns=int(match.group(1)),
                    )
                )
        found.sort(key=lambda e: e.name)
        return found

    def __iter__(self) -> Iterator[SpoolEntry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self.entries())

    def claim(self, entry: SpoolEntry) -> ClaimedBatch | None:
        """Lock and read one batch; ``None`` when another sender holds it or it is gone.

        A file whose header or checksum is wrong is moved to ``corrupt/``, counted and skipped.
        """
        claimed = self._lock_file(entry)
        if claimed is None:
            return None
        fd, data = claimed
        try:
            header, body = _parse(data)
        except SpoolCorrupt as exc:
            self._quarantine(entry, exc)
            os.close(fd)
            return None
        batch = ClaimedBatch(self, entry, fd, header, body)
        self._claims.add(batch)
        return batch

    def read(self, entry: SpoolEntry | str) -> tuple[dict[str, Any], bytes]:
        """Header and body of a batch, checked, without locking it. Raises :class:`SpoolCorrupt`."""
        path = entry.path if isinstance(entry, SpoolEntry) else entry
        with open(path, "rb") as handle:
            return _parse(handle.read())

    def read_events(self, entry: SpoolEntry | str) -> list[dict[str, Any]]:
        """The events of a batch in their wire form (for inspection and tests)."""
        header, body = self.read(entry)
        return decode_body(body, str(header.get("encoding", "identity")))

    def usage(self) -> SpoolUsage:
        """Files, events and bytes held now (read from disk)."""
        entries = self.entries()
        temp = corrupt = 0
        try:
            temp = sum(1 for name in os.listdir(self.path) if name.startswith(TEMP_PREFIX))
            corrupt = len(os.listdir(os.path.join(self.path, "corrupt")))
        except OSError:  # not there, or not a folder this user can read
            pass
        return SpoolUsage(
            path=self.path,
            files=len(entries),
            events=sum(e.events for e in entries),
            bytes=sum(e.size for e in entries),
            max_bytes=self.max_bytes,
            oldest_ns=entries[0].created_ns if entries else None,
            temp_files=temp,
            corrupt_files=corrupt,
        )

    def remove_stale_temp_files(self, older_than: float = STALE_TEMP_SECONDS) -> int:
        """Delete temporary files left by writers that crashed mid-write; returns how many."""
        removed = 0
        cutoff = time.time() - older_than
        try:
            names = os.listdir(self.path)
        except OSError:
            return 0
        for name in names:
            if not name.startswith(TEMP_PREFIX):
                continue
            path = os.path.join(self.path, name)
            try:
                if os.stat(path).st_mtime < cutoff:
                    os.unlink(path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def after_fork(self) -> None:
        """In a forked child: let go of the parent's claims (their locks are the parent's)."""
        for claim in list(self._claims):
            fd, claim._fd = claim._fd, None
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._claims.clear()
        self._lock = threading.Lock()
        # This process's counts start at 0 (the files are shared; what the parent wrote is its).
        self.written_events = self.written_batches = 0
        self.evicted_events = self.evicted_batches = self.corrupt_files = 0

    # -- internals ----------------------------------------------------------------------------

    def _forget(self, size: int) -> None:
        with self._lock:
            self._known_bytes = max(0, self._known_bytes - size)

    def _lock_file(self, entry: SpoolEntry) -> tuple[int, bytes] | None:
        try:
            fd = os.open(entry.path, os.O_RDONLY | _CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    return None
            # The file may have been delivered and unlinked between open() and flock().
            try:
                current = os.stat(entry.path)
            except FileNotFoundError:
                os.close(fd)
                return None
            mine = os.fstat(fd)
            if current.st_ino != mine.st_ino or current.st_dev != mine.st_dev:
                os.close(fd)
                return None
            chunks = []
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
            return fd, b"".join(chunks)
        except BaseException:
            try:
                os.close(fd)
            except OSError:
                pass
            raise

    def _quarantine(self, entry: SpoolEntry, problem: Exception) -> None:
        self.corrupt_files += 1
        log_safely(
            logging.ERROR,
            "sightline: spool file %s is corrupt (%s); moved to corrupt/",
            entry.path,
            problem,
        )
        try:
            os.replace(entry.path, os.path.join(self.path, "corrupt", entry.name))
        except OSError:
            _unlink_quietly(entry.path)
        self._forget(entry.size)


def _parse(data: bytes) -> tuple[dict[str, Any], bytes]:
    if not data.startswith(MAGIC):
        raise SpoolCorrupt("missing SLSPOOL1 header")
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise SpoolCorrupt("truncated header")
    try:
        header = json.loads(data[len(MAGIC) : end])
    except ValueError as exc:
        raise SpoolCorrupt(f"unreadable header: {exc}") from None
    if not isinstance(header, dict):
        raise SpoolCorrupt("header is not an object")
    body = data[end + 1 :]
    if len(body) != header.get("length"):
        raise SpoolCorrupt(f"body is {len(body)} bytes, header says {header.get('length')}")
    if zlib.crc32(body) != header.get("crc32"):
        raise SpoolCorrupt("checksum mismatch")
    return header, body


def decode_body(body: bytes, encoding: str) -> list[dict[str, Any]]:
    """The event dicts of a request body ``{"events": [...]}`` (gzip or identity)."""
    raw = gzip.decompress(body) if encoding == "gzip" else body
    events = json.loads(raw)["events"]
    return list(events)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
