"""Spill files of the prediction log: batches kept on local disk while PostgreSQL is away, replayed once it answers.

Each writer process appends to a file of its own in the spill folder (``<time>-<host>-<pid>.spill``),
one record per batch, and fsyncs after each record. A record is one line::

    <payload length> <CRC-32 of the payload, 8 hex digits> <payload>\\n

so a reader checks every record on its own and finds the next one at the next newline: a record
torn by a crash in mid-write, or damaged later, is reported and skipped, and the others are kept.
The payload is JSON (msgspec), ``{"predictions": [row, ...], "actuals": [[id, actual], ...]}``,
each prediction row in the column order of the log's insert statement.

A process holds an exclusive ``flock`` on the file it writes for as long as it has the file open,
and so does the process replaying a file: :func:`claim_files` skips locked files, so a file is
replayed by one process at a time and never while it is still being written (workers and
containers sharing the folder included). A replayed file is deleted only after all of its rows
are committed; if it held unreadable records it is renamed ``*.corrupt`` instead and kept for
inspection.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".spill"
CORRUPT_SUFFIX = ".corrupt"


def frame(payload: bytes) -> bytes:
    """One spill record: the payload with its length and checksum, as a line."""
    return b"%d %08x %s\n" % (len(payload), zlib.crc32(payload), payload)


@dataclass
class Claim:
    """A spill file this process holds the lock of: it may read it and then delete it."""

    path: Path
    descriptor: int
    good: int = 0  # intact records read
    bad: list[str] = field(default_factory=list)  # what was wrong with each unreadable record

    def records(self) -> Iterator[bytes]:
        """The payloads of the file's intact records, in order; unreadable ones are noted in ``bad``."""
        offset = 0
        with self.path.open("rb") as file:
            for line in file:
                payload, problem = _parse(line)
                if problem is None:
                    self.good += 1
                    yield payload
                else:
                    self.bad.append(f"{problem} at byte {offset} ({len(line)} bytes)")
                offset += len(line)

    def finish(self) -> None:
        """The file's records are committed: delete it (or keep it as ``*.corrupt`` if some were unreadable)."""
        if self.bad:
            kept = self.path.with_name(self.path.name + CORRUPT_SUFFIX)
            os.replace(self.path, kept)
            log.error(
                "spill file %s had %d unreadable records (%s); its %d intact records are written; the file is kept"
                " as %s for inspection", self.path, len(self.bad), "; ".join(self.bad[:5]), self.good, kept,
            )
        else:
            self.path.unlink()
        self.release()

    def release(self) -> None:
        """Give the lock up, once (the file stays for a later replay unless :meth:`finish` removed it)."""
        if self.descriptor >= 0:
            os.close(self.descriptor)
            self.descriptor = -1


def _parse(line: bytes) -> tuple[bytes, str | None]:
    """The payload of one spill record, and why it is not intact (None when it is)."""
    if not line.endswith(b"\n"):
        return b"", "torn record (no end of line)"
    parts = line[:-1].split(b" ", 2)
    if len(parts) != 3 or not parts[0].isdigit() or len(parts[1]) != 8:
        return b"", "damaged record header"
    length, checksum, payload = int(parts[0]), parts[1], parts[2]
    if len(payload) != length:
        return b"", f"length {len(payload)} where the header says {length}"
    if b"%08x" % zlib.crc32(payload) != checksum.lower():
        return b"", "checksum mismatch"
    return payload, None


def _lock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def claim_files(directory: Path) -> Iterator[Claim]:
    """The spill files in ``directory`` no process holds, oldest first, each locked while the caller uses it."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # replayed by another process meanwhile
            continue
        if not _lock(descriptor):
            os.close(descriptor)
            continue
        try:
            current = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            current = False
        if not current:  # another process replayed and removed it before the lock was ours
            os.close(descriptor)
            continue
        yield Claim(path, descriptor)


class SpillWriter:
    """This process's spill file: created on the first record, locked while open, fsynced after each record."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._path: Path | None = None
        self._descriptor: int | None = None

    @property
    def path(self) -> Path | None:
        """The file being written (None before the first record)."""
        return self._path

    def append(self, payload: bytes) -> None:
        """Write one record and make it durable (fsync) before returning; OSError when the disk refuses."""
        if self._descriptor is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{time.time_ns()}-{socket.gethostname()}-{os.getpid()}{SUFFIX}"
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            _lock(descriptor)  # a new, exclusively created file: nobody else can hold it
            _fsync_directory(self.directory)
            self._path, self._descriptor = path, descriptor
        data = frame(payload)
        written = os.write(self._descriptor, data)
        while written < len(data):  # a short write (signal, almost full disk): finish it
            written += os.write(self._descriptor, data[written:])
        os.fsync(self._descriptor)

    def seal(self) -> Claim | None:
        """Stop appending to the current file and hand it over, still locked, for replay (None when there is none)."""
        if self._descriptor is None or self._path is None:
            return None
        claim = Claim(self._path, self._descriptor)
        self._path = self._descriptor = None
        return claim

    def close(self) -> None:
        """Close the file (it stays on disk, unlocked, for the next start to replay)."""
        if self._descriptor is not None:
            os.close(self._descriptor)
        self._path = self._descriptor = None


def _fsync_directory(directory: Path) -> None:
    """Make a file's creation in ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
