"""End-to-end capture: real BPF programs on the running kernel, checked against /proc.

Each test triggers activity in child processes (never in the test process, which hosts the
agent and is excluded from tracing) and matches documents by a unique marker.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.ecs.documents import unescape_text
from tests.capture.support import Doc, RunningAgent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="BPF needs root")

NS_KINDS = ("pid", "mnt", "net", "uts", "ipc", "user", "cgroup")


@pytest.fixture(scope="module")
def agent() -> Iterator[RunningAgent]:
    with RunningAgent() as running:
        yield running


def marker() -> str:
    return f"mark-{uuid.uuid4().hex[:12]}"


def execs_with(agent: RunningAgent, mark: str, program: str | None = None,
               count: int = 1, timeout: float = 10) -> list[Doc]:
    """Exec documents whose argv (or filename) holds the marker, of `program` if given."""

    def matches(d: Doc) -> bool:
        if d["event"]["action"] != "exec":
            return False
        args = d["process"].get("args", [])
        if program is not None and (not args or args[0] != program):
            return False
        return mark in args or mark in d["audit_collector"]["exec"].get("filename", "")

    return agent.sink.wait_for(matches, count=count, timeout=timeout)


def ns_inodes(pid: int | str) -> dict[str, int]:
    return {k: os.stat(f"/proc/{pid}/ns/{k}").st_ino for k in NS_KINDS}


# --------------------------------------------------------------------------- exec


def test_exec_tricky_arguments_survive_intact(agent: RunningAgent) -> None:
    mark = marker()
    argv = [b"/bin/echo", mark.encode(), b"two words", b"", b"it's \"quoted\"",
            b"line1\nline2", b"caf\xc3\xa9", b"bad\xff\xfebytes\\x41", b"  "]
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    assert proc.returncode == 0
    (doc,) = execs_with(agent, mark)
    p = doc["process"]
    assert doc["event"]["outcome"] == "success"
    assert doc["audit_collector"]["exec"]["escaped"] is True
    assert [unescape_text(a) for a in p["args"]] == argv
    assert p["args_count"] == len(argv) == doc["audit_collector"]["exec"]["argc"]
    assert p["executable"] == "/bin/echo"
    assert p["name"] == "echo"
    assert p["parent"]["pid"] == os.getpid()
    assert doc["audit_collector"]["exec"]["args_truncated"] is False
    assert doc["user"]["id"] == str(os.getuid())
    assert doc["user"]["effective"]["id"] == str(os.geteuid())
    assert doc["group"]["id"] == str(os.getgid())
    assert doc["audit_collector"]["namespaces"]["host"] is True
    assert {k: doc["audit_collector"]["namespaces"][k] for k in NS_KINDS} == ns_inodes("self")


def test_exec_utf8_arguments_are_not_escaped(agent: RunningAgent) -> None:
    mark = marker()
    argv = ["/bin/true", mark, "héllo wörld ✓", "", "tab\there"]
    subprocess.run(argv, check=True)
    (doc,) = execs_with(agent, mark)
    assert doc["process"]["args"] == argv
    assert doc["audit_collector"]["exec"]["escaped"] is False
    assert doc["process"]["command_line"] == f"/bin/true {mark} 'héllo wörld ✓' '' 'tab\there'"


def test_exec_pid_and_parent_match_proc(agent: RunningAgent) -> None:
    mark = marker()
    # The shell is the parent; it reports its own pid and the child's before waiting.
    out = subprocess.run(["/bin/sh", "-c", f"/bin/sleep 0.2 {mark} & echo $$ $!; wait"],
                         capture_output=True, text=True, check=False)
    shell_pid, child_pid = map(int, out.stdout.split())
    docs = agent.sink.wait_for(lambda d: d["event"]["action"] == "exec"
                               and d["process"].get("args", [None])[0] == "/bin/sleep"
                               and mark in d["process"]["args"])
    assert docs[0]["process"]["pid"] == child_pid
    assert docs[0]["process"]["parent"]["pid"] == shell_pid


def test_exec_with_200_arguments_is_truncated_and_flagged(agent: RunningAgent) -> None:
    mark = marker()
    argv = ["/bin/true", mark] + [f"a{i}" for i in range(198)]
    subprocess.run(argv, check=True)
    (doc,) = execs_with(agent, mark)
    assert doc["process"]["args"] == argv[:128]
    assert doc["process"]["args_count"] == 128
    assert doc["audit_collector"]["exec"]["argc"] == 200
    assert doc["audit_collector"]["exec"]["args_truncated"] is True


def test_exec_with_20kib_of_arguments_is_cut_at_16kib(agent: RunningAgent) -> None:
    mark = marker()
    argv = ["/bin/true", mark] + [chr(ord("a") + i % 26) * 1023 for i in range(20)]
    assert sum(len(a) + 1 for a in argv) > 20 * 1024
    subprocess.run(argv, check=True)
    (doc,) = execs_with(agent, mark)
    ex = doc["audit_collector"]["exec"]
    assert ex["args_truncated"] is True
    assert ex["args_captured_bytes"] == 16384
    args = doc["process"]["args"]
    assert doc["process"]["args_count"] == len(args)
    assert doc["audit_collector"]["exec"]["argc"] == len(argv)
    # Every argument before the cut is complete; the last one is a prefix of the original.
    assert args[:-1] == argv[: len(args) - 1]
    assert argv[len(args) - 1].startswith(args[-1])
    assert sum(len(a) + 1 for a in args) - 1 == 16384 - 1 or len(args[-1]) < 1023


FORK_EXECL_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* fork() then execl() of string literals: the child's pages holding them are not mapped
 * yet when execve() is entered, so the caller's argv cannot be read by BPF there. */
int main(int argc, char **argv)
{
    int n = atoi(argv[1]);
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            execl("/bin/true", "true", "literal-MARK", "second literal", (char *)NULL);
            _exit(127);
        }
        int status;
        waitpid(pid, &status, 0);
    }
    /* A failing exec (ENOENT) of a path on the stack, written before fork(): the kernel
     * gives up before it reads argv, whose literals stay unmapped in the child. */
    char path[64];
    strcpy(path, "/nonexistent/MARK");
    if (fork() == 0) {
        execl(path, "missing", "literal-MARK", (char *)NULL);
        _exit(0);
    }
    wait(NULL);
    /* The same with a literal path: getname() faults its page in, and the arguments on
     * that page become readable at syscall exit. */
    if (fork() == 0) {
        execl("/nonexistent/MARK-literal", "missing", "literal-MARK", (char *)NULL);
        _exit(0);
    }
    wait(NULL);
    return 0;
}
"""


@pytest.fixture(scope="module")
def fork_execl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A C program doing fork() + execl() of literals, its marker compiled in."""
    mark = marker()
    src = tmp_path_factory.mktemp("forkexecl") / "forkexecl.c"
    src.write_text(FORK_EXECL_C.replace("MARK", mark))
    binary = src.with_suffix("")
    subprocess.run(["gcc", "-O1", "-o", str(binary), str(src)], check=True)
    return binary, mark


def test_fork_execl_of_literals_has_the_full_argv(agent: RunningAgent,
                                                  fork_execl: tuple[Path, str]) -> None:
    """The classic exec whose argv the caller's memory cannot give (not resident after
    fork): 300 of 300 documents carry it, read from the new image."""
    binary, mark = fork_execl
    unread_before = agent.agent.metrics.capture.args_unread._value.get()
    subprocess.run([str(binary), "300"], check=True, timeout=60)
    literal = f"literal-{mark}"
    docs = agent.sink.wait_for(
        lambda d: d["event"]["action"] == "exec" and d["event"]["outcome"] == "success"
        and d["process"]["args"] == ["true", literal, "second literal"], count=300, timeout=30)
    assert len(docs) == 300
    for doc in docs:
        ex = doc["audit_collector"]["exec"]
        assert (ex["argc"], ex["args_truncated"], ex["args_unread"]) == (3, False, False)
        assert doc["process"]["args_count"] == 3
        assert doc["process"]["executable"] == "/bin/true"
    # The failed execl: no new image, and the kernel gave up (ENOENT) before reading the
    # caller's literals, which are still not resident: flagged and counted, not silent.
    (failed,) = agent.sink.wait_for(
        lambda d: d["event"]["action"] == "exec"
        and d["audit_collector"]["exec"]["filename"] == f"/nonexistent/{mark}")
    assert failed["event"]["outcome"] == "failure"
    assert failed["process"]["args"] == []
    assert failed["audit_collector"]["exec"]["args_unread"] is True
    assert agent.agent.metrics.capture.args_unread._value.get() == unread_before + 1
    # With the path a literal too, the retry at syscall exit reads what entry could not.
    (retried,) = agent.sink.wait_for(
        lambda d: d["event"]["action"] == "exec"
        and d["audit_collector"]["exec"]["filename"] == f"/nonexistent/{mark}-literal")
    assert retried["process"]["args"] == ["missing", literal]
    assert retried["audit_collector"]["exec"]["args_unread"] is False


def test_python_fork_and_execv(agent: RunningAgent) -> None:
    mark = marker()
    code = ("import os\n"
            "pid = os.fork()\n"
            f"if pid == 0: os.execv('/bin/true', ['true', '{mark}', 'x y'])\n"
            "os.waitpid(pid, 0)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    (doc,) = execs_with(agent, mark)
    assert doc["process"]["args"] == ["true", mark, "x y"]
    assert doc["audit_collector"]["exec"]["args_unread"] is False


def test_shebang_script_reports_its_interpreter(agent: RunningAgent, tmp_path: Path) -> None:
    """The new image of a #! script is its interpreter: process.args is what /proc/PID/
    cmdline shows ([interpreter, its argument, script, arguments...]), the script stays
    in audit_collector.exec.filename."""
    mark = marker()
    script = tmp_path / f"script-{mark}.sh"
    script.write_text("#!/bin/sh -e\nexit 0\n")
    script.chmod(0o755)
    subprocess.run([str(script), "one", mark], check=True)
    (doc,) = execs_with(agent, mark, "/bin/sh")
    assert doc["process"]["args"] == ["/bin/sh", "-e", str(script), "one", mark]
    assert doc["process"]["executable"] == "/bin/sh"
    assert doc["process"]["name"] == script.name[:15]
    ex = doc["audit_collector"]["exec"]
    assert (ex["filename"], ex["script"], ex["argc"]) == (str(script), True, 5)


def test_exec_enoent_is_a_failure_event(agent: RunningAgent) -> None:
    mark = marker()
    missing = f"/nonexistent/{mark}"
    with pytest.raises(FileNotFoundError):
        subprocess.run([missing, "x"])
    (doc,) = execs_with(agent, mark)
    assert doc["event"]["outcome"] == "failure"
    assert doc["error"]["code"] == "ENOENT"
    assert "exit_code" not in doc["process"]  # ECS: the end of a process, not its start
    assert doc["process"]["executable"] == missing
    assert doc["process"]["args"] == [missing, "x"]
    assert doc["audit_collector"]["exec"]["args_unread"] is False


def test_exec_eacces_is_a_failure_event(agent: RunningAgent, tmp_path: Path) -> None:
    mark = marker()
    script = tmp_path / mark
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    with pytest.raises(PermissionError):
        subprocess.run([str(script)])
    (doc,) = execs_with(agent, mark)
    assert doc["event"]["outcome"] == "failure"
    assert doc["error"]["code"] == "EACCES"


def test_login_uid_and_session_id(agent: RunningAgent) -> None:
    mark = marker()
    code = (
        "import os,sys\n"
        "open('/proc/self/loginuid','w').write('4321')\n"
        "print(open('/proc/self/sessionid').read().strip(), flush=True)\n"
        f"os.execv('/bin/true', ['/bin/true', '{mark}'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0 and "Operation not permitted" in out.stderr:
        pytest.skip(f"this kernel refuses to set loginuid: {out.stderr.strip()[-120:]}")
    assert out.returncode == 0, out.stderr
    session = int(out.stdout.strip())
    (doc,) = execs_with(agent, mark, "/bin/true")
    assert doc["audit_collector"]["login_user"]["id"] == "4321"
    assert doc["audit_collector"]["session_id"] == session


def test_unset_login_uid_is_omitted(agent: RunningAgent) -> None:
    if Path("/proc/self/loginuid").read_text().strip() != "4294967295":
        pytest.skip("this test process already has a login uid")
    mark = marker()
    subprocess.run(["/bin/true", mark], check=True)
    (doc,) = execs_with(agent, mark)
    assert "login_user" not in doc["audit_collector"]
    assert "session_id" not in doc["audit_collector"]


def _run_in_pty(argv: list[str], input_lines: list[bytes] = (), settle: float = 0.3,
                timeout: float = 10) -> tuple[int, bytes]:
    """Run argv with a new pty as its controlling terminal; type lines; return output."""
    pid, master = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    output = bytearray()
    deadline = time.monotonic() + timeout
    pending = list(input_lines)
    last_write = 0.0
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        # Type only once the program has written something (bash's prompt: readline has
        # put the terminal in raw mode by then; before, a line longer than 4095 bytes is
        # cut by the terminal's canonical mode, and a loaded machine can take long here).
        if pending and output and time.monotonic() - last_write > settle:
            os.write(master, pending.pop(0))
            last_write = time.monotonic()
    os.close(master)
    _, _status = os.waitpid(pid, 0)
    return pid, bytes(output)


def test_tty_under_a_pty(agent: RunningAgent) -> None:
    mark = marker()
    script = f"stat -L -c 'DEV %t %T' /proc/self/fd/0; tty; exec /bin/true {mark}"
    _pid, out = _run_in_pty(["/bin/sh", "-c", script])
    text = out.decode()
    major_hex, minor_hex = text.split("DEV ")[1].split()[:2]
    tty_path = next(ln for ln in text.splitlines() if ln.startswith("/dev/")).strip()
    (doc,) = execs_with(agent, mark, "/bin/true")
    assert doc["process"]["interactive"] is True
    assert doc["process"]["tty"]["char_device"] == {"major": int(major_hex, 16),
                                                     "minor": int(minor_hex, 16)}
    assert doc["audit_collector"]["tty"]["name"] == tty_path.removeprefix("/dev/")


def test_no_tty_is_not_interactive(agent: RunningAgent) -> None:
    mark = marker()
    subprocess.run(["setsid", "/bin/true", mark], check=True, stdin=subprocess.DEVNULL)
    (doc,) = execs_with(agent, mark, "/bin/true")
    assert doc["process"]["interactive"] is False
    assert "tty" not in doc["process"]


# --------------------------------------------------------------------------- processes


def _of(agent: RunningAgent, entity: str, action: str, count: int = 1) -> list[Doc]:
    return agent.sink.wait_for(lambda d: d["event"]["action"] == action
                               and d["process"].get("entity_id") == entity, count=count)


def test_fork_exec_end_of_one_process(agent: RunningAgent) -> None:
    """sh forks true, which execs and ends; sh ends with 3: one entity id from fork to
    end, the parent's entity id on the child, exit codes and durations."""
    mark = marker()
    subprocess.run(["/bin/sh", "-c", f"/bin/true {mark}; exit 3"], check=False)
    (exec_doc,) = execs_with(agent, mark, "/bin/true")
    child = exec_doc["process"]
    (fork,) = _of(agent, child["entity_id"], "fork")
    (end,) = _of(agent, child["entity_id"], "end")
    for doc in (fork, end):
        assert doc["process"]["pid"] == child["pid"]
        assert doc["process"]["start"] == child["start"]
        assert doc["process"]["parent"]["entity_id"] == child["parent"]["entity_id"]
    assert fork["process"]["args"][0] == "/bin/sh"  # the parent's image, before the exec
    assert child["previous"]["executable"] == "/bin/sh"
    assert end["process"]["args"] == ["/bin/true", mark]
    assert end["process"]["exit_code"] == 0 and end["event"]["outcome"] == "success"
    assert end["process"]["end"] == end["@timestamp"]
    assert 0 < end["event"]["duration"] < 10 * 10**9
    assert end["event"]["type"] == ["end"] and fork["event"]["type"] == ["start"]
    (shell_end,) = _of(agent, child["parent"]["entity_id"], "end")
    assert shell_end["process"]["exit_code"] == 3 and shell_end["event"]["outcome"] == "failure"
    assert shell_end["process"]["pid"] == child["parent"]["pid"]


def test_a_process_killed_by_a_signal_and_its_threads(agent: RunningAgent) -> None:
    """One end per process, not per thread; a SIGKILL is exit code 137."""
    mark = marker()
    code = ("import threading, time, os, signal\n"
            "ts = [threading.Thread(target=time.sleep, args=(0.1,)) for _ in range(4)]\n"
            "[t.start() for t in ts]; [t.join() for t in ts]\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code, mark], check=False)
    (exec_doc,) = agent.sink.wait_for(lambda d: d["event"]["action"] == "exec"
                                      and mark in d["process"].get("args", []))
    entity = exec_doc["process"]["entity_id"]
    (end,) = _of(agent, entity, "end")
    time.sleep(0.3)
    # Its own fork is the test process's (never traced); its threads are no processes.
    assert [d["event"]["action"] for d in agent.sink.docs
            if d["process"].get("entity_id") == entity
            and d["event"]["action"] in ("fork", "end")] == ["end"]
    assert not [d for d in agent.sink.docs if d["event"]["action"] == "fork"
                and d["process"]["parent"].get("entity_id") == entity]
    assert end["process"]["exit_code"] == 137
    assert end["audit_collector"]["end"] == {"signal": 9, "core_dumped": False}


def test_running_processes_are_entered_with_their_entity_ids() -> None:
    """A process started before the collector: seeded from /proc, its later documents
    carry the entity id that /proc's start time gives, its argv and its session."""
    sleeper = subprocess.Popen(["/bin/sleep", "60", f"0.{uuid.uuid4().int % 10**9:09d}"])
    stat = Path(f"/proc/{sleeper.pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(stat[19])
    try:
        with RunningAgent() as running:
            table = running.agent._processes
            assert table is not None and len(table) > 10
            sleeper.kill()
            sleeper.wait()
            (end,) = running.sink.wait_for(lambda d: d["event"]["action"] == "end"
                                           and d["process"]["pid"] == sleeper.pid)
    finally:
        sleeper.kill()
    process = end["process"]
    assert process["entity_id"] == table.ids.of(sleeper.pid, ticks)
    assert process["args"][:2] == ["/bin/sleep", "60"]
    assert process["executable"] == "/usr/bin/sleep"
    assert process["exit_code"] == 137
    sid = int(stat[3])
    if sid:
        assert process["session_leader"]["pid"] == sid
    else:  # the kernel's own session (a test runner under an init that never called setsid)
        assert "session_leader" not in process
    assert process["parent"]["pid"] == os.getpid()


# --------------------------------------------------------------------------- namespaces


@pytest.fixture
def isolated(agent: RunningAgent) -> Iterator[tuple[int, str, str]]:
    """A process in new pid, mount and uts namespaces with its own hostname."""
    # sleep sums its arguments: a unique fraction of a second marks our process.
    mark = f"0.{uuid.uuid4().int % 10**12:012d}"
    hostname = f"ns-{mark[-8:]}"
    proc = subprocess.Popen(
        ["unshare", "--pid", "--mount", "--uts", "--fork", "--mount-proc", "/bin/sh", "-c",
         f"hostname {hostname}; exec /bin/sleep 60 {mark}"])
    docs = execs_with(agent, mark, "/bin/sleep")
    pid = docs[0]["process"]["pid"]
    try:
        yield pid, mark, hostname
    finally:
        proc.kill()
        subprocess.run(["pkill", "-f", mark], check=False)
        proc.wait()


def test_process_in_new_namespaces(agent: RunningAgent, isolated: tuple[int, str, str]) -> None:
    pid, mark, hostname = isolated
    (doc,) = execs_with(agent, mark, "/bin/sleep")
    ns = doc["audit_collector"]["namespaces"]
    truth = ns_inodes(pid)
    assert {k: ns[k] for k in NS_KINDS} == truth
    assert ns["host"] is False
    assert set(ns["differ"]) == {"pid", "mnt", "uts"}
    assert doc["audit_collector"]["uts_hostname"] == hostname
    assert doc["process"]["vpid"] == 1
    # The unshare(2) call that created them, with inodes before and after.
    # Namespace inodes are reused once freed (other work on this machine unshares too):
    # match all three new ones.
    unshares = agent.sink.wait_for(
        lambda d: d["event"]["action"] == "unshare"
        and {k: d["audit_collector"]["ns"].get("after", {}).get(k)
             for k in ("uts", "mnt", "pid_for_children")}
        == {"uts": truth["uts"], "mnt": truth["mnt"], "pid_for_children": truth["pid"]})
    ev = unshares[0]["audit_collector"]["ns"]
    assert set(ev["kinds"]) == {"pid", "mnt", "uts"}
    assert set(ev["flags"]) == {"CLONE_NEWPID", "CLONE_NEWNS", "CLONE_NEWUTS"}
    assert ev["before"]["uts"] == os.stat("/proc/self/ns/uts").st_ino
    assert ev["after"]["mnt"] == truth["mnt"]
    assert ev["after"]["pid_for_children"] == truth["pid"]
    assert unshares[0]["event"]["outcome"] == "success"


def test_nsenter_into_it(agent: RunningAgent, isolated: tuple[int, str, str]) -> None:
    pid, _mark, hostname = isolated
    mark2 = marker()
    out = subprocess.run(["nsenter", "-t", str(pid), "--uts", "--mount", "--pid", "--",
                          "/bin/sh", "-c", f"hostname; exec /bin/true {mark2}"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hostname
    truth = ns_inodes(pid)
    setns = agent.sink.wait_for(
        lambda d: d["event"]["action"] == "setns"
        and d["audit_collector"]["ns"].get("after", {}).get("uts") == truth["uts"]
        and "uts" in d["audit_collector"]["ns"].get("changed", []))
    ev = setns[0]["audit_collector"]["ns"]
    assert setns[0]["event"]["outcome"] == "success"
    # The target is a process that was in the entered namespaces when the event was
    # enriched: unshare or sleep (still there), or a short-lived one seen exec there
    # (the fixture's hostname), which may be gone by now.
    target = ev["target"]["pid"]
    assert target != setns[0]["process"]["pid"]  # nsenter is in there too: not a target
    seen_there = {d["process"]["pid"] for d in agent.sink.docs
                  if d["event"]["action"] == "exec"
                  and d["audit_collector"]["namespaces"].get("uts") == truth["uts"]
                  and d["audit_collector"]["namespaces"].get("mnt") == truth["mnt"]}
    try:
        still_there = ns_inodes(target)
    except FileNotFoundError:
        assert target in seen_there
    else:
        assert (still_there["uts"], still_there["mnt"]) == (truth["uts"], truth["mnt"])
    assert ev["before"]["uts"] == os.stat("/proc/self/ns/uts").st_ino
    (doc,) = execs_with(agent, mark2, "/bin/true")
    ns = doc["audit_collector"]["namespaces"]
    assert (ns["uts"], ns["mnt"], ns["pid"]) == (truth["uts"], truth["mnt"], truth["pid"])
    assert doc["audit_collector"]["uts_hostname"] == hostname


def test_unshare_refused_with_eperm(agent: RunningAgent) -> None:
    mark = marker()
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           "/bin/sh", "-c", f"echo {mark} >/dev/null; exec unshare --uts true"],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    docs = agent.sink.wait_for(
        lambda d: d["event"]["action"] == "unshare" and d["user"]["id"] == "65534"
        and d["event"]["outcome"] == "failure")
    doc = docs[-1]
    assert doc["error"]["code"] == "EPERM"
    assert doc["audit_collector"]["ns"]["kinds"] == ["uts"]
    assert "after" not in doc["audit_collector"]["ns"]


def test_clone_with_new_namespace_flags(agent: RunningAgent) -> None:
    code = (
        "import ctypes,os\n"
        "libc=ctypes.CDLL(None,use_errno=True)\n"
        "r=libc.syscall(56, 0x04000000|0x08000000|17, 0, 0, 0, 0)\n"
        "if r==0: os._exit(0)\n"
        "print(r, flush=True); os.waitpid(r,0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    child = int(out.stdout)
    docs = agent.sink.wait_for(lambda d: d["event"]["action"] == "clone"
                               and d["audit_collector"]["ns"].get("child_pid") == child)
    ev = docs[0]["audit_collector"]["ns"]
    assert set(ev["kinds"]) == {"uts", "ipc"}
    assert set(ev["changed"]) == {"uts", "ipc"}
    assert ev["after"]["net"] == ev["before"]["net"]


# --------------------------------------------------------------------------- bash


def _bash_lines(agent: RunningAgent, pid: int, count: int) -> list[Doc]:
    """The lines typed into the bash that just ran as `pid`: found by the entity id of its
    exec document (a pid alone may be reused on a busy machine). The lines must carry the
    same identity and leaders as that exec document."""
    execs = agent.sink.wait_for(lambda d: d["event"]["action"] == "exec"
                                and d["process"]["pid"] == pid)
    exec_doc = execs[-1]
    entity = exec_doc["process"]["entity_id"]
    lines = agent.sink.wait_for(lambda d: d["event"]["action"] == "bash_command"
                                and d["process"]["entity_id"] == entity, count=count)
    for line in lines:
        for key in ("entity_id", "start", "parent", "session_leader", "group_leader",
                    "entry_leader"):
            assert line["process"].get(key) == exec_doc["process"].get(key), key
    return lines


def test_bash_commands_typed_under_a_pty(agent: RunningAgent) -> None:
    mark = marker()
    long_cmd = "echo " + "x" * 3000 + f" {mark}"
    utf8_cmd = f"echo héllo-wörld-✓-{mark}"
    lines = [f"echo short-{mark}\n".encode(), f"{long_cmd}\n".encode(),
             f"{utf8_cmd}\n".encode(), b"exit\n"]
    pid, _out = _run_in_pty(["/bin/bash", "--norc", "--noprofile", "-i"], lines)
    docs = _bash_lines(agent, pid, 4)
    typed = [d["audit_collector"]["bash"]["line"] for d in docs]
    assert typed == [f"echo short-{mark}", long_cmd, utf8_cmd, "exit"]
    assert docs[1]["audit_collector"]["bash"]["line_bytes"] == len(long_cmd)
    assert all(not d["audit_collector"]["bash"]["line_truncated"] for d in docs)
    assert docs[2]["audit_collector"]["bash"]["line_bytes"] == len(utf8_cmd.encode())
    first = docs[0]
    assert first["process"]["name"] == "bash"
    assert first["process"]["interactive"] is True
    assert first["audit_collector"]["tty"]["name"].startswith("pts/")
    assert first["user"]["id"] == str(os.getuid())


def test_bash_line_longer_than_bound_is_truncated(agent: RunningAgent) -> None:
    long_cmd = "echo " + "y" * 5000
    pid, _ = _run_in_pty(["/bin/bash", "--norc", "--noprofile", "-i"],
                         [f"{long_cmd}\n".encode(), b"exit\n"])
    docs = _bash_lines(agent, pid, 2)
    bash = docs[0]["audit_collector"]["bash"]
    assert bash["line_truncated"] is True
    assert bash["line_bytes"] == 4096
    assert bash["line"] == long_cmd[:4096]


def test_copy_of_bash_elsewhere_gets_probed(agent: RunningAgent, tmp_path: Path) -> None:
    copy = tmp_path / "renamed-shell"
    shutil.copy2("/bin/bash", copy)
    key = (os.stat(copy).st_dev, os.stat(copy).st_ino)
    mark = marker()
    # First run: the exec event makes the agent attach to the new binary.
    subprocess.run([str(copy), "-c", "true"], check=True)
    deadline = time.monotonic() + 10
    while key not in agent.agent.probes.bash_probes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert key in agent.agent.probes.bash_probes
    pid, _ = _run_in_pty([str(copy), "--norc", "--noprofile", "-i"],
                         [f"echo copied-{mark}\n".encode(), b"exit\n"])
    docs = _bash_lines(agent, pid, 2)
    assert docs[0]["audit_collector"]["bash"]["line"] == f"echo copied-{mark}"
    assert docs[0]["process"]["name"] == "renamed-shell"


def test_bash_copy_on_a_reused_inode_gets_probed(agent: RunningAgent, tmp_path: Path) -> None:
    """Regression (a flaky run): a non-bash executable is remembered as such by its inode;
    once deleted, ext4 hands its inode number to the next new file. A bash copy there must
    still be probed: the kernel's i_generation tells the two files apart."""
    probes = agent.agent.probes
    verdicts = agent.agent._bash.verdicts
    not_bash = tmp_path / "not-bash"
    shutil.copy2("/bin/true", not_bash)
    st = os.stat(not_bash)
    subprocess.run([str(not_bash)], check=True)
    deadline = time.monotonic() + 10
    while (not any(k[:2] == (st.st_dev, st.st_ino) and not v for k, v in verdicts.items())
           and time.monotonic() < deadline):
        time.sleep(0.05)
    assert any(k[:2] == (st.st_dev, st.st_ino) and not v for k, v in verdicts.items())
    not_bash.unlink()
    copy = tmp_path / "reused-shell"
    shutil.copy2("/bin/bash", copy)
    if os.stat(copy).st_ino != st.st_ino:
        pytest.skip(f"{tmp_path} did not reuse the freed inode: nothing to tell apart here")
    subprocess.run([str(copy), "-c", "true"], check=True)
    key = (st.st_dev, st.st_ino)
    deadline = time.monotonic() + 10
    while key not in probes.bash_probes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert key in probes.bash_probes
    mark = marker()
    pid, _ = _run_in_pty([str(copy), "--norc", "--noprofile", "-i"],
                         [f"echo reused-{mark}\n".encode(), b"exit\n"])
    assert _bash_lines(agent, pid, 2)[0]["audit_collector"]["bash"]["line"] == f"echo reused-{mark}"


def test_exec_by_an_orphan_of_pid_1(agent: RunningAgent, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: bash following looked for the file under /proc/<ppid>/root; with PID 1
    as the parent and its root unreadable even to root (a sandbox's init), that raised
    PermissionError inside the ring-buffer callback ("Exception ignored in ...")."""
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    program = tmp_path / "orphan-true"  # a file not seen before: it must be checked
    shutil.copy2("/bin/true", program)
    st = os.stat(program)
    unchecked = agent.agent.metrics.capture.bash_unchecked
    unchecked_before = unchecked._value.get()
    mark = marker()
    code = ("import os, time\n"
            "if os.fork() == 0:\n"
            "    while os.getppid() != 1: time.sleep(0.01)\n"
            f"    os.execv({str(program)!r}, [{str(program)!r}, {mark!r}])\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=10)
    (doc,) = execs_with(agent, mark)
    assert doc["process"]["parent"]["pid"] == 1
    verdicts = agent.agent._bash.verdicts
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        decided = any(k[:2] == (st.st_dev, st.st_ino) for k in verdicts)
        counted = unchecked._value.get() > unchecked_before
        if decided or counted:
            break
        time.sleep(0.05)
    # Either a path reached the file (it was decided on) or none could be read: counted.
    assert decided or counted
    assert unraisable == []


def test_no_events_lost_in_normal_operation(agent: RunningAgent) -> None:
    assert not [d for d in agent.sink.docs if d["event"]["action"] == "events_lost"]
    assert agent.agent.probes.lost_counts() == {"exec": 0, "namespace": 0, "bash": 0,
                                                "fork": 0, "exit": 0}


def test_documents_are_ecs_and_use_only_documented_fields(agent: RunningAgent) -> None:
    """Every document the real probes produced in this module: only fields of the table,
    ECS fields with ECS types, allowed category/type pairs (tests/ecs/ecs_reference.py)."""
    from tests.ecs.ecs_reference import document_problems

    problems = {p for doc in agent.sink.docs for p in document_problems(doc)}
    assert problems == set()
    assert len(agent.sink.docs) > 20
    assert {d["event"]["action"] for d in agent.sink.docs} >= {
        "exec", "setns", "unshare", "clone", "bash_command"}


@pytest.fixture
def docker_like_cgroup(agent: RunningAgent) -> Iterator[tuple[Path, str]]:
    """A cgroup named the way docker's systemd driver names one, in the reported hierarchy."""
    container_id = uuid.uuid4().hex + uuid.uuid4().hex
    mount = Path(agent.agent.probes.spec.cgroup_mount)
    path = mount / "system.slice" / f"docker-{container_id}.scope"
    path.mkdir(parents=True)
    try:
        yield path, container_id
    finally:
        for pid in (path / "cgroup.procs").read_text().split():
            subprocess.run(["kill", "-9", pid], check=False)
        time.sleep(0.2)
        path.rmdir()


def test_container_id_from_the_cgroup(agent: RunningAgent,
                                      docker_like_cgroup: tuple[Path, str]) -> None:
    path, container_id = docker_like_cgroup
    mark = marker()
    # The child moves itself into the cgroup, then execs: the kernel reports that cgroup.
    script = f"echo $$ > {path}/cgroup.procs && exec /bin/true {mark}"
    subprocess.run(["/bin/sh", "-c", script], check=True)
    (doc,) = execs_with(agent, mark, "/bin/true")
    assert doc["container"] == {"id": container_id, "runtime": "docker"}
    mount = Path(agent.agent.probes.spec.cgroup_mount)
    assert doc["audit_collector"]["cgroup"]["path"] == "/" + str(path.relative_to(mount))
    assert doc["audit_collector"]["cgroup"]["id"] == os.stat(path).st_ino


def test_nsenter_names_the_container_entered(agent: RunningAgent,
                                             docker_like_cgroup: tuple[Path, str]) -> None:
    path, container_id = docker_like_cgroup
    mark = f"0.{uuid.uuid4().int % 10**12:012d}"
    proc = subprocess.Popen(
        ["/bin/sh", "-c", f"echo $$ > {path}/cgroup.procs && exec unshare --uts --mount "
         f"--fork /bin/sleep 60 {mark}"])
    try:
        (doc,) = execs_with(agent, mark, "/bin/sleep")
        assert doc["container"]["id"] == container_id
        pid = doc["process"]["pid"]
        subprocess.run(["nsenter", "-t", str(pid), "--uts", "--mount", "/bin/true"], check=True)
        uts = os.stat(f"/proc/{pid}/ns/uts").st_ino
        setns = agent.sink.wait_for(
            lambda d: d["event"]["action"] == "setns"
            and d["audit_collector"]["ns"].get("after", {}).get("uts") == uts)
        assert setns[0]["audit_collector"]["ns"]["target"]["container_id"] == container_id
    finally:
        proc.kill()
        proc.wait()


def test_fexecve_is_an_execveat(agent: RunningAgent) -> None:
    mark = marker()
    code = ("import os\n"
            "fd = os.open('/bin/true', os.O_RDONLY)\n"
            f"os.execve(fd, ['true', '{mark}'], {{}})\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    (doc,) = execs_with(agent, mark, "true")
    assert doc["audit_collector"]["exec"]["syscall"] == "execveat"
    assert doc["audit_collector"]["exec"]["filename"].startswith("/dev/fd/")
    assert doc["event"]["outcome"] == "success"
    assert doc["process"]["name"] == "true"


def test_exec_from_a_non_leader_thread(agent: RunningAgent) -> None:
    mark = marker()
    code = ("import os, threading, sys\n"
            "print(os.getpid(), flush=True)\n"
            f"t = threading.Thread(target=os.execv, args=('/bin/true', ['/bin/true', '{mark}']))\n"
            "t.start(); t.join()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    (doc,) = execs_with(agent, mark, "/bin/true")
    assert doc["event"]["outcome"] == "success"
    assert doc["process"]["pid"] == int(out.stdout)
    # After exec the thread has become the leader: one thread, the process's own id.
    assert doc["process"]["thread"]["id"] == int(out.stdout)


def test_a_huge_sparse_executable_does_not_stall_capture(agent: RunningAgent,
                                                         tmp_path: Path) -> None:
    """Regression: an unprivileged user ran a 16 GiB sparse copy of a binary; bash
    detection scanned all of it on the capture thread (58 CPU-seconds, ring buffer
    overflow, events lost), again for every new such file."""
    huge = tmp_path / "huge-true"
    huge.write_bytes(Path("/bin/true").read_bytes())
    os.truncate(huge, 16 << 30)
    huge.chmod(0o755)
    mark = marker()
    subprocess.run([str(huge), mark], check=True)
    burst = marker()
    for i in range(300):
        subprocess.run(["/bin/true", burst, str(i)], check=True)
    # Every exec of the burst arrives while the huge file is (or was) being checked.
    execs_with(agent, burst, "/bin/true", count=300, timeout=20)
    (doc,) = execs_with(agent, mark)
    assert doc["process"]["executable"] == str(huge)
    st = huge.stat()
    verdicts = agent.agent._bash.verdicts
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            k[:2] == (st.st_dev, st.st_ino) for k in list(verdicts)):
        time.sleep(0.05)  # the agent's thread applies the check's result
    assert any(k[:2] == (st.st_dev, st.st_ino) and v is False
               for k, v in list(verdicts.items()))
    assert agent.agent.probes.lost_counts()["exec"] == 0
