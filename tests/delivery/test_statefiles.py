"""Bounded text files: config, public keys and inventories are read no further than their
limit, so an endless or huge file is a one-line error, not a hang."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.delivery.statefiles import TextFileError, read_bounded_text
from collector.report.inventory import InventoryError, load_inventory


def test_a_small_utf8_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("héllo\n")
    assert read_bounded_text(path, 16) == "héllo\n"


@pytest.mark.parametrize(("body", "message"), [
    (b"x" * 17, "larger than 16 bytes"),
    (b"ok\xff", "not UTF-8 text (byte 2)"),
])
def test_bad_files_are_one_line_naming_the_file(tmp_path: Path, body: bytes,
                                                 message: str) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(body)
    with pytest.raises(TextFileError, match=r"^keys file .*a\.txt: " + message.replace(
            "(", r"\(").replace(")", r"\)")):
        read_bounded_text(path, 16, f"keys file {path}")


def test_an_endless_file_is_refused_not_loaded() -> None:
    with pytest.raises(TextFileError, match="larger than 1024 bytes"):
        read_bounded_text("/dev/zero", 1024)


def test_an_endless_inventory_is_one_line() -> None:
    with pytest.raises(InventoryError, match=r"^inventory /dev/zero: larger than"):
        load_inventory("/dev/zero")


def test_a_missing_file_names_the_reason(tmp_path: Path) -> None:
    with pytest.raises(TextFileError, match=r"cannot read .*none: No such file"):
        read_bounded_text(tmp_path / "none", 16)
