#!/usr/bin/env python
"""Per-epoch cost of SAU: the plugin (fp32 and amp) against the reference's schedule.

Every mode runs on the same model, data and seed, each in its own subprocess so that
peak memory is measured per mode, and the script prints the figures side by side:

* ``reference``: the reference's pass structure (the literal re-statement of BackdoorBench's
  ``defense/sau.py`` in ``sau_plugin/testing/reference.py``, the one the equivalence test
  checks the package against): clean forwards of both models at every
  PGD step, parameter gradients in PGD, the clean subset and test sets decoded from
  PIL images through a DataLoader every epoch, three evaluation passes, no autocast.
* ``fp32``: the plugin with ``amp`` off. ``amp``: the plugin with ``amp`` on.

On CPU the plugin keeps freed activation memory in the heap (``cpu_heap_reuse``, see
``sau_plugin/runtime.py``); the reference runs with the default allocator, as
BackdoorBench does. ``--heap-reuse all`` gives the reference the same allocator setting
(so the ratio shows the pass structure alone), ``none`` takes it from the plugin.

Data: ``--synthetic`` (default) builds uint8 images of class prototypes with a patch
trigger and a randomly initialised model; ``--record_dir/--result_file`` uses a real
attack folder through the plugin's BackdoorBench reader. ``--bb-root`` also times
BackdoorBench's own ``defense/sau.py`` on that folder (see --help).

Example (CPU, the issue's setting):
    python bench_scripts/speed.py --epochs 3 --n_clean 500 --n_test 1000 --n_bd 900
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("reference", "fp32", "amp")


# ---------------------------------------------------------------------------------------------
# data: uint8 images (so that every mode starts from exactly the same pixels)
# ---------------------------------------------------------------------------------------------
def synthetic_data(args):
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(args.seed)
    k, h = args.num_classes, args.size
    protos = F.interpolate(torch.rand(k, 3, 4, 4, generator=g) * 2 - 1, size=(h, h), mode="bilinear", align_corners=False)

    def make(n):
        y = torch.randint(0, k, (n,), generator=g)
        x = (0.5 + 0.3 * protos[y] + 0.1 * torch.randn(n, 3, h, h, generator=g)).clamp(0, 1)
        return (x * 255).round().to(torch.uint8), y

    clean, y_clean = make(args.n_clean)
    test, y_test = make(args.n_test)
    train, y_train = make(args.n_train)
    poison = torch.nonzero(y_train != 0).squeeze(1)[: args.n_train // 10]  # 10% BadNets, target 0
    train[poison, :, -3:, -3:] = 255
    y_train[poison] = 0
    keep = torch.nonzero(y_test != 0).squeeze(1)
    bd = test[keep].clone()
    bd[:, :, -3:, -3:] = 255  # BadNets-style patch, target 0
    reps = -(-args.n_bd // len(keep))  # enough poisoned samples for --n_bd
    bd, y_orig = bd.repeat(reps, 1, 1, 1)[: args.n_bd], y_test[keep].repeat(reps)[: args.n_bd]
    mean, std = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
    return dict(clean=(clean, y_clean), test=(test, y_test), bd=(bd, torch.zeros_like(y_orig), y_orig),
                train=(train, y_train), mean=mean, std=std, model_name="preactresnet18", num_classes=k, state_dict=None)


def record_data(args):
    """A real attack folder, read exactly as ``sau-plugin defend`` reads it."""
    import torch

    from sau_plugin import SAUConfig
    from sau_plugin.run import load_inputs

    cfg = SAUConfig(device="cpu", result_file=args.result_file, record_dir=args.record_dir, dataset=args.dataset,
                    ratio=1.0, random_seed=args.seed, loader="standalone")
    inp = load_inputs(cfg)  # ratio 1: the whole clean training set, then the first n_clean of its seeded order
    mean, std = torch.tensor(inp.mean).view(1, -1, 1, 1), torch.tensor(inp.std).view(1, -1, 1, 1)
    clean = ((inp.clean[0] * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)  # back to the decoded pixels
    n = args.n_clean
    return dict(clean=(clean[:n], inp.clean[1][:n]), test=(inp.test[0][: args.n_test], inp.test[1][: args.n_test]),
                bd=tuple(t[: args.n_bd] for t in inp.bd_test), mean=inp.mean, std=inp.std,
                model_name=inp.record.model_name, num_classes=inp.record.num_classes,
                state_dict=inp.model.state_dict())


# ---------------------------------------------------------------------------------------------
# one mode, in a child process
# ---------------------------------------------------------------------------------------------
def run_mode(args) -> dict:
    import torch

    from sau_plugin import SAUConfig, create_model
    from sau_plugin import runtime
    from sau_plugin.safeload import load_weights_only
    from sau_plugin.models import infer_model_kwargs, load_weights

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = record_data(args) if args.result_file else synthetic_data(args)
    if args.weights and args.mode != "pretrain":  # the backdoored model pretrained once for all modes
        data["state_dict"] = load_weights_only(args.weights, what="--weights", fix="pretrain again")
    torch.manual_seed(args.seed)
    kwargs = infer_model_kwargs(data["model_name"], data["state_dict"]) if data["state_dict"] else {}
    model = create_model(data["model_name"], data["num_classes"], **kwargs)
    if data["state_dict"] is not None:
        load_weights(model, data["state_dict"])
    model_ref = create_model(data["model_name"], data["num_classes"], **kwargs)
    model_ref.load_state_dict(model.state_dict())
    model, model_ref = model.to(device).eval(), model_ref.to(device).eval()
    cfg = SAUConfig(device=args.device, amp=(args.mode == "amp"), batch_size=args.batch_size, n_rounds=args.epochs,
                    random_seed=args.seed, lr_scheduler="none", compile=args.compile)
    # the process-wide settings `defend` applies (the reference keeps the default allocator unless --heap-reuse all)
    heap = (args.mode == "reference" and args.heap_reuse == "all") or (args.mode in ("fp32", "amp")
                                                                      and args.heap_reuse != "none")
    notes = runtime.configure(device, cpu_heap_reuse=heap)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if args.mode == "pretrain":
        return {"mode": "pretrain", **pretrain(model, data, args, device)}
    runner = run_reference if args.mode == "reference" else run_plugin
    rows = runner(model, model_ref, data, cfg, device)
    out = {"mode": args.mode, "rows": rows, "device": str(device), "threads": args.threads,
           "allocator": notes.allocator}
    if device.type == "cuda":
        out["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    else:
        import resource
        out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def pretrain(model, data, args, device) -> dict:
    """Train a backdoored model on the synthetic poisoned split (so that unlearning starts
    from a real backdoor with calibrated BatchNorm, not from a random network)."""
    import torch
    import torch.nn.functional as F

    mean = torch.tensor(data["mean"]).view(1, -1, 1, 1).to(device)
    std = torch.tensor(data["std"]).view(1, -1, 1, 1).to(device)
    x, y = data["train"][0].to(device), data["train"][1].to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(args.seed)
    for _ in range(args.pretrain_epochs):
        model.train()
        for idx in torch.randperm(len(y), generator=g).to(device).split(128):
            opt.zero_grad()
            F.cross_entropy(model((x[idx].float() / 255 - mean) / std), y[idx]).backward()
            opt.step()
    model.eval()
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, args.weights)
    return {"weights": args.weights}


def _sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_plugin(model, model_ref, data, cfg, device):
    import torch

    from sau_plugin import Unlearner, batches, evaluate_backdoor, evaluate_clean

    mean = torch.tensor(data["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(data["std"]).view(1, -1, 1, 1)
    norm = lambda u8: ((u8.float() / 255 - mean) / std).to(device)
    u = Unlearner(model, model_ref, cfg, mean=data["mean"], std=data["std"])
    fmt = u.precision.format
    clean_test = (fmt(norm(data["test"][0])), data["test"][1].to(device))
    bd_test = (fmt(norm(data["bd"][0])), data["bd"][1].to(device), data["bd"][2].to(device))
    x, y = norm(data["clean"][0]), data["clean"][1]
    rows = []
    for _ in range(cfg.n_rounds):
        t0 = time.perf_counter()
        u.fit(x, y, epochs=u.epoch + 1)
        _sync(device)
        t1 = time.perf_counter()
        m = {**evaluate_clean(u.model, batches(*clean_test, batch_size=cfg.batch_size), u.precision),
             **evaluate_backdoor(u.model, batches(*bd_test, batch_size=cfg.batch_size), u.precision)}
        _sync(device)
        rows.append({"unlearn_s": t1 - t0, "eval_s": time.perf_counter() - t1, "precision": u.precision.note, **m})
    return rows


def run_reference(model, model_ref, data, cfg, device):
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from sau_plugin.testing import reference as ref

    mean = torch.tensor(data["mean"]).view(1, -1, 1, 1).to(device)
    std = torch.tensor(data["std"]).view(1, -1, 1, 1).to(device)
    mean_c, std_c = mean.view(-1, 1, 1).cpu(), std.view(-1, 1, 1).cpu()

    def pil(u8):  # the datasets hold PIL images, as BackdoorBench's do
        return [Image.fromarray(a.permute(1, 2, 0).numpy().squeeze()) for a in u8]

    class PILSet(torch.utils.data.Dataset):
        def __init__(self, images, *labels):
            self.images, self.labels = images, labels

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):  # ToTensor + Normalize, re-done every epoch
            a = torch.from_numpy(np.asarray(self.images[i], dtype=np.float32) / 255.0)
            a = a.unsqueeze(0) if a.dim() == 2 else a.permute(2, 0, 1)
            return ((a - mean_c) / std_c, *[int(lab[i]) for lab in self.labels])

    class SeededShuffle(torch.utils.data.Sampler):  # the same order as the plugin's loop
        def __init__(self, n, seed):
            self.n, self.g = n, torch.Generator().manual_seed(seed)

        def __len__(self):
            return self.n

        def __iter__(self):
            return iter(torch.randperm(self.n, generator=self.g).tolist())

    bs = cfg.batch_size
    train = torch.utils.data.DataLoader(PILSet(pil(data["clean"][0]), data["clean"][1]), batch_size=bs,
                                        sampler=SeededShuffle(len(data["clean"][1]), cfg.random_seed))
    clean_loader = torch.utils.data.DataLoader(PILSet(pil(data["test"][0]), data["test"][1]), batch_size=bs)
    bd_images = pil(data["bd"][0])
    bd_loader = torch.utils.data.DataLoader(PILSet(bd_images, data["bd"][1]), batch_size=bs)
    ra_loader = torch.utils.data.DataLoader(PILSet(bd_images, data["bd"][2]), batch_size=bs)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.adam_betas, weight_decay=cfg.wd, amsgrad=True)

    def test_pass(loader):
        correct = total = 0
        loss = 0.0
        with torch.no_grad():
            for x, t in loader:
                x, t = x.to(device), t.to(device)
                out = model(x)
                loss += float(F.cross_entropy(out, t))
                correct += int((out.argmax(1) == t).sum())
                total += t.shape[0]
        return correct / total, loss / len(loader)

    rows = []
    for _ in range(cfg.n_rounds):
        t0 = time.perf_counter()
        for x, y in train:
            x, y = x.to(device), y.to(device)
            pert, _ = ref.shared_pgd(model, model_ref, x, y, mean, std, beta_1=cfg.beta_1, beta_2=cfg.beta_2,
                                     bound=cfg.trigger_norm, norm_type=cfg.norm_type, step_size=cfg.adv_lr,
                                     num_steps=cfg.adv_steps, init_type=cfg.pgd_init)
            ref.outer_step(model, model_ref, opt, x, y, pert, mean, std, lmd_1=cfg.lmd_1, lmd_2=cfg.lmd_2,
                           lmd_3=cfg.lmd_3, num_classes=model_ref(x[:1]).shape[1])
        _sync(device)
        t1 = time.perf_counter()
        acc, closs = test_pass(clean_loader)
        asr, bdloss = test_pass(bd_loader)
        ra, raloss = test_pass(ra_loader)
        _sync(device)
        rows.append({"unlearn_s": t1 - t0, "eval_s": time.perf_counter() - t1, "precision": "fp32 (reference)",
                     "test_acc": acc, "test_asr": asr, "test_ra": ra, "clean_test_loss_avg_over_batch": closs})
    return rows


# ---------------------------------------------------------------------------------------------
# BackdoorBench's own defense/sau.py, timed from outside
# ---------------------------------------------------------------------------------------------
def run_backdoorbench(args) -> dict:
    """Wall time of BackdoorBench's script on the same folder (includes its start-up and
    data loading, so its per-epoch figure is an upper bound)."""
    import pandas as pd

    cmd = [args.bb_python, *([args.bb_wrapper] if args.bb_wrapper else []), "./defense/sau.py",
           "--result_file", args.result_file, "--yaml_path", f"./config/defense/sau/{args.bb_dataset}.yaml",
           "--dataset", args.bb_dataset, "--device", args.device, "--n_rounds", str(args.epochs),
           "--num_workers", "0", "--batch_size", str(args.batch_size), *args.bb_extra.split()]
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", OMP_NUM_THREADS=str(args.threads))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=args.bb_root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"mode": "backdoorbench", "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    df = pd.read_csv(Path(args.bb_root) / "record" / args.result_file / "defense" / "sau" / "sau_df.csv")
    last = df.iloc[-1]
    return {"mode": "backdoorbench", "wall_s": wall, "per_epoch_s": wall / args.epochs,
            "test_acc": float(last["test_acc"]), "test_asr": float(last["test_asr"]), "test_ra": float(last["test_ra"])}


# ---------------------------------------------------------------------------------------------
def summarise(results: list, bb: dict | None) -> str:
    lines = []
    by = {r["mode"]: r for r in results}
    base = by.get("reference")

    def per_epoch(r):
        # steady state: the first epoch (warm-up: cuDNN autotuning, caches) is shown apart
        rows = r["rows"][1:] or r["rows"]
        u = sum(x["unlearn_s"] for x in rows) / len(rows)
        e = sum(x["eval_s"] for x in rows) / len(rows)
        return u, e, u + e

    def ratio(t):  # speed-up over the reference schedule; "-" when it was not run
        return f"{per_epoch(base)[2] / t:.2f}x" if base else "-"

    head = (f"{'mode':<11}{'precision':<40}{'1st epoch s':>12}{'unlearn s/ep':>13}{'eval s/ep':>11}{'total s/ep':>12}"
            f"{'speed-up':>10}{'peak MB':>10}{'ACC':>8}{'ASR':>8}{'R-ACC':>8}")
    lines += [head, "-" * len(head)]
    for r in results:
        u, e, t = per_epoch(r)
        sp = ratio(t)
        last, first = r["rows"][-1], r["rows"][0]
        lines.append(f"{r['mode']:<11}{last['precision'][:39]:<40}{first['unlearn_s'] + first['eval_s']:>12.2f}"
                     f"{u:>13.2f}{e:>11.2f}{t:>12.2f}{sp:>10}{r['peak_mb']:>10.0f}"
                     f"{100 * last['test_acc']:>8.2f}{100 * last['test_asr']:>8.2f}{100 * last['test_ra']:>8.2f}")
    lines.append("s/ep columns: mean over the epochs after the first (all epochs if only one was run)")
    lines.append("allocator: " + "; ".join(f"{r['mode']} {r.get('allocator', '?')}" for r in results))
    if bb:
        if "error" in bb:
            lines.append(f"backdoorbench: failed: {bb['error']}")
        else:
            lines.append(f"{'bb sau.py':<11}{'(its own script, incl. start-up)':<40}{'':>12}{'':>13}{'':>11}{bb['per_epoch_s']:>12.2f}"
                         f"{ratio(bb['per_epoch_s']):>10}{'':>10}"
                         f"{100 * bb['test_acc']:>8.2f}{100 * bb['test_asr']:>8.2f}{100 * bb['test_ra']:>8.2f}")
    if base and "fp32" in by:
        d = {k: abs(by["fp32"]["rows"][-1][k] - base["rows"][-1][k]) for k in ("test_acc", "test_asr", "test_ra")}
        lines.append("fp32 vs reference, final |difference| (points): " + ", ".join(f"{k} {100 * v:.3f}" for k, v in d.items()))
    if "amp" in by and "fp32" in by:
        d = {k: abs(by["amp"]["rows"][-1][k] - by["fp32"]["rows"][-1][k]) for k in ("test_acc", "test_asr", "test_ra")}
        lines.append("amp vs fp32, final |difference| (points): " + ", ".join(f"{k} {100 * v:.3f}" for k, v in d.items()))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default=",".join(MODES), help="comma list of reference,fp32,amp")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--n_clean", type=int, default=500)
    p.add_argument("--n_test", type=int, default=1000)
    p.add_argument("--n_bd", type=int, default=900)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--num_classes", type=int, default=10)
    p.add_argument("--size", type=int, default=32, help="synthetic image side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile the plugin's models")
    p.add_argument("--heap-reuse", dest="heap_reuse", choices=("plugin", "all", "none"), default="plugin",
                   help="CPU allocator setting: plugin modes only (default, what users get), all modes, or none")
    p.add_argument("--record_dir", default="record")
    p.add_argument("--result_file", default=None, help="attack folder under --record_dir (default: synthetic data)")
    p.add_argument("--dataset", default="cifar10", help="dataset of --result_file")
    p.add_argument("--bb-root", dest="bb_root", default=None, help="a BackdoorBench checkout holding record/<result_file>")
    p.add_argument("--bb-python", dest="bb_python", default=sys.executable, help="python of BackdoorBench's environment")
    p.add_argument("--bb-wrapper", dest="bb_wrapper", default=None,
                   help="optional script run as `python WRAPPER ./defense/sau.py ...` (e.g. to bypass md5 checks)")
    p.add_argument("--bb-dataset", dest="bb_dataset", default="cifar10")
    p.add_argument("--bb-extra", dest="bb_extra", default="",
                   help="extra flags for defense/sau.py, e.g. '--ratio 0.125' for 500 of 4,000 clean samples")
    p.add_argument("--n_train", type=int, default=10000, help="synthetic poisoned training set for --pretrain_epochs")
    p.add_argument("--pretrain_epochs", type=int, default=0,
                   help="synthetic data: first train a backdoored model for this many epochs (once, shared by all modes)")
    p.add_argument("--weights", default=None, help=argparse.SUPPRESS)  # internal: pretrained weights file
    p.add_argument("--json", default=None, help="also write all figures to this JSON file")
    p.add_argument("--mode", default=None, help=argparse.SUPPRESS)  # internal: run one mode in this process
    args = p.parse_args(argv)

    if args.mode:
        print(json.dumps(run_mode(args)))
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        if mode not in MODES:
            p.error(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    passed = list(argv if argv is not None else sys.argv[1:])
    tmp = tempfile.TemporaryDirectory()
    if args.pretrain_epochs and not args.result_file:
        passed += ["--weights", str(Path(tmp.name) / "backdoored.pt")]
        modes = ["pretrain"] + modes
    results = []
    for mode in modes:
        print(f"[speed] running {mode} ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, "--mode", mode] + passed, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        if mode != "pretrain":
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    bb = run_backdoorbench(args) if args.bb_root and args.result_file else None
    data = args.result_file or (f"synthetic, backdoored model pretrained {args.pretrain_epochs} epochs"
                                if args.pretrain_epochs else "synthetic, random-init model")
    print(f"device: {results[0]['device']}{' (' + results[0].get('gpu', '') + ')' if results[0].get('gpu') else ''}, "
          f"threads: {args.threads}, epochs: {args.epochs}, clean samples: {args.n_clean}, test: {args.n_test} clean + "
          f"{args.n_bd} poisoned, batch {args.batch_size}, data: {data}")
    print(summarise(results, bb))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "backdoorbench": bb}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
