# The Ansible collection audit_collector.fleet (ansible/): tools, lint, role tests, build.
# Included by the Makefile before mk/vm.mk, which uses $(ANSIBLE_STAMP).
#
#   make ansible-venv    .cache/ansible-venv with the pinned controller tools
#                        (ansible/requirements.txt)
#   make ansible-lint    ansible-lint (production profile) and yamllint on the collection
#   make ansible-test    lint, then the role tests of tests/fleet on this machine: syntax,
#                        template matrix, check-mode and real converges into temporary
#                        prefixes, uninstall, the built collection (no VM, no systemd)
#   make ansible-build   the collection artifact in .cache/collection/
#   make ansible-lock    re-pin the role's dependency and build-backend locks (maintainers;
#                        needs the package index), keeping the collector's pin
#   make ansible-release build the collector's wheel reproducibly into dist/ and pin its
#                        sha256 in the role's lock (the wheel set a collection release ships)

ANSIBLE_VENV := .cache/ansible-venv
ANSIBLE_STAMP := $(ANSIBLE_VENV)/.installed
ANSIBLE_BIN := $(ANSIBLE_VENV)/bin

ROLE_FILES := ansible/roles/audit_collector/files
LOCK_VENV := .cache/lock-venv
UV_COMPILE = $(LOCK_VENV)/bin/uv pip compile --quiet --universal --generate-hashes \
	--no-header --annotation-style line --python-version $(shell sed -n 's/^audit_collector_preflight_min_python: "\(.*\)"/\1/p' ansible/roles/audit_collector/defaults/main.yml)

.PHONY: ansible-venv ansible-lint ansible-test ansible-build ansible-lock ansible-release

ansible-venv: $(ANSIBLE_STAMP)

$(ANSIBLE_STAMP): ansible/requirements.txt
	@test -x $(ANSIBLE_BIN)/python || /usr/bin/python3 -m venv $(ANSIBLE_VENV)
	@$(ANSIBLE_BIN)/pip install -q --disable-pip-version-check -r ansible/requirements.txt
	@touch $@

ansible-lint: $(ANSIBLE_STAMP)
	cd ansible && PATH="$(CURDIR)/$(ANSIBLE_BIN):$$PATH" ansible-lint --offline --profile production

# systemd-analyze (unit checks) comes with Debian's systemd package; no systemd runs here.
# Two pytest processes side by side (each Ansible task costs ~0.4 s of one core): the
# converges, and everything else; each with its own wheel cache.
FLEET_PYTEST = AC_FLEET_TEST=1 $(VENV)/bin/pytest -p no:cacheprovider -q --durations=5
ansible-test: $(STAMP) $(ANSIBLE_STAMP) ansible-lint
	@command -v systemd-analyze >/dev/null || { apt-get update -qq && apt-get install -y -qq systemd; }
	@mkdir -p .cache/fleet-test; log=.cache/fleet-test/converge.log; \
	  AC_FLEET_CACHE=converge $(FLEET_PYTEST) tests/fleet/test_converge.py > $$log 2>&1 & pid=$$!; \
	  AC_FLEET_CACHE=other $(FLEET_PYTEST) tests/fleet --ignore=tests/fleet/test_converge.py; rc=$$?; \
	  wait $$pid; rc2=$$?; cat $$log; test $$rc = 0 && test $$rc2 = 0

ansible-build: $(ANSIBLE_STAMP)
	@mkdir -p .cache/collection
	$(ANSIBLE_BIN)/ansible-galaxy collection build --force --output-path .cache/collection ansible

$(LOCK_VENV)/bin/uv:
	/usr/bin/python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q --disable-pip-version-check uv

ansible-lock: $(LOCK_VENV)/bin/uv
	$(UV_COMPILE) pyproject.toml -o $(ROLE_FILES)/requirements.deps
	echo 'setuptools>=77' | $(UV_COMPILE) - -o $(ROLE_FILES)/build-requirements.lock
	@old=$$(grep -A1 '^audit-collector==' $(ROLE_FILES)/requirements.lock 2>/dev/null); \
	  { echo '# The released wheel set of the role (make ansible-lock, make ansible-release).'; \
	    cat $(ROLE_FILES)/requirements.deps; [ -z "$$old" ] || echo "$$old"; } \
	  > $(ROLE_FILES)/requirements.lock; rm $(ROLE_FILES)/requirements.deps

ansible-release: $(ANSIBLE_STAMP)
	@rm -rf .cache/release-build && $(ANSIBLE_BIN)/python -m venv .cache/release-build
	@.cache/release-build/bin/pip install -q --disable-pip-version-check --no-deps \
	  --require-hashes -r $(ROLE_FILES)/build-requirements.lock
	$(ANSIBLE_BIN)/python $(ROLE_FILES)/wheelset.py build . dist \
	  pyproject.toml setup.cfg setup.py MANIFEST.in LICENSE collector bpf \
	  --python .cache/release-build/bin/python > .cache/release-wheel
	$(ANSIBLE_BIN)/python $(ROLE_FILES)/wheelset.py lock $(ROLE_FILES)/requirements.lock \
	  "$$(cat .cache/release-wheel)" $(ROLE_FILES)/requirements.lock
	@echo "pinned $$(cat .cache/release-wheel) in $(ROLE_FILES)/requirements.lock"
