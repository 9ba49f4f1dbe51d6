"""A comparison's runs side by side: local worker processes, one per GPU, or torchrun ranks.

A comparison is a graph of steps (:func:`plan_steps`): every planned run
(:func:`foveal.recipes.compare.config.plan_runs`), its sampled evaluation (``evaluate_repeats`` > 0)
and every generated input that runs share (:data:`foveal.recipes.compare.inputs.MADE`), each made by
exactly one step:

===============================  ===============================================  ==========================
step                             what it does                                     starts after
===============================  ===============================================  ==========================
``input-salience``               RAM+'s salience maps                             -
``input-ps-ram-seed<s>``         PS-RAM's sequences, sampled from RAM of seed s   the RAM run of seed s
``input-hgs``                    PS-HGS's sequences (or: PS-HGS is skipped)       -
``<method>-seed-<s>-pretrain``   RAM+'s salience pretraining                      ``input-salience``
``<method>-seed-<s>``            a run                                            its input; RAM+: its pretraining
``<method>-seed-<s>-sampled``    the run's best checkpoint, sampled locations,    ``<method>-seed-<s>``
                                 M rollouts per test image (``sampled/``)
===============================  ===============================================  ==========================

A step is done when its run has ``results.json`` (a sampled evaluation: ``sampled/results.json`` of
the same M) or its input file exists; done steps are skipped, an interrupted run continues from its
last checkpoint, so any of the three ways below resumes what any other left:

* **one process** (``workers=1``): the steps in plan order, here (progress bars as before).
* **worker processes** (``workers=N``, or ``devices``: one worker per device): N processes started
  with ``spawn``, each with one torch thread (``OMP_NUM_THREADS=1`` in its environment and
  ``torch.set_num_threads(1)``), or, with devices, ``train.device`` of its runs set to its device. This
  process hands a step to an idle worker as soon as the steps it needs are done, in plan order, and
  makes nothing itself except the stand-in NOGS file (before any worker starts).
* **torchrun ranks** (``rank``/``world``): no coordinator. After one barrier (rank 0 first checks the
  inputs and clears old status files), every rank computes the same assignment of the steps that are
  not done to ranks (:func:`assign`: a list schedule simulated with ``train.iterations`` as the cost)
  and takes its own steps in that order, waiting for a step of another rank by polling the shared
  folder for the step's file (``results.json``, the input) or its status file. Every rank goes through
  the steps in one global order consistent with the graph, so no two ranks wait on each other.
  Rank 0 then waits for every step and returns the comparison's outcome.

A step that fails leaves ``<out>/status/<step>.txt`` (its status, the error and the traceback) and
is logged with its folder; the steps that need it are not started (``blocked``) and every other step
still runs; :class:`RunsFailed` is raised at the end, naming each failed run's folder. A worker that
dies (killed, out of memory) fails its step and is replaced. Ctrl-C stops every worker in the middle of
its run: each run folder keeps its last checkpoint (written atomically), so the same command resumes.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from foveal.recipes.compare.config import CompareConfig
from foveal.recipes.compare.steps import (NOT_DONE, Failure, LogFn, Outcome, RunsFailed, Step, StepRunner, assign,
                                          clear_status, read_status, status_path, write_status)

__all__ = ["run_steps", "run_rank", "sync_ranks"]


# ----------------------------------------------------------------------------------------- the schedule
@dataclass
class _Ledger:
    """What happened to the steps of one call."""

    out: Path
    steps: list[Step]
    log: LogFn

    def __post_init__(self) -> None:
        self.by_name = {s.name: s for s in self.steps}
        self.state: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.failures: list[Failure] = []
        self.blocked: list[str] = []

    def record(self, outcome: Outcome) -> None:
        step = self.by_name[outcome.name]
        self.state[step.name] = outcome.status
        if outcome.status == "done":
            clear_status(self.out, step.name)
            self.log(f"finished {step.what}" + (f": {outcome.detail}" if outcome.detail else ""))
            return
        path = write_status(self.out, step.name, outcome.status, outcome.detail, outcome.traceback)
        if outcome.status == "failed":
            folder = step.task.run_dir if step.task is not None else self.out / "inputs"
            failure = Failure(step.what, folder, outcome.detail, path)
            self.failures.append(failure)
            self.log(f"FAILED {failure}")
        elif outcome.status == "skipped":
            self.skip(step, outcome.detail)

    def skip(self, step: Step, reason: str) -> None:
        self.state[step.name] = "skipped"
        if step.task is not None and step.task.method not in self.skipped:
            self.skipped[step.task.method] = reason
            self.log(f"skipping {step.task.method}: {reason}")

    def obstacle(self, step: Step, state: Callable[[str], Optional[str]]) -> Optional[str]:
        """Settle a step that cannot run (a step it needs failed, was skipped, ...): its new state, or None."""
        for dep in step.after:
            why = state(dep)
            if why == "skipped":
                status = read_status(self.out, dep)
                reason = status[1] if status else "an input it needs was skipped"
                write_status(self.out, step.name, "skipped", reason)
                self.skip(step, reason)
                return "skipped"
            if why in NOT_DONE:
                self.state[step.name] = "blocked"
                self.blocked.append(step.what)
                write_status(self.out, step.name, "blocked", f"needs {dep}, which {why}")
                self.log(f"not started: {step.what}: it needs {self.by_name[dep].what}, which {why}")
                return "blocked"
        return None

    def result(self) -> dict[str, str]:
        if self.failures:
            raise RunsFailed(self.failures, self.skipped, self.blocked)
        return self.skipped


def run_steps(steps: list[Step], runner: StepRunner, out: Path, *, workers: int = 1,
              devices: tuple[str, ...] = (), log: LogFn = lambda m: None) -> dict[str, str]:
    """Run every step that is not done, here (``workers=1``, no devices) or on worker processes; the
    methods skipped for want of inputs, with the reason.

    Raises:
        RunsFailed: after every step that could run has run, if some failed.
    """
    ledger = _Ledger(Path(out), steps, log)
    for step in steps:
        if runner.done(step):
            ledger.state[step.name] = "done"
            if step.task is not None and not step.repeats:
                log(f"finished already: {step.what}")
    pending = [s for s in steps if s.name not in ledger.state]
    if not pending:
        return ledger.result()
    n = min(len(devices) or workers, len(pending))
    if n == 1 and devices:
        runner.device = devices[0]
    pool = _Here(runner) if n == 1 else _Pool(runner, out, n, devices[:n], log)
    running: set[str] = set()
    try:
        while pending or running:
            for step in list(pending):
                if ledger.obstacle(step, ledger.state.get) is not None:
                    pending.remove(step)
                elif all(ledger.state.get(d) == "done" for d in step.after) and pool.idle():
                    pending.remove(step)
                    running.add(step.name)
                    log(pool.starting(step))
                    pool.start(step)
            if not running:
                if pending:  # cannot happen: the plan is topological and every dependency settles
                    raise RuntimeError(f"compare: no step can start: {[s.name for s in pending]}")
                break
            outcome = pool.wait()
            running.discard(outcome.name)
            ledger.record(outcome)
    except BaseException:
        pool.close(interrupted=True)
        raise
    pool.close()
    return ledger.result()


class _Here:
    """One step at a time, in this process."""

    def __init__(self, runner: StepRunner) -> None:
        self.runner, self.outcomes = runner, []

    def idle(self) -> bool:
        return not self.outcomes

    def starting(self, step: Step) -> str:
        return _starting(step, "")

    def start(self, step: Step) -> None:
        self.outcomes.append(self.runner.run(step))

    def wait(self) -> Outcome:
        return self.outcomes.pop()

    def close(self, interrupted: bool = False) -> None:
        pass


def _starting(step: Step, where: str) -> str:
    if step.task is None:
        return f"making {step.what}{where}"
    if step.repeats:
        return f"evaluating {step.what} in {step.task.sampled_dir}{where}"
    return f"training {step.what} in {step.task.run_dir}{where}"


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables while a child process starts (it copies the environment)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Pool:
    """Worker processes (``spawn``), each with its own inbox of steps; outcomes and log lines come back on
    one queue. Worker k keeps device ``devices[k]``."""

    def __init__(self, runner: StepRunner, out: Path, n: int, devices: tuple[str, ...], log: LogFn) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.cfg, self.out, self.stop_after, self.log = runner.inputs.cfg, Path(out), runner.stop_after, log
        self.devices = list(devices) or [None] * n
        self.threads = max(1, (os.cpu_count() or 1) // n) if devices else 1
        self.outbox = self.context.Queue()
        self.inboxes: list = [None] * n
        self.workers: list = [None] * n
        self.busy: dict[int, Step] = {}
        self.dead_since: dict[int, float] = {}
        try:
            for k in range(n):
                self._spawn(k)
        except BaseException:  # Ctrl-C while they start: stop those started
            self.close(interrupted=True)
            raise

    def _spawn(self, k: int) -> None:
        self.inboxes[k] = self.context.Queue()
        args = (k, self.devices[k], self.threads, self.inboxes[k], self.outbox, self.cfg, self.out, self.stop_after)
        process = self.context.Process(target=_worker, args=args, name=f"foveal-compare-{k}")
        threads = str(self.threads)
        with _environment(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads):
            process.start()
        self.workers[k] = process

    def idle(self) -> bool:
        return len(self.busy) < len(self.workers)

    def starting(self, step: Step) -> str:
        k = self._free()
        device = f", {self.devices[k]}" if self.devices[k] else ""
        return _starting(step, f" (worker {k}{device})")

    def _free(self) -> int:
        return next(k for k in range(len(self.workers)) if k not in self.busy)

    def start(self, step: Step) -> None:
        k = self._free()
        self.busy[k] = step
        self.inboxes[k].put(step)

    def wait(self) -> Outcome:
        while True:
            try:
                kind, k, payload = self.outbox.get(timeout=1.0)
            except queue.Empty:
                outcome = self._check_workers()
                if outcome is not None:
                    return outcome
                continue
            if kind == "log":
                self.log(f"  [worker {k}] {payload}")
            elif k in self.busy and self.busy[k].name == payload.name:
                del self.busy[k]
                return payload

    def _check_workers(self) -> Optional[Outcome]:
        """A busy worker that has been dead for a while (its last messages drained): its step failed."""
        now = time.monotonic()
        for k, step in list(self.busy.items()):
            if self.workers[k].is_alive():
                continue
            since = self.dead_since.setdefault(k, now)
            if now - since < 2.0:
                continue
            code = self.workers[k].exitcode
            del self.busy[k], self.dead_since[k]
            self._spawn(k)
            hint = " (killed: out of memory?)" if code == -signal.SIGKILL else ""
            return Outcome(step.name, "failed", f"the worker process running it died, exit code {code}{hint}")
        return None

    def close(self, interrupted: bool = False) -> None:
        """Stop the workers: idle ones at once; after Ctrl-C, busy ones by SIGINT (their runs stop as a
        run stops on Ctrl-C), then by SIGTERM if they do not stop."""
        workers = [p for p in self.workers if p is not None]
        for k, process in enumerate(self.workers):
            if process is not None and k not in self.busy and process.is_alive():
                self.inboxes[k].put(None)
        if interrupted:
            _join(workers, 5.0)  # a Ctrl-C at the terminal reached them too
            for process in workers:
                if process.is_alive():
                    os.kill(process.pid, signal.SIGINT)
        _join(workers, 30.0)
        for process in workers:
            if process.is_alive():
                process.terminate()
        _join(workers, 5.0)


def _join(processes: list, timeout: float) -> None:
    end = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, end - time.monotonic()))


def _worker(slot: int, device: Optional[str], threads: int, inbox, outbox, cfg: CompareConfig, out: Path,
            stop_after: Optional[int]) -> None:
    """A worker process: steps from ``inbox`` until None; its environment already holds the thread count."""
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started by a process that ignores it
        from foveal.runtime import speed_up_allocator

        speed_up_allocator()
        import torch

        torch.set_num_threads(threads)

        def log(message: str) -> None:
            outbox.put(("log", slot, message))

        runner = StepRunner(cfg, out, device=device, log=log, stop_after=stop_after)
        log(f"started: pid {os.getpid()}, {torch.get_num_threads()} torch thread(s), OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS')}" + (f", device {device}" if device else ""))
        while True:
            step = inbox.get()
            if step is None:
                return
            runner.progress = _progress_lines(step, log)
            outbox.put(("outcome", slot, runner.run(step)))
    except KeyboardInterrupt:  # Ctrl-C: the run's folder keeps its last checkpoint; leave quietly
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        outbox.cancel_join_thread()


def _progress_lines(step: Step, log: LogFn) -> Callable:
    """A run's progress as a log line per tenth (a worker has no progress bar)."""
    shown = [0]

    def update(done: int, total: int, logs: Optional[dict] = None, *_) -> None:
        if total and done * 10 // total > shown[0]:
            shown[0] = done * 10 // total
            extra = "".join(f", {k} {v:.3g}" for k, v in (logs or {}).items() if k in ("loss", "val/accuracy"))
            log(f"{step.what}: {done}/{total} iterations{extra}")

    return lambda: (update, lambda: None)


# ------------------------------------------------------------------------------------------- torchrun
def run_rank(steps: list[Step], runner: StepRunner, out: Path, rank: int, world: int, *,
             log: LogFn = lambda m: None, poll_s: float = 2.0) -> dict[str, str]:
    """This rank's share of the steps (module docstring), after :func:`sync_ranks`; rank 0 then waits
    for every step. Returns the skipped methods with the reason (rank 0: of every rank).

    Raises:
        RunsFailed: a step of this rank failed (rank 0: a step of any rank).
    """
    out = Path(out)
    ledger = _Ledger(out, steps, log)
    done = frozenset(s.name for s in steps if runner.done(s))
    order, owner = assign(steps, world, done)

    def state(name: str) -> Optional[str]:
        if name in ledger.state:
            return ledger.state[name]
        if runner.done(ledger.by_name[name]):
            return "done"
        status = read_status(out, name)
        return status[0] if status else None

    for name in order:
        step = ledger.by_name[name]
        if owner[name] != rank:
            continue
        if name in done:
            ledger.state[name] = "done"
            if step.task is not None and not step.repeats:
                log(f"finished already: {step.what}")
            continue
        waiting = False
        while ledger.obstacle(step, state) is None and not all(state(d) == "done" for d in step.after):
            if not waiting:
                log(f"waiting for {', '.join(d for d in step.after if state(d) != 'done')} (other ranks)")
                waiting = True
            time.sleep(poll_s)
        if name in ledger.state:  # blocked or skipped
            continue
        log(_starting(step, f" (rank {rank} of {world})"))
        runner.progress = _progress_lines(step, log)  # ranks share a terminal: lines, not progress bars
        ledger.record(runner.run(step))
    if rank == 0:
        _wait_for_all(ledger, state, poll_s, log)
    return ledger.result()


def _wait_for_all(ledger: _Ledger, state: Callable[[str], Optional[str]], poll_s: float, log: LogFn) -> None:
    """Rank 0: wait until every step of every rank has ended, then take in their failures and skips."""
    others = [s for s in ledger.steps if s.name not in ledger.state]
    if others:
        log(f"waiting for the other ranks' {len(others)} step(s)")
    while any(state(s.name) is None for s in others):
        time.sleep(poll_s)
    for step in others:
        if state(step.name) == "done":
            continue
        status, detail = read_status(ledger.out, step.name)
        if status == "failed":
            folder = step.task.run_dir if step.task is not None else ledger.out / "inputs"
            ledger.failures.append(Failure(step.what, folder, detail, status_path(ledger.out, step.name)))
        elif status == "blocked":
            ledger.blocked.append(step.what)
        elif status == "skipped" and step.task is not None:
            ledger.skipped.setdefault(step.task.method, detail)


def sync_ranks(rank: int, prepare: Callable[[], None]) -> None:
    """torchrun's ranks meet once (a gloo barrier): rank 0 first runs ``prepare`` (check the inputs, make
    the stand-ins, clear old status files), so that the others start from what it leaves."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        error = None
        if rank == 0:
            try:
                prepare()
            except BaseException as err:  # the others must not wait at the barrier for a rank that stopped
                error = err
        flag = [error is None]
        dist.broadcast_object_list(flag, src=0)
        if error is not None:
            raise error
        if not flag[0]:
            raise ValueError("rank 0 stopped before training (its error is above); nothing was started")
    finally:
        dist.destroy_process_group()
