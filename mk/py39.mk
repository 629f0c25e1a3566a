# Python 3.9: the oldest Python the collector supports (Debian 11's system Python).
#
#   make test-py39   the tests that need no BCC (documents, config, delivery, lifecycle,
#                    reports, the test servers) under a pyenv 3.9 interpreter, in .cache/py39-venv
#
# BCC's binding exists only for the distribution's own Python, so the capture tests run
# under it (make test); the VM matrix (make vm-test AC_VM_DISTROS=bullseye) runs the whole
# collector on Debian 11's Python 3.9.

PY39 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.9.*/bin/python3.9))
PY39_VENV := .cache/py39-venv
PY39_STAMP := $(PY39_VENV)/.installed
PY39_TESTS := tests/ecs tests/delivery tests/esserver tests/test_config.py \
              tests/test_lifecycle.py tests/report/test_gaps.py tests/report/test_integrity.py \
              tests/report/test_report_cli.py \
              tests/test_layout.py tests/test_metrics.py

.PHONY: test-py39

$(PY39_STAMP): pyproject.toml
	@test -n "$(PY39)" || { echo "test-py39: no Python 3.9 found (set PY39=/path/to/python3.9)" >&2; exit 1; }
	@test -x $(PY39_VENV)/bin/python || $(PY39) -m venv $(PY39_VENV)
	@$(PY39_VENV)/bin/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

test-py39: $(PY39_STAMP)
	$(PY39_VENV)/bin/python -m pytest -q -p no:cacheprovider $(PY39_TESTS)
