# Fleet rollout: the Ansible role's lint and the two-VM test (included by the Makefile).
#
#   make ansible-lint   ansible-lint --profile production on ansible/ and roles/
#   make vm-test        boots two Debian 12 VMs (emulated CPU) in a private network
#                       namespace, rolls the collector out with ansible/site.yml twice
#                       (the second run must change nothing), checks that exec, namespace
#                       and bash documents reach an Elasticsearch-API test server, then
#                       runs ansible/uninstall.yml. Details: tests/vm/README.md.
#   make vm-clean       stops a sandbox left behind (AC_VM_KEEP=1) and drops the run dir
#
# Caches (gitignored, under .cache/): the box (.cache/vm/*.box, rebuilt when
# tests/vm/build-box.sh changes), the controller's wheels, the Ansible venv.

ANSIBLE_VENV := .cache/ansible-venv
ANSIBLE_STAMP := $(ANSIBLE_VENV)/.installed
VM_RUN := .cache/vm/run
ANSIBLE_LINT_TARGETS := site.yml uninstall.yml prefetch-wheels.yml ../roles/audit_collector

.PHONY: ansible-venv ansible-lint vm-test vm-clean

ansible-venv: $(ANSIBLE_STAMP)

$(ANSIBLE_STAMP): ansible/requirements.txt
	@test -x $(ANSIBLE_VENV)/bin/python || /usr/bin/python3 -m venv $(ANSIBLE_VENV)
	@$(ANSIBLE_VENV)/bin/pip install -q --disable-pip-version-check -r ansible/requirements.txt
	@touch $@

ansible-lint: $(ANSIBLE_STAMP)
	cd ansible && ../$(ANSIBLE_VENV)/bin/ansible-lint --profile production $(ANSIBLE_LINT_TARGETS)

# The sandbox is stopped whatever pytest's outcome (also on Ctrl-C: pytest's fixture
# finalizer stops it first; this is the second line).
vm-test: $(STAMP) $(ANSIBLE_STAMP)
	@tests/vm/host-deps.sh
	@rc=0; trap 'tests/vm/sandbox.sh stop $(VM_RUN)' EXIT INT TERM; \
	  AC_VM_TEST=1 $(VENV)/bin/pytest -p no:cacheprovider -m vm -s -v tests/vm || rc=$$?; \
	  exit $$rc

vm-clean:
	@tests/vm/sandbox.sh stop $(VM_RUN)
	rm -rf $(VM_RUN)
