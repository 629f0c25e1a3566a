"""The fleet test's pure helpers: which fleets a setting gives, and reading Ansible's output."""

from __future__ import annotations

from tests.vm.test_fleet import (
    RELEASES,
    FleetSpec,
    exposure_of,
    failure_messages,
    fleet_specs,
    play_recap,
    previous_unsupported,
)

ANSIBLE_OUTPUT = "\n".join([
    "TASK [Preflight | Stop on hosts that cannot run the collector] *****",
    'fatal: [ac-mixed-1]: FAILED! => {"changed": false, "msg": "audit-collector cannot run'
    ' on ac-mixed-1: /usr/bin/python3 is 3.9"}',
    "TASK [Wheels | Download] *****",
    'failed: [localhost] (item=cp39-x86_64) => {"msg": "non-zero return code", "rc": 1,'
    ' "stderr": "WARNING: Location \'x\' is ignored\\nERROR: Package \'audit-collector\''
    ' requires a different Python"}',
    "",
    "PLAY RECAP *****",
    "ac-mixed-1                 : ok=6    changed=0    unreachable=0    failed=1    skipped=0"
    "    rescued=0    ignored=0",
    "ac-mixed-2                 : ok=33   changed=10   unreachable=0    failed=0    skipped=15"
    "   rescued=0    ignored=0",
])


def test_fleets_from_the_environment() -> None:
    assert fleet_specs({}) == [FleetSpec("bookworm", ("bookworm", "bookworm"))]
    three = fleet_specs({"AC_VM_DISTROS": "bullseye bookworm trixie"})
    assert [f.name for f in three] == ["bullseye", "bookworm", "trixie", "mixed"]
    assert three[0].suites == ("bullseye",)
    assert three[-1].suites == ("bullseye", "bookworm", "trixie")
    assert three[-1].vms == ("ac-mixed-1", "ac-mixed-2", "ac-mixed-3")
    only = fleet_specs({"AC_VM_DISTROS": "bullseye trixie", "AC_VM_MIXED": "only"})
    assert only == [FleetSpec("mixed", ("bullseye", "trixie"))]
    assert fleet_specs({"AC_VM_DISTROS": "trixie", "AC_VM_PER_RELEASE": "3"})[0].vms == (
        "ac-trixie-1", "ac-trixie-2", "ac-trixie-3")
    assert [RELEASES[s].wheel_tag for s in ("bullseye", "bookworm", "trixie")] == [
        "cp39-x86_64", "cp311-x86_64", "cp313-x86_64"]


def test_recap_and_failure_messages() -> None:
    assert play_recap(ANSIBLE_OUTPUT)["ac-mixed-1"]["failed"] == 1
    assert play_recap(ANSIBLE_OUTPUT)["ac-mixed-2"]["changed"] == 10
    assert failure_messages(ANSIBLE_OUTPUT) == {
        "ac-mixed-1": ["audit-collector cannot run on ac-mixed-1: /usr/bin/python3 is 3.9"],
        "localhost": ["non-zero return code: ERROR: Package 'audit-collector' requires a "
                      "different Python"],
    }


def test_previous_version_unsupported_only_for_its_python() -> None:
    """An upgrade needs the old version running: a release whose Python it refused is
    installed fresh, any other failure of the old rollout is one."""
    failures = {
        "ac-mixed-1": ["audit-collector cannot run on ac-mixed-1: /usr/bin/python3 is 3.9, "
                       "the collector needs Python >= 3.11"],
        "ac-mixed-2": ["Install | Install the wheel set: non-zero return code"],
    }
    assert previous_unsupported(failures) == {"ac-mixed-1": failures["ac-mixed-1"][0]}


def test_exposure_of_reads_the_overall_level() -> None:
    output = ("  ✓ SystemCallFilter=~@swap   System call deny list defined\n"
              "\u2192 Overall exposure level for audit-collector.service: 2.8 OK \U0001f642\n")
    assert exposure_of(output) == 2.8
    assert exposure_of("Failed to get unit: Unit audit-collector.service not loaded.") is None
