"""foveal.cluster: the same task graph here and on a local Ray instance; failures block only what needs them."""

import os
import sys

import pytest

from foveal.cluster import Task, TaskResult, ray_address, run_here, run_on_ray


def square(x):
    return x * x


def fail(message):
    raise ValueError(message)


def where():
    return os.getcwd(), os.environ.get("OMP_NUM_THREADS")


def graph():
    return [Task("a", square, (3,)), Task("b", fail, ("bad input in run-b",)), Task("c", square, (4,), after=("a",)),
            Task("d", square, (5,), after=("b",), what="D"), Task("e", square, (6,), after=("d", "c"))]


def check(results: dict[str, TaskResult]) -> None:
    assert list(results) == ["a", "b", "c", "d", "e"]
    assert results["a"].ok and results["a"].value == 9
    assert results["c"].ok and results["c"].value == 16
    b = results["b"]
    assert not b.ok and b.error == "ValueError: bad input in run-b" and "Traceback" in b.traceback
    assert results["d"].blocked_by == "b" and not results["d"].ok
    assert results["e"].blocked_by == "d"


def test_run_here_runs_in_order_and_blocks_only_what_needs_a_failure():
    lines = []
    results = run_here(graph(), log=lines.append)
    check(results)
    assert lines[0].startswith("finished a") and lines[1] == "FAILED b: ValueError: bad input in run-b"
    assert lines[3] == "not started: D: it needs b, which did not finish"


def test_run_here_does_not_import_ray():
    import subprocess
    code = ("import sys; from foveal.cluster import Task, run_here; run_here([Task('a', len, ('xy',))]); "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("tasks, message", [
    ([Task("a", len), Task("a", len)], "appears twice"),
    ([Task("b", len, after=("a",)), Task("a", len)], "not earlier in the list"),
    ([Task("a", len, cpus=-1)], "must be >= 0"),
    (["a"], "expected foveal.cluster.Task"),
])
def test_bad_graphs_are_refused_before_anything_runs(tasks, message):
    with pytest.raises((ValueError, TypeError), match=message):
        run_here(tasks)


def test_ray_address():
    assert ray_address(None) is None and ray_address("") is None and ray_address("local") is None
    assert ray_address(" auto ") == "auto" and ray_address("ray://h:10001") == "ray://h:10001"


def test_local_ray_instance_gives_the_same_results(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.chdir(tmp_path)
    lines = []
    # the workers import this file's functions by name, as they would import foveal's
    env = {"PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    results = run_on_ray(graph() + [Task("w", where, cpus=1)], workers=2, log=lines.append, env=env)
    check({k: v for k, v in results.items() if k != "w"})
    assert results["w"].value == (str(tmp_path), "1")  # the driver's folder, one thread per CPU asked
    assert results["a"].node == os.uname().nodename
    assert lines[0].startswith("6 task(s) on a local Ray instance (2 CPUs, 1 node(s))")
    # one line per task, the failures word for word as run_here says them
    assert len(lines) == 7 and "FAILED b: ValueError: bad input in run-b" in lines
    assert "not started: D: it needs b, which did not finish" in lines


def test_ended_says_what_a_task_came_to_in_the_callers_words():
    seen, lines = [], []

    def ended(task, result):
        seen.append((task.key, result.ok, result.blocked_by))
        return None if result.ok else f"{task.key}: {result.error}"

    run_here(graph(), log=lines.append, ended=ended)
    assert seen == [("a", True, None), ("b", False, None), ("c", True, None), ("d", False, "b"), ("e", False, "d")]
    assert lines == ["b: ValueError: bad input in run-b", "d: not started: it needs b, which did not finish",
                     "e: not started: it needs d, which did not finish"]


def test_a_task_asking_for_gpus_no_node_has_is_refused_before_any_starts(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"a task asks for 1 GPU\(s\), and no node of this Ray instance has as many "
                                         r"\(at most 0\)"):
        run_on_ray([Task("a", square, (2,)), Task("b", square, (3,), gpus=1)], workers=1)
    import ray

    assert not ray.is_initialized()  # the local instance it started is gone
