"""A real Ray cluster on this machine for tests: a head and worker nodes started as separate processes with
``ray start --block``, as on a Slurm allocation; a node can be killed while work runs on it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session(sid: int) -> list[int]:
    """The live processes of the session ``sid`` (a node started with ``start_new_session``)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


class Cluster:
    def __init__(self, address: str, env: dict[str, str], temp_dir: str) -> None:
        self.address, self.env, self.temp_dir = address, env, temp_dir
        self.nodes: list[subprocess.Popen] = []

    def add_node(self, cpus: int = 1) -> subprocess.Popen:
        node = subprocess.Popen([RAY, "start", f"--address={self.address}", f"--num-cpus={cpus}", "--num-gpus=0",
                                 "--block", "--disable-usage-stats"], env=self.env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.nodes.append(node)
        return node

    def kill(self, node: subprocess.Popen) -> None:
        """The node and every process it started (raylet, workers) die at once, as when a machine is lost.
        Its workers run in process groups of their own, within the node's session: the session it is."""
        for pid in session(node.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.wait()

    def alive_nodes(self) -> int:
        code = ("import ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
                "print(sum(n['Alive'] for n in ray.nodes()))" % self.address)
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0

    def wait_for(self, n: int, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.alive_nodes() >= n:
                return
            time.sleep(1)
        raise TimeoutError(f"the Ray cluster at {self.address} did not reach {n} live node(s) in {timeout:.0f} s")


@contextmanager
def ray_cluster(nodes: int = 2, cpus_per_node: int = 1, pythonpath: tuple[str, ...] = ()) -> Iterator[Cluster]:
    """A head (``cpus_per_node`` CPUs) and ``nodes - 1`` more nodes; all are stopped on exit."""
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([*pythonpath, os.environ.get("PYTHONPATH", "")]).strip(os.pathsep)}
    head = subprocess.Popen([RAY, "start", "--head", f"--port={port}", f"--num-cpus={cpus_per_node}", "--num-gpus=0",
                             "--block", "--disable-usage-stats", "--include-dashboard=false", f"--temp-dir={temp_dir}"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cluster = Cluster(f"127.0.0.1:{port}", env, temp_dir)
    try:
        cluster.wait_for(1)
        for _ in range(nodes - 1):
            cluster.add_node(cpus_per_node)
        cluster.wait_for(nodes)
        yield cluster
    finally:
        for node in [*cluster.nodes, head]:
            cluster.kill(node)
        shutil.rmtree(temp_dir, ignore_errors=True)
