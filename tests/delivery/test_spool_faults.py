"""The spool under hostile conditions: write errors of every kind, damaged segments, a
wrong ack cursor, planted symlinks and a loose umask. Nothing may raise out of `append`
(it runs inside the ring-buffer callback), nothing may be lost without a report."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from collector.delivery.loss import DroppedRange
from collector.delivery.spool import ACK_FILE, HEADER_SIZE, Spool, encode_record
from collector.delivery.statefiles import UnsafeDirectory
from tests.delivery.spool_support import (
    PAYLOAD,
    fill,
    flip_byte,
    open_spool,
    read_all,
    rewrite,
    sample,
    segments,
    spool_cfg,
    spool_with,
)

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


def run_child(code: str, *args: str, user: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, user=user,
                          capture_output=True, text=True, timeout=120, check=False)


def child_result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def runs(drops: list[DroppedRange]) -> list[tuple[int, int, str]]:
    return [(d.first_seq, d.last_seq, d.reason) for d in drops]


# --------------------------------------------------------------------------- write errors

# Appends go through a real ctypes callback, as BCC's ring-buffer callback does: an exception
# there is printed as "Exception ignored on calling ctypes callback" and the record is lost.
CHILD_PRELUDE = """
import ctypes, json, logging, os, resource, sys
from pathlib import Path
from collector.delivery.metrics import DeliveryMetrics
from collector.delivery.spool import Spool
from tests.delivery.spool_support import PAYLOAD, Drops, read_all, spool_cfg

logging.basicConfig(level=logging.INFO, format="LOG %(levelname)s %(message)s")
path = Path(sys.argv[1])
drops, metrics = Drops(), DeliveryMetrics()
spool = Spool(spool_cfg(path, segment_bytes=4096), drops, metrics)
accepted = {}
CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int)
def on_event(seq):
    accepted[seq] = spool.append(seq, f"id-{seq}", PAYLOAD % seq)
callback = CALLBACK(on_event)
def append(first, last):
    for seq in range(first, last + 1):
        callback(seq)
    spool.flush()
def report(**extra):
    print(json.dumps({
        "accepted": sorted(s for s, ok in accepted.items() if ok),
        "refused": sorted(s for s, ok in accepted.items() if not ok),
        "runs": [(r.first_seq, r.last_seq, r.reason) for r in drops.take()],
        "write_errors": metrics.registry.get_sample_value(
            "audit_collector_spool_dropped_total", {"reason": "write-error"}),
        "shipped": read_all(spool), **extra}))
"""

EMFILE_CHILD = CHILD_PRELUDE + """
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
append(1, 100)  # ~16 records a segment: several rotations without a free descriptor
for fd in held:
    os.close(fd)
append(101, 200)
report()
"""


def assert_no_callback_exceptions(proc: subprocess.CompletedProcess) -> None:
    assert "Exception ignored" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def log_lines(proc: subprocess.CompletedProcess, level: str) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith(f"LOG {level}")]


def test_descriptors_used_up_at_rotation_refuse_report_and_recover(tmp_path: Path) -> None:
    proc = run_child(EMFILE_CHILD, str(tmp_path / "spool"))
    assert_no_callback_exceptions(proc)
    result = child_result(proc)
    refused = result["refused"]
    assert refused and refused == list(range(refused[0], 101)), "rotation must have failed"
    assert result["accepted"] == [*range(1, refused[0]), *range(101, 201)]
    assert result["runs"] == [[refused[0], 100, "write-error"]]
    assert result["write_errors"] == len(refused)
    assert result["shipped"] == result["accepted"]
    [failing] = log_lines(proc, "WARNING")  # one line for the whole episode
    assert "Too many open files" in failing
    assert any("writing again" in line for line in log_lines(proc, "INFO"))


READ_ONLY_CHILD = CHILD_PRELUDE + """
append(1, 30)
os.chmod(path, 0o500)  # the spool directory becomes read-only
append(31, 100)
batch = spool.read_batch(20, 1 << 20)
spool.ack(batch)  # saving the ack and deleting acknowledged segments fail too
acked = [r.seq for r in batch]
os.chmod(path, 0o700)
append(101, 150)
report(acked=acked)
"""


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory the unprivileged user `nobody` owns (root ignores file modes)."""
    try:
        subprocess.run([sys.executable, "-c", "pass"], cwd=REPO, user=NOBODY, check=True,
                       capture_output=True, timeout=60)
    except (PermissionError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"{sys.executable} or {REPO} is not reachable by uid {NOBODY} ({exc}); "
                    "the run with the system Python covers this test")
    base = Path(tempfile.mkdtemp(prefix="spool-ro-"))
    try:
        base.chmod(0o711)
        spool_dir = base / "spool"
        spool_dir.mkdir(mode=0o700)
        os.chown(spool_dir, NOBODY, NOBODY)
        yield spool_dir
    finally:
        shutil.rmtree(base)


def test_read_only_directory_refuses_report_and_recover(nobody_dir: Path) -> None:
    proc = run_child(READ_ONLY_CHILD, str(nobody_dir), user=NOBODY)
    assert_no_callback_exceptions(proc)
    result = child_result(proc)
    refused = result["refused"]
    assert refused and refused == list(range(refused[0], 101)), "rotation must have failed"
    assert result["runs"] == [[refused[0], 100, "write-error"]]
    assert result["write_errors"] == len(refused)
    assert result["acked"] == list(range(1, 21))
    assert result["shipped"] == [s for s in result["accepted"] if s > 20]
    assert any("Permission denied" in line for line in log_lines(proc, "WARNING"))


def test_unencodable_record_is_refused_not_raised(tmp_path: Path) -> None:
    spool, drops, metrics = open_spool(spool_cfg(tmp_path))
    assert spool.append(1 << 64, "id-big", b"{}") is False  # does not fit the record format
    assert spool.append(2, "id-2", b"{}") is True
    assert runs(drops.take()) == [(1 << 64, 1 << 64, "write-error")]
    assert sample(metrics, "audit_collector_spool_dropped_total", reason="write-error") == 1


# --------------------------------------------------------------------------- ack cursor


def write_ack(path: Path, segment: int, offset: int) -> None:
    (path / ACK_FILE).write_bytes(orjson.dumps({"segment": segment, "offset": offset}))


def read_ack(path: Path) -> dict:
    return orjson.loads((path / ACK_FILE).read_bytes())


def test_ack_cursor_inside_a_record_resumes_at_that_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_with(tmp_path, 50, acked=10, segment_bytes=1 << 20)
    ack = read_ack(tmp_path)
    write_ack(tmp_path, ack["segment"], ack["offset"] + 5)  # inside record 11

    with caplog.at_level(logging.WARNING):
        again, drops, _ = open_spool(spool_cfg(tmp_path, segment_bytes=1 << 20))
    assert read_all(again) == list(range(11, 51))  # 11 is shipped again: 409 if stored
    assert drops.take() == []  # nothing skipped, nothing lost
    assert [f.kind for f in again.findings] == ["ack-resync"]
    assert len([r for r in caplog.records if "ack" in r.getMessage()]) == 1


def test_damage_at_the_cursor_found_while_shipping_is_skipped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The file changes under a running spool: the reader must not stall on it. (Read
    from disk: from memory, intact copies of 11 and 12 would be shipped; see test_spool.)"""
    spool, drops, _ = open_spool(spool_cfg(tmp_path, segment_bytes=1 << 20), memory_bytes=0)
    fill(spool, 1, 50)
    spool.ack(spool.read_batch(10, 1 << 20))
    [seg] = segments(tmp_path)
    offset = read_ack(tmp_path)["offset"]
    with open(seg, "r+b") as handle:  # records 11 and 12 are overwritten
        handle.seek(offset)
        handle.write(b"\xee" * 400)
    with caplog.at_level(logging.WARNING):
        shipped = read_all(spool)
    assert shipped == list(range(13, 51))
    assert runs(drops.take()) == [(11, 12, "corrupt")]
    assert len([r for r in caplog.records if "damaged" in r.getMessage()]) == 1


def test_ack_beyond_the_last_segment_deletes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_with(tmp_path, 200, acked=5)
    before = segments(tmp_path)
    write_ack(tmp_path, 10**9, 100)

    with caplog.at_level(logging.WARNING):
        again, drops, _ = open_spool(spool_cfg(tmp_path))
    assert segments(tmp_path) == before
    assert read_all(again) == list(range(1, 201))  # replayed: 409 for what is stored
    assert drops.take() == []
    assert [f.kind for f in again.findings] == ["ack-resync"]
    assert len([r for r in caplog.records if "ack" in r.getMessage()]) == 1


# --------------------------------------------------------------------------- damage


def test_damage_inside_the_newest_segment_keeps_the_records_after_it(tmp_path: Path) -> None:
    spool_with(tmp_path, 50, segment_bytes=1 << 20)
    [seg] = segments(tmp_path)
    record_20 = encode_record(20, "id-20", PAYLOAD % 20)
    record = len(record_20)  # records 10..50: one size
    start = seg.read_bytes().index(record_20) + 30  # inside 20, through 22

    def zero(raw: bytearray) -> None:
        raw[start:start + 2 * record + 10] = bytes(2 * record + 10)

    rewrite(seg, zero)

    again, drops, metrics = open_spool(spool_cfg(tmp_path, segment_bytes=1 << 20))
    assert runs(drops.take()) == [(20, 22, "corrupt")]
    assert sample(metrics, "audit_collector_spool_corrupt_bytes_total") == 3 * record
    fill(again, 51, 60)
    assert read_all(again) == [*range(1, 20), *range(23, 61)]
    assert [f.kind for f in again.findings] == ["damage"]


def test_torn_tail_after_damage_is_still_cut_without_a_report(tmp_path: Path) -> None:
    spool_with(tmp_path, 50, segment_bytes=1 << 20)
    [seg] = segments(tmp_path)
    raw = bytearray(seg.read_bytes())
    raw[HEADER_SIZE + 100] ^= 0xFF  # record 1 is damaged, 2.. are intact
    seg.write_bytes(bytes(raw) + raw[HEADER_SIZE:HEADER_SIZE + 100])  # + half a record

    again, drops, _ = open_spool(spool_cfg(tmp_path, segment_bytes=1 << 20))
    assert seg.stat().st_size == len(raw)
    assert read_all(again) == list(range(2, 51))
    assert runs(drops.take()) == []  # record 1: no earlier sequence to bound it, see below
    assert [f.kind for f in again.findings] == ["damage", "torn-tail"]


def test_damage_right_at_the_cursor_is_reported(tmp_path: Path) -> None:
    spool_with(tmp_path, 50, acked=10, segment_bytes=1 << 20)
    [seg] = segments(tmp_path)
    at = read_ack(tmp_path)["offset"] + 100  # inside record 11, right at the cursor
    rewrite(seg, flip_byte(at))

    again, drops, _ = open_spool(spool_cfg(tmp_path, segment_bytes=1 << 20))
    assert runs(drops.take()) == [(11, 11, "corrupt")]
    assert read_all(again) == list(range(12, 51))


def segment_seqs(path: Path) -> list[list[int]]:
    """Sequences in each segment file, read with a throwaway spool copy."""
    out = []
    for seg in segments(path):
        copy = path.parent / f"copy-{seg.name}"
        copy.mkdir(mode=0o700)
        shutil.copy(seg, copy / seg.name)
        out.append(read_all(Spool(spool_cfg(copy))))
        shutil.rmtree(copy)
    return out


@pytest.mark.parametrize("damage", ["zero-length", "garbage"])
def test_unreadable_older_segment_is_reported_from_its_neighbours(
    tmp_path: Path, damage: str
) -> None:
    spool_with(tmp_path / "spool", 300)
    per_segment = segment_seqs(tmp_path / "spool")
    victim = segments(tmp_path / "spool")[1]
    victim.write_bytes(b"" if damage == "zero-length" else os.urandom(victim.stat().st_size))

    again, drops, _ = open_spool(spool_cfg(tmp_path / "spool"))
    lost = per_segment[1]
    assert runs(drops.take()) == [(lost[0], lost[-1], "corrupt")]
    assert read_all(again) == [s for s in range(1, 301) if s not in lost]
    assert [f.kind for f in again.findings] == ["damage"]


def test_unreadable_first_segment_is_bounded_by_the_saved_ack(tmp_path: Path) -> None:
    spool_with(tmp_path / "spool", 300, acked=10)
    per_segment = segment_seqs(tmp_path / "spool")
    segments(tmp_path / "spool")[0].write_bytes(b"")

    again, drops, _ = open_spool(spool_cfg(tmp_path / "spool"))
    assert runs(drops.take()) == [(11, per_segment[0][-1], "corrupt")]
    assert read_all(again) == list(range(per_segment[1][0], 301))


def test_bad_magic_with_intact_records_loses_nothing(tmp_path: Path) -> None:
    spool_with(tmp_path, 300)

    def bad_magic(raw: bytearray) -> None:
        raw[:HEADER_SIZE] = b"XXXXXXXX"

    rewrite(segments(tmp_path)[1], bad_magic)

    again, drops, _ = open_spool(spool_cfg(tmp_path))
    assert drops.take() == []
    assert read_all(again) == list(range(1, 301))


# --------------------------------------------------------------------------- the directory


def test_planted_ack_tmp_symlink_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_cfg(spool_dir))
    for name in ("ack.tmp", "ack.json.tmp"):
        (spool_dir / name).symlink_to(victim)
    fill(spool, 1, 20)
    spool.ack(spool.read_batch(10, 1 << 20))
    spool.close()
    assert victim.read_bytes() == b"precious"
    assert read_ack(spool_dir)["seq"] == 10
    assert not (spool_dir / ACK_FILE).is_symlink()


def test_a_symlinked_spool_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "spool").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeDirectory, match="symbolic link") as info:
        Spool(spool_cfg(tmp_path / "spool"))
    assert "\n" not in str(info.value)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_spool_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()
    os.chown(tmp_path / "spool", NOBODY, NOBODY)
    with pytest.raises(UnsafeDirectory, match="owned by uid 65534") as info:
        Spool(spool_cfg(tmp_path / "spool"))
    assert "\n" not in str(info.value)


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    (tmp_path / "loose").mkdir(mode=0o755)
    old = os.umask(0o022)
    try:
        for spool_dir in (tmp_path / "new" / "spool", tmp_path / "loose"):
            spool = Spool(spool_cfg(spool_dir, segment_bytes=4096))
            fill(spool, 1, 40)
            spool.ack(spool.read_batch(5, 1 << 20))
            spool.close()
            assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
            for entry in spool_dir.iterdir():
                assert stat.S_IMODE(entry.stat().st_mode) == 0o600, entry
    finally:
        os.umask(old)


def test_clean_restarts_find_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        Spool(spool_cfg(tmp_path)).close()  # a header-only segment
        spool, drops, _ = open_spool(spool_cfg(tmp_path))
        fill(spool, 1, 300)
        read_all(spool)
        spool.close()
        again, drops, _ = open_spool(spool_cfg(tmp_path))
        fill(again, 301, 310)
        assert read_all(again) == list(range(301, 311))
    assert list(again.findings) == [] and drops.take() == []
    assert [r.getMessage() for r in caplog.records if r.name.endswith("spool")] == []


def test_damaged_last_record_is_bounded_by_the_next_record_read(tmp_path: Path) -> None:
    """Not a torn tail (the record is whole, its CRC is wrong) and nothing intact after it:
    cut, and the sequences in it are reported once the next record shows where they end."""
    spool_with(tmp_path, 50, segment_bytes=1 << 20)
    [seg] = segments(tmp_path)
    rewrite(seg, flip_byte(seg.stat().st_size - 10))

    again, drops, _ = open_spool(spool_cfg(tmp_path, segment_bytes=1 << 20))
    assert read_all(again) == list(range(1, 50))
    assert drops.take() == []
    fill(again, 51, 60)
    assert read_all(again) == list(range(51, 61))
    assert runs(drops.take()) == [(50, 50, "corrupt")]
    assert [f.kind for f in again.findings] == ["damage"]
