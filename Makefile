# The two commands a user needs: `make demo` (the main job on built-in data) and `make test`.
# Both set up ./.venv first if needed; `make install` does only the set-up.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.adrank-installed

.PHONY: install demo test test-fast lint bench-stats peers clean

$(STAMP): pyproject.toml constraints.txt scripts/install.sh
	bash scripts/install.sh $(VENV)
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/adrank demo

test: $(STAMP)
	$(PY) -m pytest

# Unit tests only (no subprocesses, no servers): the quick inner loop.
test-fast: $(STAMP)
	$(PY) -m pytest tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy adrank sharding_planner pruning embed_store feature_service ranker

bench-stats: $(STAMP)
	$(PY) -m bench stats --config bench/configs/stats.yaml

# Peer systems for side-by-side benchmarks (Feast, DuckDB, polars), in their own environment.
PEERS ?= .venv-peers
$(PEERS)/.installed: bench/requirements-peers.txt
	test -x $(PEERS)/bin/python || python3 -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install -q --disable-pip-version-check -r bench/requirements-peers.txt
	@touch $@

peers: $(PEERS)/.installed

clean:
	rm -rf $(VENV) $(PEERS) build *.egg-info .pytest_cache
