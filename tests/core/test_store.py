"""The embedded SQLite store (ARCHITECTURE.md §7): WAL, versioned schema with forward migrations,
idempotent writes, trace summaries, filtered and paginated listings, stats."""

from __future__ import annotations

import json
import os
import sqlite3
import threading

import pytest

import sightline
from sightline.event import ErrorInfo, Event, EventType, Usage
from sightline.exporters.sqlite import SqliteExporter
from sightline.store import SCHEMA_VERSION, SqliteStore, TraceFilter, open_store
from sightline.store.sqlite import MIGRATIONS

BASE_NS = 1_773_480_000_000_000_000  # 2026-03-14T09:20:00Z
MS = 1_000_000


@pytest.fixture
def store(tmp_path):
    opened = SqliteStore(str(tmp_path / "store.db"))
    yield opened
    opened.close()


def span(
    trace: str,
    name: str,
    *,
    type: str = "run",
    parent: Event | None = None,
    status: str = "ok",
    start_ms: float = 0,
    duration_ms: float = 10,
    agent: str | None = None,
    model: str | None = None,
    tokens: tuple[int, int] | None = None,
    cost: float | None = None,
    kind: str = "unknown",
) -> Event:
    """An event of trace ``trace`` (a short tag, padded to a trace id) at BASE_NS + start_ms."""
    start = BASE_NS + int(start_ms * MS)
    return Event(
        type,
        name,
        trace_id=trace_id(trace),
        parent_span_id=parent.span_id if parent is not None else None,
        status=status,
        start_ns=start,
        end_ns=start + int(duration_ms * MS),
        agent=agent if agent is not None or parent is None else parent.agent,
        model=model,
        usage=Usage(*tokens) if tokens else None,
        cost_usd=cost,
        error=ErrorInfo("Error", f"{name} failed", kind=kind) if status == "error" else None,
    )


def trace_id(tag: str) -> str:
    return tag.encode().hex().ljust(32, "0")[:32]


def simple_trace(store: SqliteStore, tag: str, **root_fields) -> Event:
    root = span(tag, f"run-{tag}", **root_fields)
    start_ms = root_fields.get("start_ms", 0) + 1
    child = span(tag, f"child-{tag}", type="tool_call", parent=root, start_ms=start_ms)
    store.insert_events([child, root])
    return root


# -- schema and migrations -----------------------------------------------------------------------


def test_store_uses_the_wal_journal(store):
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_fresh_file_is_migrated_to_the_current_schema_version(tmp_path):
    path = tmp_path / "fresh.db"
    store = SqliteStore(str(path))
    store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"events", "traces", "agents"} <= tables
    assert len(MIGRATIONS) == SCHEMA_VERSION


def test_migrations_run_forward_from_every_older_version(tmp_path):
    for version in range(SCHEMA_VERSION):
        path = tmp_path / f"v{version}.db"
        conn = sqlite3.connect(path)
        for script in MIGRATIONS[:version]:
            conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
        conn.close()
        store = SqliteStore(str(path))
        try:
            assert store.schema_version == SCHEMA_VERSION
            store.insert_events([span("m", "run")])
            assert store.count_events() == 1
        finally:
            store.close()


def test_migrate_on_a_current_file_is_a_no_op(tmp_path):
    path = str(tmp_path / "current.db")
    store = SqliteStore(path)
    simple_trace(store, "keep")
    schema_before = store._conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    store.close()
    reopened = SqliteStore(path)
    try:
        assert reopened.migrate() == SCHEMA_VERSION
        schema_after = reopened._conn.execute(
            "SELECT sql FROM sqlite_master ORDER BY name"
        ).fetchall()
        assert [tuple(r) for r in schema_after] == [tuple(r) for r in schema_before]
        assert reopened.count_events() == 2
    finally:
        reopened.close()


def test_a_file_from_a_newer_sightline_raises(tmp_path):
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(
        RuntimeError, match=rf"schema version {SCHEMA_VERSION + 1}.*upgrade sightline"
    ):
        SqliteStore(str(path))


def test_concurrent_first_opens_of_a_fresh_file_all_succeed(tmp_path):
    for attempt in range(3):
        path = str(tmp_path / f"race-{attempt}.db")
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []
        stores: list[SqliteStore] = []

        def open_it(path=path, barrier=barrier, errors=errors, stores=stores):
            barrier.wait()
            try:
                stores.append(SqliteStore(path))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for opened in stores:
            assert opened.schema_version == SCHEMA_VERSION
            opened.close()
        assert errors == []


def test_the_store_has_the_indexes_its_queries_need(store):
    indexes = {
        name: table
        for name, table in store._conn.execute(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'"
        )
    }
    assert indexes == {
        "events_trace": "events",
        "events_model": "events",
        "traces_start": "traces",
        "traces_agent": "traces",
        "traces_status": "traces",
        "sqlite_autoindex_traces_1": "traces",
        "sqlite_autoindex_agents_1": "agents",
    }
    # One index on events: the idempotency key (trace_id, id), unique, which also answers
    # reading a trace and "runs containing a type" (a trace's rows are few).
    columns = [row[2] for row in store._conn.execute("PRAGMA index_info(events_trace)")]
    assert columns == ["trace_id", "id"]
    unique = {row[1]: row[2] for row in store._conn.execute("PRAGMA index_list(events)")}
    assert unique == {"events_trace": 1, "events_model": 0}
    plan = " ".join(
        row[3]
        for row in store._conn.execute(
            "EXPLAIN QUERY PLAN SELECT body FROM events WHERE trace_id = ? ORDER BY start_ns",
            ("t",),
        )
    )
    assert "USING INDEX events_trace (trace_id=?)" in plan


def test_a_version_1_file_keeps_its_events_through_the_migration(tmp_path):
    """Version 1 kept the whole wire event in the body; version 2 keeps only what has no
    column. Every event must read back exactly as it was written."""
    path = tmp_path / "v1.db"
    root = span("old", "run", agent="bot", tokens=(5, 7), cost=0.25)
    root.metadata = {"plan": "pro"}
    root.tags = ["nightly"]
    root.input = {"question": "refund?"}
    child = span("old", "tool", type="tool_call", parent=root, status="error", kind="tool")
    child.output = [1, "two", None]
    wire = [root.to_dict(), child.to_dict()]
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    for data in wire:
        conn.execute(
            "INSERT INTO events (id, trace_id, span_id, parent_span_id, type, name, status, "
            "start_ns, end_ns, duration_ms, agent, model, input_tokens, output_tokens, "
            "total_tokens, cost_usd, error_kind, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                data["id"], data["trace_id"], data["span_id"], data["parent_span_id"],
                data["type"], data["name"], data["status"], BASE_NS, BASE_NS + 10 * MS,
                data["duration_ms"], data["agent"], data["model"],
                (data["usage"] or {}).get("input_tokens"),
                (data["usage"] or {}).get("output_tokens"),
                (data["usage"] or {}).get("total_tokens"), data["cost_usd"],
                (data["error"] or {}).get("kind"), json.dumps(data),
            ),
        )  # fmt: skip
    conn.execute(
        "INSERT INTO traces (trace_id, name, start_ns, end_ns, event_count) VALUES (?, ?, ?, ?, 2)",
        (root.trace_id, "run", BASE_NS, BASE_NS + 10 * MS),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    store = SqliteStore(str(path))
    try:
        assert store.schema_version == SCHEMA_VERSION
        events = store.get_trace(root.trace_id)["events"]
        assert sorted(events, key=lambda e: e["name"]) == sorted(wire, key=lambda e: e["name"])
        body = store._conn.execute("SELECT body FROM events WHERE id = ?", (root.span_id,))
        assert json.loads(body.fetchone()[0]) == {
            "input": {"question": "refund?"},
            "output": None,
            "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12},
            "error": None,
            "metadata": {"plan": "pro"},
            "tags": ["nightly"],
        }
        # The key carried over: the same events again are duplicates.
        assert store.insert_events(wire) == 0
    finally:
        store.close()


def test_opening_a_missing_file_read_only_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no Sightline store at .*--db PATH"):
        SqliteStore(str(tmp_path / "missing.db"), readonly=True)


# -- writing -------------------------------------------------------------------------------------


def test_writing_the_same_event_twice_stores_it_once(store):
    root = span("dup", "run", tokens=(5, 5), cost=0.5)
    child = span("dup", "llm", type="llm_invoke", parent=root, tokens=(10, 2), cost=0.01)
    assert store.insert_events([child, root]) == 2
    assert store.insert_events([child, root]) == 0
    assert store.insert_events([child, child]) == 0
    assert store.count_events() == 2
    [summary], _ = store.list_traces()
    assert summary["event_count"] == 2
    assert summary["usage"] == {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12}
    assert summary["cost_usd"] == 0.01


def test_the_same_id_twice_in_one_batch_is_stored_once(store):
    event = span("same", "run")
    assert store.insert_events([event, event]) == 1
    assert store.count_events() == 1
    assert store.get_trace(trace_id("same"))["event_count"] == 1


def test_wire_dicts_are_stored_like_events(store):
    wire = span("wire", "llm", type="llm_invoke", tokens=(3, 4)).to_dict()
    assert store.insert_events([wire]) == 1
    trace = store.get_trace(wire["trace_id"])
    assert trace["events"] == [wire]
    assert trace["usage"]["total_tokens"] == 7


def test_a_batch_of_old_and_new_events_stores_only_the_new_ones(store):
    root = span("mixed", "run")
    first = span("mixed", "a", type="tool_call", parent=root, tokens=(1, 1))
    second = span("mixed", "b", type="tool_call", parent=root, tokens=(2, 2))
    assert store.insert_events([root, first]) == 2
    assert store.insert_events([first, second, second]) == 1
    assert store.count_events() == 3
    summary = store.get_trace(root.trace_id)
    assert summary["event_count"] == 3
    assert summary["usage"]["total_tokens"] == 6
    assert [e["name"] for e in summary["events"]] == ["run", "a", "b"]


def test_events_read_back_exactly_as_their_wire_form(store):
    root = span("exact", "run", agent="bot", tokens=(3, 4), cost=0.5)
    root.metadata = {"plan": "pro", "nested": {"k": [1, 2.5, None]}}
    root.tags = ["a", "b"]
    root.session_id = "s-1"
    root.framework = "langchain"
    try:
        raise ValueError("bad input")
    except ValueError as exc:
        failed = span("exact", "tool", type="tool_call", parent=root, status="error")
        failed.error = ErrorInfo.from_exception(exc, kind="tool")
    failed.input = {"q": "x" * 50}
    bare = span("exact", "bare", type="custom", parent=root)
    store.insert_events([root, failed, bare])
    expected = [e.to_dict() for e in (root, failed, bare)]
    assert "ValueError: bad input" in expected[1]["error"]["stack"]
    assert store.get_trace(root.trace_id)["events"] == expected
    assert store.events_after(0)[0] == expected
    # Columns are not repeated in the body; an event with nothing else stores "{}".
    bodies = [r[0] for r in store._conn.execute("SELECT body FROM events ORDER BY rowid")]
    assert json.loads(bodies[2]) == {}
    assert set(json.loads(bodies[0])) == {"usage", "metadata", "tags"}


def test_register_agent_is_listed_once_with_its_latest_details(store):
    store.register_agent("support-bot", "plain", {"version": 1})
    store.register_agent("support-bot", "langchain", {"version": 2})
    assert store.agents() == [
        {"name": "support-bot", "framework": "langchain", "metadata": {"version": 2}}
    ]


def test_the_sqlite_exporter_is_the_default_without_an_endpoint(monkeypatch, tmp_path):
    path = tmp_path / "env" / "events.db"
    monkeypatch.setenv("SIGHTLINE_DB", str(path))
    with sightline.Client() as client:
        [exporter] = client.exporters
        assert isinstance(exporter, SqliteExporter)
        assert exporter.path == str(path)
        client.register_agent("bot", framework="plain")
        client.log_event("tool_call", "search")
    store = SqliteStore(str(path))
    try:
        assert store.count_events() == 1
        assert [a["name"] for a in store.agents()] == ["bot"]
    finally:
        store.close()


def test_init_records_into_dot_sightline_in_the_working_directory(tmp_path):
    sightline.init(instrument=False)
    with sightline.trace("cwd-run"):
        pass
    sightline.shutdown()
    store = open_store()
    try:
        assert os.path.samefile(store.path, tmp_path / ".sightline" / "sightline.db")
        [summary], _ = store.list_traces()
        assert summary["name"] == "cwd-run"
    finally:
        store.close()


# -- trace summaries -----------------------------------------------------------------------------


def test_trace_status_is_the_roots_status_after_a_retried_tool_failure(store):
    root = span("retry", "ticket", duration_ms=100)
    failed = span("retry", "search", type="tool_call", parent=root, status="error", kind="tool",
                  start_ms=1)  # fmt: skip
    retried = span("retry", "search", type="tool_call", parent=root, start_ms=20)
    store.insert_events([failed])
    store.insert_events([retried, root])
    summary = store.get_trace(trace_id("retry"))
    assert (summary["status"], summary["error_count"], summary["event_count"]) == ("ok", 1, 3)


def test_trace_status_is_error_when_the_root_failed(store):
    root = span("fail", "ticket", status="error", kind="orchestration")
    store.insert_events([span("fail", "search", type="tool_call", parent=root), root])
    assert store.get_trace(trace_id("fail"))["status"] == "error"


def test_a_trace_whose_root_has_not_arrived_is_named_after_its_first_event(store):
    root = span("late", "the-run")
    store.insert_events(
        [span("late", "early-child", type="tool_call", parent=root, status="error")]
    )
    assert store.get_trace(trace_id("late"))["name"] == "early-child"
    assert store.get_trace(trace_id("late"))["status"] == "error"
    store.insert_events([root])
    summary = store.get_trace(trace_id("late"))
    assert (summary["name"], summary["status"]) == ("the-run", "ok")


def test_trace_tokens_and_cost_are_summed_from_non_aggregate_events(store):
    root = span("sum", "run", tokens=(300, 30), cost=0.03)
    agent = span("sum", "agent", type="agent", parent=root, tokens=(300, 30), cost=0.03)
    chain = span("sum", "chain", type="chain", parent=agent, tokens=(300, 30), cost=0.03)
    llm1 = span("sum", "llm1", type="llm_invoke", parent=chain, tokens=(100, 10), cost=0.01)
    llm2 = span("sum", "llm2", type="llm_invoke", parent=chain, tokens=(200, 20), cost=0.02)
    embed = span("sum", "embed", type="embedding", parent=agent, tokens=(50, 0))
    store.insert_events([llm1, llm2, chain, embed, agent, root])
    summary = store.get_trace(trace_id("sum"))
    assert summary["usage"] == {"input_tokens": 350, "output_tokens": 30, "total_tokens": 380}
    assert summary["cost_usd"] == 0.03


def test_trace_times_span_from_the_earliest_start_to_the_latest_end(store):
    root = span("times", "run", start_ms=0, duration_ms=50)
    late_child = span("times", "late", type="custom", parent=root, start_ms=40, duration_ms=30)
    store.insert_events([late_child, root])
    summary = store.get_trace(trace_id("times"))
    assert summary["duration_ms"] == 70.0
    assert summary["start_time"] == "2026-03-14T09:20:00.000000Z"


# -- reading -------------------------------------------------------------------------------------


def test_get_trace_returns_the_summary_and_events_in_start_order(store):
    root = simple_trace(store, "get")
    trace = store.get_trace(root.trace_id)
    assert trace["trace_id"] == root.trace_id
    assert [e["name"] for e in trace["events"]] == ["run-get", "child-get"]
    assert trace["events"][1]["parent_span_id"] == root.span_id


def test_get_trace_accepts_a_unique_prefix(store):
    root = simple_trace(store, "prefix")
    assert store.get_trace(root.trace_id[:6])["trace_id"] == root.trace_id


def test_get_trace_returns_none_for_an_ambiguous_short_or_unknown_id(store):
    simple_trace(store, "abc1")
    simple_trace(store, "abc2")
    assert store.get_trace(trace_id("abc")[:6]) is None  # both traces share it
    assert store.get_trace(trace_id("abc1")[:3]) is None  # shorter than 4
    assert store.get_trace("f" * 32) is None


def listing(store: SqliteStore, **filters) -> list[str]:
    traces, _ = store.list_traces(TraceFilter(**filters))
    return [t["name"] for t in traces]


@pytest.fixture
def populated(store):
    """Four traces: a(alpha, ok, tool) b(alpha, error, llm) c(beta, ok, retrieval) d(gamma)."""
    simple_trace(store, "a", agent="alpha", start_ms=0)
    root = span("b", "run-b", agent="alpha", start_ms=1000, status="error")
    store.insert_events(
        [span("b", "llm_50%_off", type="llm_invoke", parent=root, start_ms=1001), root]
    )
    root = span("c", "run-c", agent="beta", start_ms=2000)
    store.insert_events(
        [span("c", "retrieve_docs", type="retrieval", parent=root, start_ms=2001), root]
    )
    store.insert_events([span("d", "run-d", agent="gamma", start_ms=3000)])
    return store


def test_list_traces_returns_newest_first(populated):
    assert listing(populated) == ["run-d", "run-c", "run-b", "run-a"]


def test_list_traces_filters_by_agent(populated):
    assert listing(populated, agent="alpha") == ["run-b", "run-a"]


def test_list_traces_filters_by_status(populated):
    assert listing(populated, status="error") == ["run-b"]
    assert listing(populated, status="ok") == ["run-d", "run-c", "run-a"]


def test_list_traces_filters_by_a_type_the_trace_contains(populated):
    assert listing(populated, type="tool_call") == ["run-a"]
    assert listing(populated, type="retrieval") == ["run-c"]
    assert listing(populated, type="run") == ["run-d", "run-c", "run-b", "run-a"]


def test_list_traces_filters_by_since_and_until(populated):
    assert listing(populated, since_ns=BASE_NS + 1000 * MS) == ["run-d", "run-c", "run-b"]
    assert listing(populated, until_ns=BASE_NS + 2000 * MS) == ["run-b", "run-a"]
    assert listing(populated, since_ns=BASE_NS + 1000 * MS, until_ns=BASE_NS + 2000 * MS) == [
        "run-b"
    ]


def test_list_traces_q_matches_trace_and_event_names_literally(populated):
    assert listing(populated, q="run-c") == ["run-c"]
    assert listing(populated, q="retrieve") == ["run-c"]
    assert listing(populated, q="50%_off") == ["run-b"]
    assert listing(populated, q="%") == ["run-b"]
    assert listing(populated, q="_docs") == ["run-c"]
    assert listing(populated, q="nothing-like-this") == []


def test_list_traces_combines_filters(populated):
    assert listing(populated, agent="alpha", status="ok", type="tool_call") == ["run-a"]
    assert listing(populated, agent="beta", status="error") == []


def test_cursor_pagination_returns_every_trace_exactly_once(store):
    expected = []
    for i in range(25):
        # Groups of three traces share a start time: the cursor must break the ties.
        root = span(f"p{i:02d}", f"run-{i:02d}", start_ms=(i // 3) * 10)
        store.insert_events([root])
        expected.append(root.trace_id)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        traces, cursor = store.list_traces(TraceFilter(limit=7, cursor=cursor))
        seen.extend(t["trace_id"] for t in traces)
        pages += 1
        if cursor is None:
            break
    assert pages == 4
    assert len(seen) == 25
    assert sorted(seen) == sorted(expected)
    starts = [store.get_trace(t)["start_time"] for t in seen]
    assert starts == sorted(starts, reverse=True)


def test_cursor_pagination_keeps_the_filters(populated):
    first, cursor = populated.list_traces(TraceFilter(agent="alpha", limit=1))
    second, end = populated.list_traces(TraceFilter(agent="alpha", limit=1, cursor=cursor))
    assert [t["name"] for t in first + second] == ["run-b", "run-a"]
    assert end is None


def test_events_after_returns_new_events_and_the_new_position(store):
    simple_trace(store, "t1")
    position = store.last_position()
    assert store.events_after(position) == ([], position)
    simple_trace(store, "t2")
    events, new_position = store.events_after(position)
    assert sorted(e["name"] for e in events) == ["child-t2", "run-t2"]
    assert new_position == store.last_position() > position


# -- stats ---------------------------------------------------------------------------------------


@pytest.fixture
def measured(store):
    """Four traces of 10, 20, 30 and 40 ms by two agents, with model calls of two models."""
    t1 = span("s1", "run", agent="alpha", duration_ms=10)
    t2 = span("s2", "run", agent="alpha", duration_ms=20, start_ms=100, status="error")
    t3 = span("s3", "run", agent="alpha", duration_ms=30, start_ms=200)
    t4 = span("s4", "run", agent="beta", duration_ms=40, start_ms=300, model="gpt-4o-mini",
              tokens=(400, 40), cost=0.004)  # fmt: skip
    store.insert_events([
        span("s1", "llm", type="llm_invoke", parent=t1, duration_ms=5, model="gpt-4o-mini",
             tokens=(100, 10), cost=0.001),
        t1,
        span("s2", "llm", type="llm_invoke", parent=t2, start_ms=100, duration_ms=15,
             model="gpt-4o-mini", tokens=(200, 20), cost=0.002, status="error", kind="model"),
        t2,
        span("s3", "llm", type="llm_invoke", parent=t3, start_ms=200, duration_ms=25,
             model="claude-haiku", tokens=(300, 30), cost=0.003),
        span("s3", "tool", type="tool_call", parent=t3, start_ms=201, duration_ms=1),
        t3,
        span("s4", "llm", type="llm_invoke", parent=t4, start_ms=300, duration_ms=35,
             model="gpt-4o-mini", tokens=(400, 40), cost=0.004),
        t4,
    ])  # fmt: skip
    return store


def test_stats_count_traces_events_failures_tokens_and_cost(measured):
    stats = measured.stats()
    assert {k: v for k, v in stats.items() if k not in ("by_agent", "by_model")} == {
        "traces": 4,
        "events": 9,
        "failed_traces": 1,
        "error_events": 2,
        "error_rate": 0.25,
        "latency_ms": {"p50": 20.0, "p95": 40.0},
        "input_tokens": 1000,
        "output_tokens": 100,
        "total_tokens": 1100,
        "cost_usd": 0.01,
    }


def test_stats_percentiles_are_nearest_rank(store):
    for i, duration in enumerate([70, 10, 50, 30, 90, 20, 60, 40, 80, 100, 110]):
        store.insert_events([span(f"n{i}", "run", duration_ms=duration, start_ms=i * 1000)])
    assert store.stats()["latency_ms"] == {"p50": 60.0, "p95": 110.0}


def test_stats_by_agent(measured):
    assert sorted(measured.stats()["by_agent"], key=lambda a: a["agent"]) == [
        {"agent": "alpha", "traces": 3, "failed": 1, "input_tokens": 600, "output_tokens": 60,
         "total_tokens": 660, "cost_usd": 0.006},
        {"agent": "beta", "traces": 1, "failed": 0, "input_tokens": 400, "output_tokens": 40,
         "total_tokens": 440, "cost_usd": 0.004},
    ]  # fmt: skip


def test_stats_by_model_counts_model_calls_only(measured):
    assert measured.stats()["by_model"] == [
        {"model": "gpt-4o-mini", "calls": 3, "failed": 1, "input_tokens": 700,
         "output_tokens": 70, "total_tokens": 770, "cost_usd": 0.007, "avg_ms": 18.333},
        {"model": "claude-haiku", "calls": 1, "failed": 0, "input_tokens": 300,
         "output_tokens": 30, "total_tokens": 330, "cost_usd": 0.003, "avg_ms": 25.0},
    ]  # fmt: skip


def test_stats_filter_by_agent_and_since(measured):
    beta = measured.stats(agent="beta")
    assert (beta["traces"], beta["total_tokens"], beta["latency_ms"]) == (
        1,
        440,
        {"p50": 40.0, "p95": 40.0},
    )
    recent = measured.stats(since_ns=BASE_NS + 150 * MS)
    assert (recent["traces"], recent["events"], recent["cost_usd"]) == (2, 5, 0.007)


def test_stats_of_an_empty_store(store):
    stats = store.stats()
    assert (stats["traces"], stats["error_rate"], stats["latency_ms"]) == (
        0,
        0.0,
        {"p50": None, "p95": None},
    )
    assert (stats["by_agent"], stats["by_model"]) == ([], [])


def test_an_event_type_filter_rejects_nothing_silently(store):
    store.insert_events([span("x", "run")])
    assert listing(store, type=EventType.RUN.value) == ["run"]
