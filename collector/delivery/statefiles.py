"""Small state files (the spool's ack, the sealer's chain state) and the directories that
hold them, safe against a hostile local user and a loose umask.

* Files are replaced atomically through a temporary file with a random name, created with
  ``O_EXCL | O_NOFOLLOW`` relative to an open directory: a file or symlink planted under any
  name is never opened, and the rename replaces a planted symlink instead of following it.
* Everything is created owner-only (0600 files, 0700 directories) whatever the umask.
* `open_private_dir` refuses a directory that is a symlink or belongs to another user.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
LOOSE_DIR_BITS = 0o027  # the role makes state directories 0750 root:root: left as they are
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{16}\.tmp$")


class UnsafeDirectory(OSError):
    """A state directory the collector must not use; the message is one line."""


def open_private_dir(path: Path, what: str) -> int:
    """An O_DIRECTORY descriptor of path (created 0700 when missing, set to 0700 when others
    may enter it or its group may write). Refused: a symlink, a non-directory, a directory
    of another user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, DIR_MODE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
            raise UnsafeDirectory(f"{what} {path} is a symbolic link; refusing to use it "
                                  "(point the setting at the real directory)") from exc
        raise UnsafeDirectory(f"{what} {path}: {exc.strerror}") from exc
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        os.close(fd)
        raise UnsafeDirectory(f"{what} {path} is owned by uid {st.st_uid}, not by this user "
                              f"(uid {os.geteuid()}); refusing to use it")
    if stat.S_IMODE(st.st_mode) & LOOSE_DIR_BITS:
        os.fchmod(fd, DIR_MODE)
    return fd


def open_dir(path: Path) -> int:
    """An O_DIRECTORY descriptor of path (created 0700 when missing; an existing directory
    is used as it is)."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def replace_file(dir_fd: int, name: str, body: bytes, durable: bool) -> None:
    """Atomically make `name` (in the directory dir_fd) hold body, mode 0600. durable: the
    content and the rename are on disk when this returns. Raises OSError; then `name` is
    unchanged and no temporary file is left."""
    tmp = f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 FILE_MODE, dir_fd=dir_fd)
    try:
        try:
            os.fchmod(fd, FILE_MODE)  # the umask may have taken bits off
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    if durable:
        os.fsync(dir_fd)


def read_file(dir_fd: int, name: str, limit: int) -> bytes:
    """The first `limit` bytes of a regular file `name`; a symlink, FIFO or device there
    raises OSError instead of being followed or blocking."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                 dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{name} is not a regular file")
        chunks = []
        while limit > 0:
            chunk = os.read(fd, limit)
            if not chunk:
                break
            chunks.append(chunk)
            limit -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def remove_stale_temps(dir_fd: int, name: str) -> None:
    """Temporary files of `name` left by a crash between create and rename."""
    for entry in os.listdir(dir_fd):
        match = _TEMP_RE.match(entry)
        if match and match.group("name") == name:
            with contextlib.suppress(OSError):
                os.unlink(entry, dir_fd=dir_fd)


class TextFileError(ValueError):
    """A text file that cannot be used; the message is one line that names it."""


def read_bounded_text(path: str | os.PathLike[str], max_bytes: int, label: str = "") -> str:
    """A UTF-8 text file of at most `max_bytes`, read no further than that (a huge or
    endless file, e.g. /dev/zero, is refused, not loaded). `label` names the file in the
    messages ("config file /etc/...": default the path)."""
    label = label or str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise TextFileError(f"cannot read {label}: {exc.strerror}") from None
    if len(raw) > max_bytes:
        raise TextFileError(f"{label}: larger than {max_bytes} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TextFileError(f"{label}: not UTF-8 text (byte {exc.start})") from None
