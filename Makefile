# driftline: developer entry points.  Everything installs into ./.venv; the Kafka
# broker jars are fetched from Maven Central into deploy/kafka/lib once.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JARS   := deploy/kafka/lib/.complete
PYTEST_ARGS ?=

.PHONY: install demo test bench bench-e2e kafka-jars kafka-start kafka-stop lock clean

install: $(STAMP) $(JARS)

$(STAMP): pyproject.toml setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

$(JARS): deploy/kafka/pom.xml $(STAMP)
	$(BIN)/python -c "from driftline.broker import fetch_jars; print('kafka jars in', fetch_jars())"

kafka-jars: $(JARS)

## Start the local broker, produce events, run the flow until drained, print a summary.
demo: install
	$(BIN)/driftline demo --events 2000

## The whole test suite (unit, Kafka end-to-end, crash recovery).
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; fi; exit $$rc

bench: install
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,bench]"
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

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

kafka-start: install
	$(BIN)/driftline kafka start

kafka-stop:
	$(BIN)/driftline kafka stop

## Refresh constraints.txt from the current environment (after changing dependencies).
lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^driftline' > constraints.txt

clean:
	rm -rf $(VENV) var .driftline .pytest_cache
