"""The call journal: every answered request made durable from inside the executor task.

A wave's Spark output commits only when its task ends, so an answer held in a task is lost
if the driver dies or the task fails. Each task therefore appends its call rows to small
JSON-lines files beside the wave (``<wave>.journal/p<partition>-a<attempt>-<seq>.jsonl``)
as they arrive: on local disks before the program sees the answer, on object stores by a
writer thread that writes whatever accumulated while the previous file was written (group
commit), so a kill loses only the requests in flight. A retried task reads its partition's
earlier files and reuses their ok answers instead of paying for them again. The driver
merges the journals into ``llm_calls`` (``llm/ledger.py``); nothing else records a call.

Each task also keeps a small ``p<partition>-a<attempt>.progress`` file there, replaced every
few seconds with its counts so far (rows done, calls, tokens, cost): what the driver's live
progress line reads while a wave runs (``llm/progress.py``); the ledger never reads it.

Files go through pyarrow's filesystems (local disks, HDFS, S3, GCS, ABFS); ``dbfs:/`` is
written through Databricks' ``/dbfs`` mount. Readers skip a torn last line (a writer killed
mid-write).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow.fs as pafs

_SUFFIX = ".jsonl"
_PROGRESS = ".progress"


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str, bool]:
    """(filesystem, path, is_local) for a qualified URI such as ``file:/x`` or ``s3://b/x``."""
    if uri.startswith("file:"):
        return pafs.LocalFileSystem(), "/" + uri[5:].lstrip("/"), True
    if uri.startswith("dbfs:"):
        return pafs.LocalFileSystem(), "/dbfs/" + uri[5:].lstrip("/"), True
    if "://" not in uri:
        return pafs.LocalFileSystem(), uri, True
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path, False


def file_name(partition: int, attempt: int, seq: int) -> str:
    return f"p{partition:05d}-a{attempt:03d}-{seq:06d}{_SUFFIX}"


def _encode(row: dict[str, Any]) -> str:
    out = dict(row)
    stamp = out.get("updated_at")
    if stamp is not None and not isinstance(stamp, int):
        out["updated_at"] = int(stamp.value // 1000)  # pandas Timestamp -> epoch micros
    return json.dumps(out, ensure_ascii=False)


class JournalWriter:
    """Appends call rows for one task attempt; ``close`` returns once all are written.

    On a local disk (or a mount such as ``/dbfs``) each row is appended to the attempt's
    file before the program sees the answer: a killed process loses nothing it was
    answered (the page cache outlives it). Object stores cannot append, so there a writer
    thread writes whatever accumulated while the previous file was written.
    """

    def __init__(self, uri: str, partition: int, attempt: int) -> None:
        self.fs, self.dir, self.local = _filesystem(uri)
        self.partition, self.attempt, self.seq = partition, attempt, 0
        self.fs.create_dir(self.dir, recursive=True)
        self.error: BaseException | None = None
        self.file = None
        self.queue: queue.Queue[dict | None] = queue.Queue()
        self.thread: threading.Thread | None = None
        if self.local:
            self.file = open(self._next_path(), "a", encoding="utf-8")  # noqa: SIM115
        else:
            self.thread = threading.Thread(target=self._loop, name="llm-journal", daemon=True)
            self.thread.start()

    def _next_path(self) -> str:
        path = f"{self.dir}/{file_name(self.partition, self.attempt, self.seq)}"
        self.seq += 1
        return path

    def append(self, row: dict[str, Any]) -> None:
        if self.error is not None:
            raise RuntimeError(f"the call journal in {self.dir} cannot be written") from self.error
        if self.file is not None:
            self.file.write(_encode(row) + "\n")
            self.file.flush()
        else:
            self.queue.put(row)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()
        if self.error is not None:
            raise RuntimeError(f"the call journal in {self.dir} cannot be written") from self.error

    def _loop(self) -> None:
        done = False
        while not done:
            batch = [self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            done = None in batch
            rows = [r for r in batch if r is not None]
            if rows and self.error is None:
                try:
                    data = "".join(_encode(r) + "\n" for r in rows).encode()
                    with self.fs.open_output_stream(self._next_path()) as out:  # a PUT is atomic
                        out.write(data)
                except BaseException as exc:  # noqa: BLE001 - surfaced by append/close
                    self.error = exc


def _lines(fs: pafs.FileSystem, path: str) -> Iterator[dict[str, Any]]:
    with fs.open_input_stream(path) as src:
        text = src.read().decode("utf-8", errors="replace")
    for line in text.splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a file whose writer died mid-write


def earlier_answers(uri: str, partition: int, attempt: int) -> dict[str, dict[str, Any]]:
    """Ok call rows an earlier attempt of this partition journaled, by request id."""
    if attempt == 0:
        return {}
    fs, root, _ = _filesystem(uri)
    prefix = f"p{partition:05d}-"
    found: dict[str, dict[str, Any]] = {}
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return {}
    for info in infos:
        if info.base_name.startswith(prefix) and info.base_name.endswith(_SUFFIX):
            for row in _lines(fs, info.path):
                if row.get("status") == "ok":
                    found[row["request_id"]] = row
    return found


def write_progress(uri: str, partition: int, attempt: int, stats: dict[str, float]) -> None:
    """Replace this task attempt's counts so far; a reader never sees a half-written file
    (a rename on a local disk, one PUT on an object store)."""
    fs, root, local = _filesystem(uri)
    path = f"{root}/p{partition:05d}-a{attempt:03d}{_PROGRESS}"
    if local:
        fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{path}.tmp" if local else path) as out:
        out.write(json.dumps(stats).encode())
    if local:
        fs.move(f"{path}.tmp", path)


def read_progress(uri: str) -> dict[str, float]:
    """The counts of a wave's tasks summed, the latest attempt of each partition only (a
    retried attempt replaces the failed one's)."""
    fs, root, _ = _filesystem(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return {}
    latest = {
        i.base_name[:6]: i
        for i in sorted(infos, key=lambda i: i.base_name)
        if i.base_name.endswith(_PROGRESS)
    }
    total: dict[str, float] = {}
    for info in latest.values():
        try:
            with fs.open_input_stream(info.path) as src:
                stats = json.loads(src.read())
        except (OSError, ValueError):
            continue  # gone with its wave, or replaced while listed
        for k, v in stats.items():
            total[k] = total.get(k, 0) + v
    return total
