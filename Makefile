# Sightline — the two set-up commands are `make demo` and `make test`; both bootstrap uv
# with pip when it is missing, then install the whole workspace from uv.lock.

UV = $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PYTHON = .venv/bin/python
DEMO_DB ?= .sightline/demo.db

.PHONY: help setup test demo lint format bench clean

help:
	@echo "make demo   run the offline example agents and show their traces"
	@echo "make test   run the whole test suite"
	@echo "make lint   ruff (check + format --check) and mypy on the core"
	@echo "make bench  run the benchmarks (installs the peer SDKs of the bench group)"

setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
		(echo "installing uv with pip" && python3 -m pip install --quiet uv)
	$(UV) sync --all-packages --locked

test: setup
	$(UV) run --no-sync pytest -q

demo: setup
	@rm -f $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm
	@echo "== plain Python: a support agent with decorated tools and a retried failure"
	SIGHTLINE_DB=$(DEMO_DB) $(PYTHON) examples/support_agent.py
	SIGHTLINE_DB=$(DEMO_DB) .venv/bin/sightline show latest
	@for example in langchain crewai autogen llamaindex; do \
		if [ -f examples/$${example}_agent.py ]; then \
			echo; echo "== $$example"; \
			SIGHTLINE_DB=$(DEMO_DB) $(PYTHON) examples/$${example}_agent.py || exit 1; \
			SIGHTLINE_DB=$(DEMO_DB) .venv/bin/sightline show latest || exit 1; \
		fi; \
	done
	@echo; echo "== writing a plugin: a processor that tags and redacts"
	SIGHTLINE_DB=$(DEMO_DB) $(PYTHON) examples/plugin_example.py
	@echo; echo "== governance: a policy plugin decides before each LangChain tool runs"
	SIGHTLINE_DB=$(DEMO_DB) $(PYTHON) examples/governance_example.py
	SIGHTLINE_DB=$(DEMO_DB) .venv/bin/sightline show latest
	@echo; echo "== every run of the demo"
	SIGHTLINE_DB=$(DEMO_DB) .venv/bin/sightline runs
	SIGHTLINE_DB=$(DEMO_DB) .venv/bin/sightline stats

lint: setup
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync ruff format --check .
	$(UV) run --no-sync mypy packages/core/src/sightline

format: setup
	$(UV) run --no-sync ruff check --fix .
	$(UV) run --no-sync ruff format .

bench: setup
	$(UV) sync --all-packages --locked --group bench
	@for bench in benchmarks/bench_*.py; do \
		echo; echo "== $$bench"; \
		$(PYTHON) $$bench || exit 1; \
	done

clean:
	rm -rf .sightline .pytest_cache .mypy_cache .ruff_cache
