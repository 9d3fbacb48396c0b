# driftline: developer entry points.  Everything installs into ./.venv; the Kafka
# broker jars are fetched from Maven Central into deploy/kafka/lib once.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JARS   := deploy/kafka/lib/.complete
PYTEST_ARGS ?=
# The suite runs in TEST_WORKERS processes (pytest-xdist), a test file per process at a
# time (its module fixtures and test order kept); each process starts its own broker.
# Three on a 2-core machine: the Kafka tests spend much of their time waiting (brokers,
# flow start-ups, kills, timeouts), so two kept the cores about 1.1 busy; with three the
# suite took 8 min instead of 11.5 in one measurement on the same machine.  Files are
# handed out in the order tests/conftest.py gives them (the slow ones first, then by
# number of tests), not re-sorted by pytest-xdist, whose order ran the minute-long
# single-test files last.
TEST_WORKERS ?= 3

.PHONY: install demo test bench bench-e2e bench-ratelimit kafka-jars kafka-start kafka-stop lock clean chromium prometheus report-screenshot torture torture-compact

install: $(STAMP) $(JARS)

$(STAMP): pyproject.toml setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

$(JARS): deploy/kafka/pom.xml $(STAMP)
	$(BIN)/python -c "from driftline.broker import fetch_jars; print('kafka jars in', fetch_jars())"

kafka-jars: $(JARS)

## Produce events, run the flow until drained, print a summary.  Uses the Kafka broker at
## the configured address (127.0.0.1:9092 or $$KAFKA_BOOTSTRAP_SERVERS) if one answers, else
## starts the bundled broker for the run.  Options: make demo DEMO_ARGS="--port 9192 --keep-broker"
DEMO_ARGS ?=
demo: install
	$(BIN)/driftline demo --events 2000 $(DEMO_ARGS)

## Headless Chromium (Debian's package) for the report test and screenshots; installed once.
chromium:
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

## Prometheus, promtool and Alertmanager (Debian's packages, without the node exporter they
## recommend) for the rule tests and the operations end-to-end test; installed once.  The
## packages' services are not started: the tests start their own on loopback.
prometheus:
	command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager; }

## The whole test suite (unit, Kafka end-to-end, crash recovery).
test: install chromium prometheus
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; fi; exit $$rc

bench: install
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,bench]"
	for b in $(filter-out bench/bench_ratelimit.py,$(wildcard bench/bench_*.py)); do echo "== $$b"; $(BIN)/python $$b || exit 1; done

## Rate limits at full size: 5,000 events drained at the provider's 600 requests/min, 1 and 2 processes (~18 min).
bench-ratelimit: install
	$(BIN)/python bench/bench_ratelimit.py --events 5000 --rpm 600 --processes 1 2

## End-to-end throughput on the real broker: driftline vs the I/O floor, a per-event loop
## and a Quix Streams app (200,000 events; BENCH_E2E_ARGS="--events 1000000" for the RSS run).
## Quix Streams needs an older confluent-kafka than driftline pins, so it gets its own venv.
QUIX_VENV := .venv-quix
$(QUIX_VENV)/.installed: bench/quix-constraints.txt
	test -x $(QUIX_VENV)/bin/python || $(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(QUIX_VENV)/bin/python -m pip install --quiet -r bench/quix-constraints.txt
	touch $@

bench-e2e: install $(QUIX_VENV)/.installed
	$(BIN)/python bench/bench_e2e.py $(BENCH_E2E_ARGS)

## A 5,000-event demo, its HTML report and a full-page screenshot (docs/report.png).
report-screenshot: install chromium
	$(BIN)/driftline demo --events 5000 --out var/demo-report --report var/demo-report/report.html
	$(BIN)/python -m driftline.testing.chromium var/demo-report/report.html docs/report.png

## 100,000 events, 25 kills of the whole process group (start-up, commit points, random
## moments), one recovery folder; every output compared with an uninterrupted run; once
## with the default settings and once with flush_seconds 0.5, then the remote-tier kill
## test (3,000 events, 8 kills).  TORTURE_ARGS="--events 20000 --kills 8" for a shorter run.
TORTURE_ARGS ?=
torture: install
	$(BIN)/python bench/torture.py --events 100000 --kills 25 --flush-seconds 0 --flush-seconds 0.5 --remote-events 3000 --remote-kills 8 $(TORTURE_ARGS)

## 10 minutes at 50 events/s (flush_seconds 5) while compacting and SIGKILLing the compactor.
torture-compact: install
	$(BIN)/python bench/torture_compact.py --minutes 10 --rate 50 --flush-seconds 5

kafka-start: install
	$(BIN)/driftline kafka start

kafka-stop:
	$(BIN)/driftline kafka stop

## Refresh constraints.txt from the current environment (after changing dependencies).
lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^driftline' > constraints.txt

clean:
	rm -rf $(VENV) var .driftline .pytest_cache
