# estafeta: make run (an instance on the embedded default), make test (the whole suite)
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
INSTANCE ?= $(CURDIR)/var/instance

.PHONY: install run test test-unit bench clean

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
	$(BIN)/pytest -q -rs

test-unit: install
	$(BIN)/pytest -q tests/unit tests/dialogs

clean:
	rm -rf $(VENV) var .pytest_cache
