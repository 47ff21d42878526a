"""One run at a time per output: a lease file in the output folder.

Two runs on one output would both pay for the same pending requests, and each one's
recovery would take the other's live journals for a crashed run's. The run holding
``DIR/_lease.json`` renews it every ``refresh_s``; a second run refuses at once with a
message naming the holder. A holder that died frees the lease when its last renewal is
older than ``run.lease_ttl_s`` — at once when it ran on this machine and its process is
gone. Files go through Hadoop's filesystem, so the lease works wherever the tables are.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import SparkSession

from graphgen_spark import fsutil
from graphgen_spark.errors import OutputInUse
from graphgen_spark.tables import OutputLayout

__all__ = ["Lease", "OutputInUse"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Lease:
    spark: SparkSession
    output_dir: str
    run_id: str
    ttl_s: float = 120.0
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        return OutputLayout(self.output_dir).lease

    def _record(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "renewed": time.time(),
            "renewed_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def _holder(self) -> dict[str, Any] | None:
        text = fsutil.read_text(self.spark, self.path)
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return {}  # torn by a writer that died mid-write: treat as expired

    def _expired(self, holder: dict[str, Any]) -> bool:
        if not holder:
            return True
        if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder["pid"])):
            return True
        return time.time() - float(holder.get("renewed", 0)) > self.ttl_s

    def acquire(self) -> Lease:
        """Take the lease or raise :class:`OutputInUse` naming the live holder."""
        record = json.dumps(self._record())
        if not fsutil.write_text(self.spark, self.path, record, overwrite=False):
            holder = self._holder()
            if holder is not None and not self._expired(holder):
                raise OutputInUse(self._refusal(holder))
            fsutil.write_text(self.spark, self.path, record, overwrite=True)
        time.sleep(0.2)  # two takers of an expired lease: the last writer wins, the other sees it
        holder = self._holder()
        if not holder or holder.get("token") != self.token:
            raise OutputInUse(self._refusal(holder or {}))
        self._thread = threading.Thread(target=self._renew, name="output-lease", daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(max(1.0, self.ttl_s / 4)):
            # a missed renewal is retried; the expiry is generous
            with contextlib.suppress(Exception):
                fsutil.write_text(self.spark, self.path, json.dumps(self._record()), True)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        holder = self._holder()
        if holder and holder.get("token") == self.token:
            fsutil.delete(self.spark, self.path)

    def _refusal(self, holder: dict[str, Any]) -> str:
        age = time.time() - float(holder.get("renewed", time.time()))
        return (
            f"output {self.output_dir} is in use by run {str(holder.get('run_id'))[:12]} "
            f"(pid {holder.get('pid')} on {holder.get('host')}, lease renewed {age:.0f} s ago, "
            f"at {holder.get('renewed_utc')}). Two runs on one output would pay twice for the "
            "same requests: wait for that run to finish, or use another output folder. If it "
            f"died, its lease expires {max(0.0, self.ttl_s - age):.0f} s from now "
            "(run.lease_ttl_s)."
        )

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
