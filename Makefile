# Every target sets itself up (apt packages, header tree, venv) idempotently.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench kibana clean

setup: $(STAMP)
	@scripts/setup-host.sh
	@scripts/fetch-ecs.sh

# BCC's Python binding is Debian's, so the venv sees the system site-packages.
$(STAMP): pyproject.toml
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

run: setup
	@mkdir -p .run
	$(VENV)/bin/audit-collector run --config config/local.yaml

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q tests
	$(MAKE) --no-print-directory test-py39
	@$(MAKE) --no-print-directory ansible-test

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) -m bench.exec_storm
	$(PY) -m bench.ship

# The Kibana saved objects, regenerated (and validated) from collector/kibana/content.py.
kibana: setup
	$(PY) -m collector.kibana.generate

clean:
	rm -rf .run build *.egg-info

-include mk/*.mk
