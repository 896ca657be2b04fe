# Two commands do all set-up on a fresh machine:
#   make serve   install (.venv) and serve the bundled default model on 127.0.0.1:8000
#   make test    install (.venv) and run the whole test suite (what CI runs)
.PHONY: install test-deps serve test test-unit test-e2e lint

# Two test workers (pytest-xdist), one test file each at a time, longest first
# (tests/conftest.py): engine start-up is mostly single-threaded, so two share two cores.
TEST_WORKERS ?= 2
PARALLEL = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

install:
	scripts/install.sh

test-deps:
	scripts/install-test-deps.sh

serve: install
	.venv/bin/lapo serve

test: install test-deps lint
	.venv/bin/python -m pytest $(PARALLEL)

test-unit: install
	.venv/bin/python -m pytest -m "not e2e and not slow"

test-e2e: install test-deps
	.venv/bin/python -m pytest -m "e2e or slow" $(PARALLEL)

lint: install
	.venv/bin/ruff check .
