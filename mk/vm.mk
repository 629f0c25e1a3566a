# Fleet rollout: the two-VM test (included by the Makefile; the Ansible venv, lint and role
# tests are in mk/ansible.mk, included before this file).
#
#   make vm-test        boots two Debian 12 VMs (emulated CPU) in a private network
#                       namespace, rolls the collector out with ansible/site.yml twice
#                       (the second run must change nothing), checks that exec, namespace
#                       and bash documents reach an Elasticsearch-API test server, then
#                       runs ansible/uninstall.yml. Details: tests/vm/README.md.
#   make vm-clean       stops a sandbox left behind (AC_VM_KEEP=1) and drops the run dir
#
# Caches (gitignored, under .cache/): the box (.cache/vm/*.box, rebuilt when
# tests/vm/build-box.sh changes), the controller's wheels, the Ansible venv.

VM_RUN := .cache/vm/run

.PHONY: vm-test vm-clean

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
