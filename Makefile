# edgevae: `make demo` runs the whole product end to end; `make test` runs the test suite.
# Both create the virtual environment and install everything they need on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: seccomp demo test test-fast faults bench setup broker lint check clean

setup: $(STAMP)

# torch is pinned and installed first: an unpinned torch resolves to a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $@

# The tests and the demo use a real mosquitto broker from Debian's packages, and the agent takes its readings
# through libmosquitto (which the broker's package pulls in).
broker:
	@{ command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } && ldconfig -p | grep -q libmosquitto.so.1 || { \
		echo "installing mosquitto and libmosquitto1"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto libmosquitto1; }

# The tests run the agent under its unit's syscall filter with libseccomp (Debian's python3-seccomp).
seccomp:
	@/usr/bin/python3 -c "import seccomp" 2>/dev/null || { \
		echo "installing python3-seccomp"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-seccomp; }

demo: setup broker
	$(VENV)/bin/edgevae demo $(ARGS)

test: setup broker seccomp
	$(PY) -m pytest $(ARGS)

# The tests that neither train, export, run a protocol nor break a broker: about a minute on two cores.
test-fast: setup broker seccomp
	$(PY) -m pytest -m "not slow and not faults" $(ARGS)

# The fault suite at full scale (1M-reading soak, 200k fuzz messages, longer fault streams; about ten
# minutes); `make test` runs it at the quick scale. Figures land in build/faults/*.json and docs/faults.md.
faults: setup broker
	EDGEVAE_FAULTS_SCALE=full $(PY) -m pytest tests/faults -s $(ARGS)
	$(PY) tests/faults/report.py full

# The hot-path benchmark at full size (about ten minutes on two cores): writes docs/bench/report.md and
# results.json. `make test` runs its quick mode once.
bench: setup broker
	$(VENV)/bin/edgevae bench $(ARGS)

LAYERS := core agent training export evaluation cli demo

# mypy checks the installed names (edgevae.agent, ...): a tree of links maps each folder to its name.
lint: setup
	$(VENV)/bin/ruff format --check $(LAYERS) tests
	$(VENV)/bin/ruff check $(LAYERS) tests
	mkdir -p build/typecheck/edgevae
	for d in $(LAYERS); do ln -sfn ../../../$$d build/typecheck/edgevae/$$d; done
	cd build/typecheck && ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml

check: lint test

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
