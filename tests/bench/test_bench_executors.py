"""The executors on fake runs (tests/helpers/fake_runs.py): order and concurrency, skipping done runs,
a failure blocking only its dependents, exit 75 re-queued with --resume, the ledger's content, GPUs per
worker, and for Ray the same plus a task whose worker process is killed once and retried."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from sau_plugin.bench.execute import Grid, Ledger, command
from sau_plugin.bench.local import default_workers, run_local
from sau_plugin.errors import ConfigError, Preempted
from tests.helpers.fake_runs import alive, events, fake_run, final, grid_of, ledger
from tests.helpers.scripts import load_bench_script


def local(tmp_path, runs, workers=2, **kw):
    grid = Grid(runs, Ledger(str(tmp_path / "reports" / "t.runs.jsonl")), progress=False)
    run_local(grid, workers, **kw)
    grid.close()
    return grid, ledger(tmp_path / "reports" / "t.runs.jsonl")


def starts_and_ends(tmp_path):
    ev = events(tmp_path)
    return ({e["run"]: e["t"] for e in ev if e["what"] == "start"}, {e["run"]: e["t"] for e in ev if e["what"] == "end"})


def max_overlap(tmp_path) -> int:
    marks = sorted([(e["t"], 1 if e["what"] == "start" else -1) for e in events(tmp_path)
                    if e["what"] in ("start", "end")])
    level = best = 0
    for _, step in marks:
        level += step
        best = max(best, level)
    return best


def test_local_runs_defenses_after_their_attack_n_at_a_time(tmp_path):
    grid, entries = local(tmp_path, grid_of(tmp_path, {}, sleep=0.3), workers=2)
    start, end = starts_and_ends(tmp_path)
    assert set(end) == {"a1", "a2", "a1/d1", "a1/d2", "a2/d1", "a2/d2"}
    for d in ("d1", "d2"):
        assert start[f"a1/{d}"] >= end["a1"] and start[f"a2/{d}"] >= end["a2"]
    assert max_overlap(tmp_path) == 2  # two workers busy at once, never three
    assert {e["status"] for e in final(entries).values()} == {"done"}
    assert grid.failures() == []


def test_local_one_worker_is_sequential_in_plan_order(tmp_path):
    runs = grid_of(tmp_path, {})
    local(tmp_path, runs, workers=1)
    assert [e["run"] for e in events(tmp_path) if e["what"] == "start"] == [r.id for r in runs]
    assert max_overlap(tmp_path) == 1


def test_done_runs_are_skipped_and_recorded_as_such(tmp_path):
    runs = grid_of(tmp_path, {})
    for r in runs[:2]:  # a1 and a1/d1 finished earlier
        (tmp_path / r.marker).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / r.marker).write_text("")
    _, entries = local(tmp_path, runs)
    assert [e["run"] for e in events(tmp_path) if e["what"] == "start"].count("a1") == 0
    assert {e["run"] for e in events(tmp_path)} == {"a1/d2", "a2", "a2/d1", "a2/d2"}
    last = final(entries)
    assert last["a1"]["status"] == last["a1/d1"]["status"] == "skipped"
    assert last["a1"]["reason"] == "rec/a1/result.pt exists" and last["a1"]["attempts"] == 0


def test_a_failure_blocks_only_its_dependents_and_is_in_the_ledger(tmp_path):
    grid, entries = local(tmp_path, grid_of(tmp_path, {"a1": "fail", "a2/d2": "nomarker"}))
    last = final(entries)
    assert last["a1"]["status"] == "failed" and last["a1"]["exit_code"] == 3 and last["a1"]["reason"] == "exit 3"
    assert last["a1/d1"]["status"] == last["a1/d2"]["status"] == "blocked"
    assert last["a1/d1"]["reason"] == "a1 did not succeed"
    assert last["a2"]["status"] == last["a2/d1"]["status"] == "done"
    assert last["a2/d2"]["status"] == "failed" and last["a2/d2"]["reason"] == (
        "exited 0 without writing rec/a2_d2/result.pt")
    assert [r.id for r, _ in grid.failures()] == ["a1", "a1/d1", "a1/d2", "a2/d2"]
    assert "fake run a1" in (tmp_path / "logs" / "a1.log").read_text()  # the command's output is in its log
    done = last["a2/d1"]
    assert set(done) >= {"run", "command", "status", "attempts", "start", "end", "host", "device", "exit_code", "log"}
    assert done["log"] == "logs/a2_d1.log" and done["device"] == "cpu" and done["exit_code"] == 0
    assert done["command"].endswith("--out rec/a2_d1/out") and done["start"] <= done["end"]


def test_exit_75_is_requeued_with_resume(tmp_path):
    _, entries = local(tmp_path, grid_of(tmp_path, {"a2/d1": "preempt"}))
    mine = [e for e in entries if e["run"] == "a2/d1"]
    assert [e["status"] for e in mine] == ["running", "preempted", "running", "done"]
    assert mine[1]["exit_code"] == 75 and not mine[0]["command"].endswith("--resume")
    assert mine[2]["command"].endswith("--resume") and mine[-1]["attempts"] == 2
    assert [e["resumed"] for e in events(tmp_path) if e["run"] == "a2/d1" and e["what"] == "start"] == [False, True]


def test_an_attack_exiting_75_is_a_failure_not_a_retry(tmp_path):
    _, entries = local(tmp_path, [fake_run(tmp_path, "a1", "preempt")])
    assert [e["status"] for e in entries] == ["running", "failed"]


def test_command_adds_resume_only_for_a_plugin_run_with_files_in_its_folder(tmp_path):
    attack, defense = fake_run(tmp_path, "a1"), fake_run(tmp_path, "a1/d1", kind="defense", deps=("a1",))
    assert command(defense) == list(defense.argv)
    (tmp_path / defense.resume_dir).mkdir(parents=True)
    assert command(defense) == list(defense.argv)  # an empty folder: nothing to continue
    (tmp_path / defense.resume_dir / "x.log").write_text("")
    assert command(defense) == [*defense.argv, "--resume"]
    (tmp_path / "rec" / "a1" / "out").mkdir(parents=True)
    (tmp_path / "rec" / "a1" / "out" / "f").write_text("")
    assert command(attack) == list(attack.argv)


def test_each_worker_gets_its_own_gpus(tmp_path):
    runs = [fake_run(tmp_path, f"a{i}", sleep=0.3, gpus=1) for i in range(4)]
    _, entries = local(tmp_path, runs, workers=2, gpus=["0", "1"])
    seen = [e for e in events(tmp_path) if e["what"] == "start"]
    assert sorted({e["gpus"] for e in seen}) == ["0", "1"]
    for a in seen:  # two runs at the same time never share a GPU
        for b in seen:
            if a is not b and a["gpus"] == b["gpus"]:
                end_a = next(e["t"] for e in events(tmp_path) if e["run"] == a["run"] and e["what"] == "end")
                end_b = next(e["t"] for e in events(tmp_path) if e["run"] == b["run"] and e["what"] == "end")
                assert end_a <= b["t"] or end_b <= a["t"]
    assert {e["device"] for e in entries if e["status"] == "done"} == {"gpu:0", "gpu:1"}
    (tmp_path / "x").mkdir()
    local(tmp_path / "x", [fake_run(tmp_path / "x", "b", gpus=1)], workers=2, gpus=["0", "1", "2"], gpus_per_run=2)
    assert next(e["gpus"] for e in events(tmp_path / "x")) == "0,1"
    assert default_workers(runs, ["0", "1", "2", "3"], None) == 4 and default_workers(runs, ["0", "1", "2"], 2) == 1
    assert default_workers(runs, [], None) == 1
    with pytest.raises(ConfigError, match="a run needs 3 GPUs and this machine shows 2; pass --gpus-per-run 2"):
        local(tmp_path, runs, gpus=["0", "1"], gpus_per_run=3)


def test_runs_get_the_thread_count(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    local(tmp_path, [fake_run(tmp_path, "a1")], threads=3)
    local(tmp_path, [fake_run(tmp_path, "a2")])  # without: the run's cpus
    assert [e["threads"] for e in events(tmp_path) if e["what"] == "start"] == ["3", "1"]


def test_sigterm_to_the_executor_stops_the_runs_and_exits_preempted(tmp_path):
    runs = [fake_run(tmp_path, "a1"), fake_run(tmp_path, "a1/d1", "ok", sleep=30, deps=("a1",), kind="defense"),
            fake_run(tmp_path, "a1/d2", deps=("a1",), kind="defense")]

    def stop_when_running():
        for _ in range(400):
            if any(e["run"] == "a1/d1" for e in events(tmp_path)):
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    threading.Thread(target=stop_when_running, daemon=True).start()
    t0 = time.time()
    with pytest.raises(Preempted, match="stopped by SIGTERM; run the same command again"):
        local(tmp_path, runs, workers=1)
    assert time.time() - t0 < 20  # the sleeping run was stopped, not waited for
    last = final(ledger(tmp_path / "reports" / "t.runs.jsonl"))
    assert last["a1"]["status"] == "done" and last["a1/d1"]["status"] in ("stopped", "failed")
    assert last["a1/d2"]["status"] == "stopped"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


# ---- Ray -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def by_ray(tmp_path, runs, **kw):
    from sau_plugin.bench.ray_exec import run_ray

    grid = Grid(runs, Ledger(str(tmp_path / "reports" / "t.runs.jsonl")), progress=False)
    run_ray(grid, str(tmp_path / "rec"), **kw)
    grid.close()
    return grid, ledger(tmp_path / "reports" / "t.runs.jsonl")


def test_ray_order_skip_failure_and_requeue(ray_local, tmp_path):
    runs = grid_of(tmp_path, {"a1": "fail", "a2/d1": "preempt"}, sleep=0.2)
    (tmp_path / runs[5].marker).parent.mkdir(parents=True)
    (tmp_path / runs[5].marker).write_text("")  # a2/d2 done earlier
    grid, entries = by_ray(tmp_path, runs)
    last = final(entries)
    assert {k: v["status"] for k, v in last.items()} == {
        "a1": "failed", "a1/d1": "blocked", "a1/d2": "blocked", "a2": "done", "a2/d1": "done", "a2/d2": "skipped"}
    assert last["a1"]["exit_code"] == 3 and last["a1"]["log"] == "logs/a1.log"
    mine = [e["status"] for e in entries if e["run"] == "a2/d1"]
    assert mine == ["running", "preempted", "running", "done"] and last["a2/d1"]["command"].endswith("--resume")
    start, end = starts_and_ends(tmp_path)
    assert start["a2/d1"] >= end["a2"] and "a2/d2" not in start
    assert {r.id for r, _ in grid.failures()} == {"a1", "a1/d1", "a1/d2"}


def test_ray_retries_a_task_whose_worker_was_killed(ray_local, tmp_path):
    runs = [fake_run(tmp_path, "a1"), fake_run(tmp_path, "a1/d1", sleep=4, deps=("a1",), kind="defense")]

    def kill_the_worker_once():
        for _ in range(600):
            first = [e for e in events(tmp_path) if e["run"] == "a1/d1" and e["what"] == "start"]
            if first:
                worker = int(open(f"/proc/{first[0]['pid']}/stat").read().split(") ")[1].split()[1])
                os.kill(worker, signal.SIGKILL)  # the Ray worker running the task; the run dies with it
                deadline = time.time() + 2  # well before its 4 s sleep would end
                while alive(first[0]["pid"]) and time.time() < deadline:
                    time.sleep(0.02)
                return not alive(first[0]["pid"])
            time.sleep(0.05)

    killer = threading.Thread(target=lambda: killed.append(kill_the_worker_once()), daemon=True)
    killed: list = []
    killer.start()
    _, entries = by_ray(tmp_path, runs)
    killer.join()
    assert killed == [True]  # the killed worker's run did not outlive it
    mine = [e for e in entries if e["run"] == "a1/d1"]
    assert [e["status"] for e in mine] == ["running", "running", "done"] and mine[-1]["attempts"] == 2
    starts = [e for e in events(tmp_path) if e["run"] == "a1/d1" and e["what"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed"] is False  # its folder held nothing to resume


def test_ray_checks_that_every_node_sees_the_record_folder(ray_local, tmp_path, monkeypatch):
    from sau_plugin.bench import ray_exec

    ray_exec.check_shared_storage(ray_local, str(tmp_path / "rec"))  # one node: it sees it
    assert os.listdir(tmp_path / "rec") == []  # the token is gone
    monkeypatch.setattr(ray_local, "get", lambda refs, timeout=None: [("head", True), ("node-b", False)])
    with pytest.raises(ConfigError) as err:
        ray_exec.check_shared_storage(ray_local, str(tmp_path / "rec"))
    assert str(err.value) == (f"the record folder {tmp_path / 'rec'} is not visible on node(s) node-b: with "
                              f"--executor ray it must be on storage every node mounts at the same path (NFS, ...)")


def test_without_ray_the_executor_names_the_extra(monkeypatch):
    from sau_plugin.bench.ray_exec import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError) as err:
        import_ray()
    assert str(err.value) == ('--executor ray needs Ray, which is not installed: pip install -e ".[ray]" '
                              '(or pip install ray)')


def test_the_command_without_ray_says_so_before_writing_anything(tmp_path, monkeypatch, capsys):
    from sau_plugin.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "cpu_bench", "--executor", "ray", "--attacks", "badnet", "--defenses", "none"]) == 2
    assert capsys.readouterr().err == ('error: --executor ray needs Ray, which is not installed: '
                                       'pip install -e ".[ray]" (or pip install ray)\n')
    assert os.listdir(tmp_path) == []


def test_the_overhead_script_runs_its_grid_with_each_executor(capsys):
    module = load_bench_script("executor_overhead")
    assert module.main(["--runs", "10", "--workers", "2"]) == 0  # it asserts that every run ended done
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "10 no-op runs (2 attacks with 4 defenses each)"
    assert [line.split()[:2] for line in lines[2:]] == [["direct", "loop"], ["local", "1"], ["local", "2"]]


def test_a_run_that_cannot_start_fails_alone(tmp_path):
    runs = grid_of(tmp_path, {})
    runs[0] = runs[0].__class__(**{**runs[0].__dict__, "argv": ("/no/such/interpreter", "x")})
    grid, entries = local(tmp_path, runs)
    last = final(entries)
    assert last["a1"]["status"] == "failed" and last["a1"]["reason"].startswith("could not start: [Errno 2]")
    assert last["a1/d1"]["status"] == "blocked" and last["a2/d2"]["status"] == "done"


def test_the_progress_bar_counts_runs(tmp_path, capsys):
    runs = grid_of(tmp_path, {"a1": "fail"})
    (tmp_path / runs[3].marker).parent.mkdir(parents=True)
    (tmp_path / runs[3].marker).write_text("")  # a2 done earlier
    grid = Grid(runs, Ledger(str(tmp_path / "t.runs.jsonl")), progress=True)
    run_local(grid, 2)
    grid.close()
    err = capsys.readouterr().err
    assert "runs:  17%|" in err and "1/6 " in err  # the skipped run counts from the start
    assert "6/6 " in err and "done 3, running 0, failed 3, pending 0" in err.replace("\r", "\n").splitlines()[-1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_run_dies_with_the_executor_that_started_it(tmp_path):
    import pickle
    import subprocess

    run = fake_run(tmp_path, "a1", sleep=30)
    (tmp_path / "run.pickle").write_bytes(pickle.dumps(run))
    driver = subprocess.Popen([sys.executable, "-c", (
        "import os, pickle, sys, time\n"
        "from sau_plugin.bench.execute import launch\n"
        f"run = pickle.load(open({str(tmp_path / 'run.pickle')!r}, 'rb'))\n"
        "launch(run, run.argv, dict(os.environ))\n"
        "time.sleep(60)\n")])
    try:
        for _ in range(400):
            if events(tmp_path):
                break
            time.sleep(0.05)
        child = events(tmp_path)[0]["pid"]
        driver.kill()  # SIGKILL: no handler, no cleanup of its own
        driver.wait()
        deadline = time.time() + 5
        while alive(child) and time.time() < deadline:
            time.sleep(0.02)
        assert not alive(child)
    finally:
        driver.kill()
