# The two commands a newcomer needs: `make run` and `make test`. Both set up what is missing first.
.PHONY: setup run test test-fast lint format config-doc schemas clean

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/egate demo

test: setup
	.venv/bin/python -m pytest

# The tests that take seconds, not minutes (no daemon, rig, browser, cluster or soak), on two workers:
# under a minute on an idle 2-core machine.
test-fast: setup
	.venv/bin/python -m pytest -m "not slow" -n 2

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	@mkdir -p .cache/typecheck/egate
	@for d in edge drivers engines tools config; do ln -sfn "$(CURDIR)/$$d" .cache/typecheck/egate/$$d; done
	.venv/bin/mypy

format: setup
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

config-doc: setup
	.venv/bin/python -m egate.tools.config.doc > config/default.toml

schemas: setup
	.venv/bin/python -m egate.tools.config.schemas docs/schemas

clean:
	rm -rf .venv .cache .pytest_cache .mypy_cache .ruff_cache
