"""A Dask cluster of separate processes on this machine: ``dask scheduler`` and ``dask worker`` subprocesses.

What the scale bench and the tests use to run on Dask as it runs across machines (each
worker its own process, found through the scheduler's address, as with
``PRICE_PLATFORM_DASK_SCHEDULER`` pointing at a real cluster), rather than a
``LocalCluster`` inside the calling process.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Seconds to wait for the workers to register with the scheduler.
START_TIMEOUT = 120


@contextlib.contextmanager
def dask_processes(folder: Path, *, workers: int = 2, threads: int = 1, pythonpath: Path | None = None) -> Iterator[str]:
    """The address of a started ``dask scheduler`` with ``workers`` ``dask worker`` processes; all stopped after.

    Each worker is one process of ``threads`` threads (``OMP_NUM_THREADS`` the same), logging
    to ``folder/dask-<n>.log``; ``pythonpath`` is added for the workers' imports (tasks whose
    functions live outside the installed packages, such as the bench's).
    """
    folder.mkdir(parents=True, exist_ok=True)
    scheduler_file = folder / "scheduler.json"  # the scheduler writes its address (a port of its choosing) here
    scheduler_file.unlink(missing_ok=True)
    tool = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), os.environ.get("PYTHONPATH")]))
    commands = [[tool, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)]]
    commands += [
        [tool, "worker", "--scheduler-file", str(scheduler_file), "--nworkers", "1", "--nthreads", str(threads), "--no-dashboard",
         "--name", f"worker-{n}", "--local-directory", str(folder / f"worker-{n}")]
        for n in range(workers)
    ]
    processes: list[subprocess.Popen] = []
    try:
        for n, command in enumerate(commands):
            with (folder / f"dask-{n}.log").open("wb") as log:
                processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env))
            if n == 0:
                address = _scheduler_address(scheduler_file, processes[0], folder / "dask-0.log")
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(workers, timeout=START_TIMEOUT)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _scheduler_address(scheduler_file: Path, scheduler: subprocess.Popen, log: Path) -> str:
    """The address the scheduler wrote to its file once listening (a scheduler that died fails here, with its log)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if scheduler.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with {scheduler.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return json.loads(scheduler_file.read_text())["address"]
        time.sleep(0.2)
    raise RuntimeError(f"dask scheduler wrote no address to {scheduler_file} in {START_TIMEOUT} s")


def on_workers(address: str, function: Callable[..., Any], *args: Any) -> Any:  # noqa: ANN401
    """``function(*args)`` run as one task on a worker of the Dask scheduler at ``address``; its result."""
    from distributed import Client

    with Client(address, timeout="60s") as client:
        return client.submit(function, *args, pure=False).result()
