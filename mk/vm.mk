# Fleet rollout: the VM test (included by the Makefile; the Ansible venv, lint and role
# tests are in mk/ansible.mk, included before this file).
#
#   make vm-test        boots Debian VMs (emulated CPU) in a private network namespace, one
#                       fleet per release of AC_VM_DISTROS (default bookworm; e.g.
#                       AC_VM_DISTROS="bullseye bookworm trixie", then also a mixed fleet),
#                       rolls the collector out with ansible/site.yml twice (the second run
#                       must change nothing), checks that exec, namespace and bash documents
#                       reach an Elasticsearch-API test server and agree with /proc in the
#                       guest, then runs ansible/uninstall.yml; with AC_VM_PREVIOUS (default
#                       below) the first rollout upgrades that version. Details: tests/vm/README.md.
#   make vm-boxes       builds (or finds cached) the boxes of AC_VM_DISTROS
#   make vm-facts       kernel/BTF offsets, BCC, Python and bash of AC_VM_DISTROS, read from
#                       Debian's packages (tests/vm/release_facts.py; see tests/vm/MATRIX.md)
#   make vm-clean       stops a sandbox left behind (AC_VM_KEEP=1) and drops the run dir
#
# Caches (gitignored, under .cache/): the boxes (.cache/vm/debian<N>-<key>.box, one per
# release, rebuilt when tests/vm/build-box.sh changes), the controller's wheels, the
# Ansible venv.

VM_RUN := .cache/vm/run
AC_VM_DISTROS ?= bookworm
export AC_VM_DISTROS
# The collector version each fleet is first given, so that the first rollout is a rolling
# upgrade (test_upgrade_lost_nothing). f7927b1 is the newest version that differs from the
# current one in collector code and runs on Python 3.9 (2f027e9, the pre-3.9 layout,
# refuses Debian 11). `AC_VM_PREVIOUS= make vm-test` leaves the upgrade out.
AC_VM_PREVIOUS ?= f7927b1
export AC_VM_PREVIOUS

.PHONY: vm-test vm-boxes vm-facts vm-clean

# The sandbox is stopped whatever pytest's outcome (also on Ctrl-C: pytest's fixture
# finalizer stops it first; this is the second line), unless AC_VM_KEEP=1 asks to keep it.
vm-test: $(STAMP) $(ANSIBLE_STAMP)
	@tests/vm/host-deps.sh
	@rc=0; trap '[ "$${AC_VM_KEEP:-0}" = 1 ] || tests/vm/sandbox.sh stop $(VM_RUN)' EXIT INT TERM; \
	  AC_VM_TEST=1 $(VENV)/bin/pytest -p no:cacheprovider -m vm -s -v tests/vm || rc=$$?; \
	  exit $$rc

vm-clean:
	@tests/vm/sandbox.sh stop $(VM_RUN)
	rm -rf $(VM_RUN)

vm-boxes:
	@tests/vm/host-deps.sh
	@for suite in $(AC_VM_DISTROS); do tests/vm/build-box.sh .cache/vm "$$suite" || exit 1; done

vm-facts: $(STAMP)
	$(PY) -m tests.vm.release_facts $(AC_VM_DISTROS)
