# estafeta: make run (an instance on the embedded default), make test (the whole suite)
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
INSTANCE ?= $(CURDIR)/var/instance

.PHONY: install run test test-unit torture bench clean

$(BIN)/estafeta: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(BIN)/pip install -q -e '.[test,fast,pgsql]'
	@touch $@

install: $(BIN)/estafeta

run: install
	@[ -f $(INSTANCE)/main.cf ] || $(BIN)/estafeta init $(INSTANCE)
	@echo "estafeta: SMTP on 127.0.0.1:2525, local domain localhost, mailbox demo@localhost"
	@echo "  send a test message:  swaks --server 127.0.0.1:2525 --to demo@localhost"
	@echo "  or:  echo hello | $(BIN)/python -m estafeta.testing.send demo@localhost"
	@echo "  read it in:           $(INSTANCE)/var/mail/demo/Maildir/new/"
	@echo "  log:                  $(INSTANCE)/var/log/maillog   (Ctrl-C stops)"
	$(BIN)/estafeta -c $(INSTANCE) start --foreground

test: install
	@bash tools/install-peers
	$(BIN)/pytest -q -rs --durations=15

# Crash, fault and hostile-input torture at a larger scale (the short version, scale 1,
# runs inside `make test`). TORTURE_SCALE=N: 60*N s of kill -9 load, 150*N examples per
# fuzz test; TORTURE_SECONDS overrides the load time. Prints one table at the end.
TORTURE_SCALE ?= 5
torture: install
	TORTURE_SCALE=$(TORTURE_SCALE) $(BIN)/pytest -q -rs -s -p no:randomly --timeout=0 tests/torture

test-unit: install
	$(BIN)/pytest -q tests/unit tests/dialogs

# Side by side with a private Postfix (needs root and Debian's postfix package for
# smtp-source/smtp-sink). BENCH_QUICK=1: smoke run under 2 minutes. BENCH_ARGS: see
# bench/bench.py --help. Results in bench/results/, the plot in docs/perf-scaling.png.
bench: install
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
