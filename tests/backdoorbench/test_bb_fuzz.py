"""Fuzzing the untrusted input: hundreds of mutated attack_result.pt files (truncations, byte
flips in the file and inside its pickle, wrong types per key, extra pickled globals that would
run code). Each must load correctly or raise the plugin's own error for a bad file: never
another exception, never a report blaming the installation, never a hang, never code
execution. Run through each safe loading path (torch's own, the restricted unpickler)."""

from __future__ import annotations

import builtins
import os
import pickle
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import bb
from sau_plugin.backdoorbench.attack_result import PoisonedSplit, split_state
from sau_plugin.backdoorbench.datasets import ImageSet
from sau_plugin.backdoorbench.record import REQUIRED_KEYS, poisoned_test_set, read_attack_result
from sau_plugin.errors import CompatibilityError, SAUError, UnsafePickleError

SPLIT = 10  # size of the (fake) clean test split
PER_CASE_S = 10  # a case taking longer counts as a hang


class Hang(Exception):
    pass


def _payload(tmp: Path, on_disk: bool) -> dict:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)) for _ in range(3)]
    split = PoisonedSplit(SPLIT, [np.int64(1), np.int64(4), np.int64(7)], images, [0, 0, 0], [2, 3, 1])
    folder = tmp / "record" / "attack" / "bd_test_dataset" if on_disk else None
    state = split_state(split, folder, "./record/attack/bd_test_dataset", subset_to_poisoned=True)
    return {"model_name": "preactresnet18", "num_classes": 4, "data_path": "./data/cifar10", "img_size": [4, 4, 3],
            "clean_data": "cifar10", "bd_train": None, "bd_test": state,
            "model": {"module.conv1.weight": torch.randn(2, 3, 3, 3), "module.linear.bias": torch.zeros(4)}}


def _clean_test() -> ImageSet:
    return ImageSet(np.zeros(SPLIT, dtype=np.int64), lambda i: Image.new("RGB", (4, 4)), "fake clean test")


def _attempt(base: Path, attack: Path) -> str:
    """'ok' or 'error'; anything else (another exception, a hang, a damaged file reported
    as an installation problem) fails the test."""
    def on_alarm(*_):
        raise Hang()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, PER_CASE_S)
    try:
        rec = read_attack_result(attack)
        bd = poisoned_test_set(rec, _clean_test(), attack, base)
        [bd.load(i) for i in range(len(bd))]
        return "ok"
    except CompatibilityError as exc:
        return f"blamed the installation: {exc}"
    except SAUError:
        return "error"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Calls:
    """Pickles as ``fn(*args)``: loading it unsafely would run the call."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _wrong_values():
    return [None, 7, "x", 2.5, [], {}, (1,), torch.zeros(3), np.zeros(3), Image.new("L", (1, 1)), {"a": 1}]


def _type_mutations(payload: dict):
    for key in REQUIRED_KEYS:
        for v in _wrong_values():
            yield f"{key}={type(v).__name__}", {**payload, key: v}
    state = payload["bd_test"]
    dd = state["bd_data_container"]["data_dict"]
    first = next(iter(dd))
    for sub in ("bd_data_container", "original_index_array", "poison_indicator"):
        for v in _wrong_values():
            yield f"bd_test.{sub}", {**payload, "bd_test": {**state, sub: v}}
    for v in _wrong_values() + [(Image.new("RGB", (4, 4)), 99, 1), (Image.new("RGB", (4, 4)), -1, 0),
                                {"path": 3, "other_info": [0, 1]}, {"path": "../../etc/passwd", "other_info": [0, 1]},
                                {"path": "./record/attack/x.png", "other_info": ["a", 1]}]:
        container = {**state["bd_data_container"], "data_dict": {**dd, first: v}}
        yield f"data_dict value {type(v).__name__}", {**payload, "bd_test": {**state, "bd_data_container": container}}
    for v in (np.array([0, 1, 2.5]), np.array([[1]]), np.array([-1]), np.array([SPLIT + 5]), np.array(["a"])):
        yield "original_index_array values", {**payload, "bd_test": {**state, "original_index_array": v}}
    yield "poison_indicator 2s", {**payload, "bd_test": {**state, "poison_indicator": np.full(SPLIT, 2)}}
    yield "not a dict", [payload]


def _global_mutations(payload: dict, tmp: Path):
    marker = tmp / "pwned"
    victim = tmp / "victim"
    calls = [Calls(os.system, f"touch {marker}"), Calls(builtins.eval, f"open(r'{marker}', 'w')"),
             Calls(builtins.exec, f"open(r'{marker}', 'w')"), Calls(subprocess.call, ["touch", str(marker)]),
             Calls(shutil.rmtree, str(victim)), Calls(bb.touch_marker, str(marker)), Calls(os.rmdir, str(victim)),
             Calls(builtins.__import__, "os"), Calls(pickle.loads, pickle.dumps(Calls(bb.touch_marker, str(marker)))),
             Calls(Path.write_text, marker, "x")]
    for call in calls:
        name = getattr(call.fn, "__name__", "fn")
        yield f"top-level {name}", {**payload, "extra": call}
        yield f"in model {name}", {**payload, "model": {**payload["model"], "x": call}}
        state = payload["bd_test"]
        dd = dict(state["bd_data_container"]["data_dict"])
        dd[next(iter(dd))] = (call, 0, 1)
        yield f"in data_dict {name}", {**payload, "bd_test": {**state, "bd_data_container": {
            **state["bd_data_container"], "data_dict": dd}}}


def _flip(data: bytes, rng, n: int) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        i = int(rng.integers(0, len(b)))
        b[i] ^= int(rng.integers(1, 256))
    return bytes(b)


@pytest.mark.parametrize("on_disk", [False, True])
def test_mutated_attack_results_load_or_raise_the_plugins_error(tmp_path, on_disk, safe_loader):
    base = tmp_path
    attack = base / "record" / "attack"
    payload = _payload(base, on_disk)
    valid = tmp_path / "valid.pt"
    torch.save(payload, valid)
    raw = valid.read_bytes()
    (tmp_path / "victim").mkdir()
    rng = np.random.default_rng(1 if on_disk else 2)
    attack.mkdir(parents=True, exist_ok=True)
    target = attack / "attack_result.pt"
    outcomes = {"ok": 0, "error": 0}
    n = 0

    def check(label: str, expect: str | None = None, unsafe: bool = False):
        nonlocal n
        try:
            got = _attempt(base, attack)
        except Hang:
            pytest.fail(f"{label}: no answer within {PER_CASE_S}s")
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{label}: unhandled {exc.__class__.__name__}: {exc}")
        assert got in ("ok", "error"), f"{label}: {got}"
        if expect:
            assert got == expect, label
        if unsafe:
            with pytest.raises(UnsafePickleError):
                read_attack_result(attack)
        assert not (tmp_path / "pwned").exists(), f"{label}: pickled code ran"
        assert (tmp_path / "victim").is_dir(), f"{label}: pickled code ran"
        outcomes[got] += 1
        n += 1

    target.write_bytes(raw)
    check("the valid file", expect="ok")
    for cut in sorted(set(rng.integers(0, len(raw), 40).tolist()) | {0, 1, len(raw) - 1}):
        target.write_bytes(raw[:cut])
        check(f"truncated at {cut}", expect="error")
    for i in range(30):
        target.write_bytes(_flip(raw, rng, int(rng.integers(1, 4))))
        check(f"raw flip {i}")
    for i in range(70):  # inside the pickle, re-zipped so the unpickler sees the damage
        k = int(rng.integers(1, 4))
        bb.rewrite_pickle(valid, target, lambda pkl: _flip(pkl, rng, k))
        check(f"pickle flip {i}")
    for i in range(20):
        cut = int(rng.integers(0, 400))
        bb.rewrite_pickle(valid, target, lambda pkl: pkl[:cut] + pkl[cut + int(rng.integers(1, 20)):])
        check(f"pickle deletion {i}")
        bb.rewrite_pickle(valid, target, lambda pkl: pkl[:cut] + bytes(rng.integers(0, 256, 8, dtype=np.uint8)) + pkl[cut:])
        check(f"pickle insertion {i}")
    for label, content in _type_mutations(payload):
        torch.save(content, target)
        check(f"wrong type {label}")
    for label, content in _global_mutations(payload, tmp_path):
        torch.save(content, target)
        check(f"global {label}", expect="error", unsafe=True)
    assert n >= 200 and outcomes["ok"] >= 1 and outcomes["error"] >= 150, (n, outcomes)
