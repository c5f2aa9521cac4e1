# Two commands do everything on a fresh machine (Python 3.11, Java 17, Maven):
#   make demo   venv + dependencies, Kafka jars, broker, topics, model, worker, events in, scores out
#   make test   the whole test suite against a real Kafka broker the tests start themselves
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PYTEST_ARGS ?=
# The benchmark runs in a venv of its own: its peer (quixstreams) pins confluent-kafka and
# pydantic below what .venv resolves to. BENCH_ARGS, e.g. "--events 20000 --repeat 3".
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
BENCH_ARGS  ?=
# make profile PROFILE_ARGS="--events 50000 --models /work/profile-models": bench/profile.py
PROFILE_ARGS ?=

.PHONY: install demo test test-unit lint bench bench-shadow bench-canary bench-revisions bench-scale-soak profile clean broker-stop

$(STAMP): pyproject.toml
	@command -v java >/dev/null || { echo "Java 17 is required (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is required to fetch the Kafka jars (apt-get install maven)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/stream-app demo

# Two pytest processes (pytest-xdist), each with a broker of its own, whole files per process,
# the longest files first (tests/conftest.py). TEST_WORKERS=0: one process. The Quix peer's test
# runs its peer with .venv-bench's python (quixstreams cannot share .venv: see bench below).
TEST_WORKERS ?= 2
test: install lint $(BENCH_STAMP)
	STREAM_APP_TEST_QUIX_PYTHON=$(CURDIR)/$(BENCH_VENV)/bin/python \
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

test-unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

$(BENCH_STAMP): pyproject.toml
	@command -v java >/dev/null || { echo "Java 17 is required (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is required to fetch the Kafka jars (apt-get install maven)"; exit 1; }
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -e '.[dev,bench]'
	rm -f $(BENCH_VENV)/.installed-*
	touch $(BENCH_STAMP)

# Ours (the Faust worker) vs a plain consume->produce loop vs a Quix Streams peer: bench/harness.py
bench: install $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m bench $(BENCH_ARGS)

# Champion latency with the challenger's shadow off and on
bench-shadow: install
	$(BIN)/python bench/shadow_latency.py

# Worker throughput of git revisions side by side: make bench-revisions REVS="28d59f1 HEAD"
REVS ?= 28d59f1 HEAD
bench-revisions: install
	$(BIN)/python bench/revisions.py $(REVS)

# Throughput with a 5 % canary against the same challenger in shadow only, alternated in one run
bench-canary: install
	$(BIN)/python bench/canary.py $(BENCH_ARGS)

# 1 vs 2 worker processes on 6 partitions, then a 10-minute soak (RSS and state slope)
bench-scale-soak: install
	$(BIN)/python bench/scale_soak.py $(BENCH_ARGS)

# Where the worker's main-thread CPU goes per transaction (py-spy on one worker, handbook data)
profile: install
	@test -x $(BIN)/py-spy || $(BIN)/pip install --quiet py-spy
	$(BIN)/python -m bench.profile $(PROFILE_ARGS)

# lint-imports: the import contracts of pyproject.toml ([tool.importlinter]: imports run one way)
lint: install
	$(BIN)/ruff check stream_app tests bench
	$(BIN)/mypy stream_app
	$(BIN)/lint-imports --no-cache --no-logo

broker-stop: install
	$(BIN)/stream-app broker stop

clean:
	rm -rf .state .pytest_cache .ruff_cache .mypy_cache
