"""The durable spool on its own: atomic files, order, byte bound, claims across processes."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sightline.spool import MAGIC, SpoolCorrupt, SpoolDirectory, spool_path_for


def _body(ids: list[str]) -> bytes:
    return json.dumps({"events": [{"id": i} for i in ids]}).encode()


def test_a_written_batch_reads_back_with_its_header(tmp_path: Path) -> None:
    spool = SpoolDirectory(str(tmp_path / "spool"))
    path = spool.write(_body(["a", "b"]), events=2)
    assert path is not None and path.endswith("-n2.batch")
    [entry] = spool.entries()
    header, body = spool.read(entry)
    assert header["events"] == 2 and header["encoding"] == "identity"
    assert json.loads(body) == {"events": [{"id": "a"}, {"id": "b"}]}
    assert [e["id"] for e in spool.read_events(entry)] == ["a", "b"]
    assert spool.written_events == 2 and spool.written_batches == 1


def test_gzip_bodies_are_kept_as_sent(tmp_path: Path) -> None:
    spool = SpoolDirectory(str(tmp_path))
    spool.write(gzip.compress(_body(["z"])), events=1, encoding="gzip")
    [entry] = spool.entries()
    assert spool.read(entry)[0]["encoding"] == "gzip"
    assert spool.read_events(entry) == [{"id": "z"}]


def test_entries_are_listed_oldest_first(tmp_path: Path) -> None:
    spool = SpoolDirectory(str(tmp_path))
    for n in range(30):
        spool.write(_body([f"e{n}"]), events=1)
    ids = [spool.read_events(e)[0]["id"] for e in spool.entries()]
    assert ids == [f"e{n}" for n in range(30)]


def test_writes_are_atomic_no_temp_file_is_left_and_files_are_private(tmp_path: Path) -> None:
    spool = SpoolDirectory(str(tmp_path))
    path = spool.write(_body(["a"]), events=1)
    assert path is not None
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")] == []
    assert os.stat(path).st_mode & 0o077 == 0


def test_the_oldest_batches_are_evicted_to_stay_under_the_byte_limit(tmp_path: Path) -> None:
    body = _body([f"x{n}" for n in range(20)])
    one_file = len(MAGIC) + 200 + len(body)
    spool = SpoolDirectory(str(tmp_path), max_bytes=one_file * 5)
    for _n in range(12):
        spool.write(body, events=20)
    usage = spool.usage()
    assert usage.bytes <= spool.max_bytes
    assert usage.files + spool.evicted_batches == 12
    assert spool.evicted_events == 20 * spool.evicted_batches > 0
    # What is left is the newest.
    names = [e.name for e in spool.entries()]
    assert names == sorted(names)
    assert int(names[0].split("-")[2]) == spool.evicted_batches + 1


def test_a_batch_larger_than_the_whole_spool_is_not_kept_and_counted(tmp_path: Path) -> None:
    spool = SpoolDirectory(str(tmp_path), max_bytes=100)
    assert spool.write(b"x" * 500, events=7) is None
    assert spool.evicted_events == 7 and spool.entries() == []


def test_a_disabled_spool_keeps_nothing(tmp_path: Path) -> None:
    spool = SpoolDirectory(str(tmp_path / "s"), max_bytes=0)
    assert not spool.enabled
    assert spool.write(_body(["a"]), events=1) is None
    assert not (tmp_path / "s").exists()


def test_a_claimed_batch_cannot_be_claimed_again_until_released(tmp_path: Path) -> None:
    spool = SpoolDirectory(str(tmp_path))
    spool.write(_body(["a"]), events=1)
    [entry] = spool.entries()
    first = spool.claim(entry)
    assert first is not None
    other = SpoolDirectory(str(tmp_path))  # a second sender (its own descriptor)
    assert other.claim(entry) is None
    first.release()
    second = other.claim(entry)
    assert second is not None
    second.delete()
    assert spool.entries() == []
    assert spool.claim(entry) is None  # gone


def test_a_claimed_batch_is_not_evicted(tmp_path: Path) -> None:
    body = _body(["a" * 50])
    spool = SpoolDirectory(str(tmp_path), max_bytes=(len(body) + 200) * 2)
    spool.write(body, events=1)
    [oldest] = spool.entries()
    held = spool.claim(oldest)
    assert held is not None
    for _ in range(3):
        spool.write(body, events=1)
    assert oldest.path in [e.path for e in spool.entries()]
    held.release()


def test_a_claim_of_a_file_deleted_meanwhile_fails(tmp_path: Path) -> None:
    spool = SpoolDirectory(str(tmp_path))
    spool.write(_body(["a"]), events=1)
    [entry] = spool.entries()
    os.unlink(entry.path)
    assert spool.claim(entry) is None


def test_a_corrupt_file_is_set_aside_and_counted_never_sent(tmp_path: Path) -> None:
    spool = SpoolDirectory(str(tmp_path))
    spool.write(_body(["a"]), events=1)
    [entry] = spool.entries()
    data = Path(entry.path).read_bytes()
    Path(entry.path).write_bytes(data[:-3] + b"XYZ")
    with pytest.raises(SpoolCorrupt):
        spool.read(entry)
    assert spool.claim(entry) is None
    assert spool.corrupt_files == 1
    assert spool.entries() == []
    assert os.listdir(tmp_path / "corrupt") == [entry.name]
    assert spool.usage().corrupt_files == 1


def test_stale_temp_files_of_crashed_writers_are_removed(tmp_path: Path) -> None:
    spool = SpoolDirectory(str(tmp_path))
    spool.write(_body(["a"]), events=1)
    stale = tmp_path / ".tmp-1-1-deadbeef"
    stale.write_bytes(b"SLSPOOL1\n{")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = tmp_path / ".tmp-2-1-cafebabe"
    fresh.write_bytes(b"")
    assert spool.usage().temp_files == 2
    assert spool.remove_stale_temp_files() == 1
    assert not stale.exists() and fresh.exists()
    assert len(spool.entries()) == 1


def test_each_endpoint_has_its_own_spool_directory(tmp_path: Path) -> None:
    a = spool_path_for(str(tmp_path), "http://127.0.0.1:7878")
    b = spool_path_for(str(tmp_path), "http://127.0.0.1:7878/")
    c = spool_path_for(str(tmp_path), "https://collector.example.com")
    assert a == b != c
    assert os.path.basename(a).startswith("127_0_0_1_7878-")
    assert os.path.basename(c).startswith("collector_example_com-")


def test_another_process_holding_a_claim_blocks_it_and_its_death_releases_it(
    tmp_path: Path,
) -> None:
    spool = SpoolDirectory(str(tmp_path))
    spool.write(_body(["a"]), events=1)
    [entry] = spool.entries()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from sightline.spool import SpoolDirectory
                spool = SpoolDirectory({str(tmp_path)!r})
                claimed = spool.claim(spool.entries()[0])
                print("held" if claimed else "missed", flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"held"
        assert spool.claim(entry) is None
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    claimed = spool.claim(entry)
    assert claimed is not None
    claimed.release()


def test_concurrent_drainers_in_several_processes_send_each_batch_once(tmp_path: Path) -> None:
    spool = SpoolDirectory(str(tmp_path / "spool"))
    for n in range(200):
        spool.write(_body([f"id{n}"]), events=1)
    out = tmp_path / "out"
    out.mkdir()
    script = textwrap.dedent(
        f"""
        import json, os, sys
        from sightline.spool import SpoolDirectory
        spool = SpoolDirectory({str(tmp_path / "spool")!r})
        sent = []
        while True:
            entries = spool.entries()
            if not entries:
                break
            for entry in entries:
                claimed = spool.claim(entry)
                if claimed is None:
                    continue
                sent += [e["id"] for e in spool.read_events(entry)]
                claimed.delete()
        with open(os.path.join({str(out)!r}, str(os.getpid())), "w") as f:
            json.dump(sent, f)
        """
    )
    processes = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(4)]
    for process in processes:
        assert process.wait(60) == 0
    sent: list[str] = []
    for name in os.listdir(out):
        sent += json.loads((out / name).read_text())
    assert sorted(sent) == sorted(f"id{n}" for n in range(200))  # each exactly once
    assert spool.entries() == []
