"""``torchrun --nproc_per_node 2 -m sau_plugin defend --device cpu`` (gloo) on a generator
record: one set of BackdoorBench's files, the same as one process writes; a SIGKILL of the
whole job followed by ``--resume`` under torchrun ends where the uninterrupted job ends.

Batch 7 over 30 clean samples (7, 7, 7, 7, 2: slices 4 + 3 and 1 + 1) and 30 test samples
(5 evaluation batches: 3 on rank 0, 2 on rank 1).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sau_plugin.safeload import load_trusted, load_weights_only
from tests.helpers import bb
from tests.helpers.csv_exact import read_csv_exact

ENV = dict(os.environ, PYTHONPATH=str(bb.REPO), OMP_NUM_THREADS="1")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
FIGURES = ["test_acc", "test_asr", "test_ra"]


def defend_args(base: Path, name: str, *extra: str):
    return [*bb.cli_args(base, "cifar10", "--n_rounds", "2", "--batch_size", "7", "--defense_name", name), *extra]


def run(cmd, **kw):
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, **kw)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    base = tmp_path_factory.mktemp("torchrun")
    attack, _ = bb.make_record(base, "cifar10", on_disk=True)
    run([sys.executable, "-m", "sau_plugin", *defend_args(base, "single")])
    done = run([*TORCHRUN, "-m", "sau_plugin", *defend_args(base, "ddp")])
    return base, attack, done


def process_tree(pid: int):
    """``pid`` and its descendants (Linux /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return [pid] + [p for k in kids for p in process_tree(int(k))]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def outputs(attack: Path, name: str):
    out = attack / "defense" / name
    files = sorted("log/TIMESTAMP.log" if p.parent.name == "log" and p.suffix == ".log" else
                   str(p.relative_to(out)).replace(name, "NAME") for p in out.rglob("*") if p.is_file())
    weights = load_weights_only(out / "defense_result.pt", "defense_result.pt", "-")
    return out, files, weights


@pytest.mark.slow
def test_two_processes_write_one_set_of_the_files_one_process_writes(record):
    base, attack, done = record
    single, files_1, w1 = outputs(attack, "single")
    ddp, files_2, w2 = outputs(attack, "ddp")
    assert files_2 == files_1  # one log, one checkpoint, no per-rank copies
    assert len([f for f in files_2 if f.startswith("log/") and f.endswith(".log")]) == 1
    assert done.stdout.count("results in") == 1 and "error" not in done.stderr  # rank 0 reports, once
    df1, df2 = read_csv_exact(single / "single_df.csv", index_col=0), read_csv_exact(ddp / "ddp_df.csv", index_col=0)
    assert list(df2.columns) == list(df1.columns) and len(df2) == len(df1) == 2
    assert df2[FIGURES].equals(df1[FIGURES])
    for col in df1.columns:
        assert df2[col].astype(float).tolist() == pytest.approx(df1[col].astype(float).tolist(), rel=1e-5, abs=1e-6)
    assert (ddp / "log" / "index.txt").read_text() == (single / "log" / "index.txt").read_text()
    assert (w2["model_name"], w2["num_classes"]) == (w1["model_name"], w1["num_classes"])
    assert w2["model"].keys() == w1["model"].keys()
    for k, v in w1["model"].items():  # float32: gradients summed over ranks in another order
        torch.testing.assert_close(w2["model"][k], v, rtol=1e-4, atol=1e-6, msg=k)
    r1, r2 = (json.loads((d / "sau_result.json").read_text()) for d in (single, ddp))
    assert (r1["processes"], r2["processes"]) == (1, 2)
    assert r2["final"] == r1["final"] and r2["no_defense"] == r1["no_defense"]


@pytest.mark.slow
def test_sigkill_of_the_job_then_resume_under_torchrun_ends_where_the_uninterrupted_job_ends(record):
    base, attack, _ = record
    marker = base / "stalled"
    stall = [*TORCHRUN, str(Path(bb.__file__).with_name("stall.py")), "2", "2", str(marker)]
    proc = subprocess.Popen([*stall, *defend_args(base, "killed")], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the job never reached the kill point"
        time.sleep(0.05)
    job = process_tree(proc.pid)
    for pid in job:  # torchrun and its workers (started in sessions of their own), as a scheduler kills a job
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=60)
    while any(alive(pid) for pid in job[1:]):
        time.sleep(0.05)
    assert len(job) >= 3  # torchrun and two workers were killed
    proc.stderr.close()
    out = attack / "defense" / "killed"
    assert not (out / "defense_result.pt").exists()
    assert load_trusted(out / "checkpoint" / "last.pt")["unlearner"]["epoch"] == 1

    run([*TORCHRUN, "-m", "sau_plugin", *defend_args(base, "killed", "--resume")])
    _, files_k, wk = outputs(attack, "killed")
    ddp, files_d, wd = outputs(attack, "ddp")
    assert [f for f in files_k if not f.startswith("log/")] == [f for f in files_d if not f.startswith("log/")]
    for k, v in wd["model"].items():  # the same processes, reductions and order: bit for bit
        assert torch.equal(wk["model"][k], v), k
    assert read_csv_exact(out / "killed_df.csv", index_col=0).equals(read_csv_exact(ddp / "ddp_df.csv", index_col=0))


def _config(args):
    from sau_plugin import cli
    from sau_plugin.config.cli import config_from_args

    return config_from_args(cli.build_parser(args).parse_args(args))


@pytest.mark.slow
def test_the_plugin_starts_its_own_workers_as_for_device_cuda_0_1(record, monkeypatch):
    """The path ``--device cuda:0,1`` takes (one worker per listed device, here 2 on the CPU):
    the same files and weights as under torchrun, rank 0's outcome and model in the caller."""
    from sau_plugin.errors import RecordError
    from sau_plugin.run.defend import spawn_defense

    base, attack, _ = record
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    outcome = spawn_defense(_config(defend_args(base, "spawned")), 2, progress=False, log_level="info")
    _, files_s, ws = outputs(attack, "spawned")
    _, files_d, wd = outputs(attack, "ddp")
    assert files_s == files_d and outcome.output_dir == attack / "defense" / "spawned"
    for k, v in wd["model"].items():
        assert torch.equal(ws["model"][k], v), k
        assert torch.equal(outcome.model.state_dict()[k], v), k
    assert outcome.after == json.loads((attack / "defense" / "ddp" / "sau_result.json").read_text())["final"]

    bad = defend_args(base, "spawned_bad")
    bad[bad.index("--result_file") + 1] = "no_such_attack"
    with pytest.raises(RecordError, match="no_such_attack"):  # the workers' error, raised in the caller
        spawn_defense(_config(bad), 2, progress=False, log_level="info")


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_rank_after_the_same_batch_and_resume_finishes_the_run(record):
    base, attack, _ = record
    marker = base / "parked"
    stall = [*TORCHRUN, str(Path(bb.__file__).with_name("stall.py")), "--until-stop", "1", "2", str(marker)]
    proc = subprocess.Popen([*stall, *defend_args(base, "preempted")], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the job never reached batch 2"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to torchrun only: it passes the signal on to its workers
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode != 0
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: preempted by SIGTERM in epoch 1 of 2 after batch 2 of 5")
    out = attack / "defense" / "preempted"
    saved = load_trusted(out / "checkpoint" / "last.pt")["unlearner"]
    assert (saved["epoch"], saved["progress"]["next_batch"]) == (0, 2)  # the same batch on every rank
    assert not (out / "defense_result.pt").exists()

    run([*TORCHRUN, "-m", "sau_plugin", *defend_args(base, "preempted", "--resume")])
    _, _, wp = outputs(attack, "preempted")
    ddp, _, wd = outputs(attack, "ddp")
    for k, v in wd["model"].items():
        assert torch.equal(wp["model"][k], v), k
    assert read_csv_exact(out / "preempted_df.csv", index_col=0).equals(read_csv_exact(ddp / "ddp_df.csv", index_col=0))
