"""Safe loading on every supported torch: torch's own ``weights_only`` with ``safe_globals``
(torch >= 2.5) and the restricted unpickler (older torch, e.g. BackdoorBench's 1.11; forced
here on new torch too). Both allow exactly the same globals, refuse every other one by
name without running it, and report each cause of a failure as what it is."""

from __future__ import annotations

import builtins
import collections
import os
import pickle
import shutil
import struct
import subprocess
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import bb
from sau_plugin import compat
from sau_plugin import safeload
from sau_plugin.safeload import allowed_global_names, safe_torch_load, torch_globals
from sau_plugin.safeload import allowlist, unpickler
from sau_plugin.cli import main
from sau_plugin.errors import CompatibilityError, ConfigError, RecordError, UnsafePickleError


class Calls:
    """Pickles as ``fn(*args)``: an unsafe load would make the call."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _content():
    png = Image.new("RGB", (3, 2), (1, 2, 3))
    return {"img": png, "gray": Image.new("L", (2, 2), 7), "arr": np.arange(4), "u8": np.zeros((2, 2), np.uint8),
            "f": np.float32(0.5), "t": torch.arange(3.0), "sd": torch.nn.Linear(2, 2).state_dict(),
            "od": collections.OrderedDict(a=1), "set": {1, 2}, "bytes": b"\x00\xff", "tuple": (1, "x", None),
            "param": torch.nn.Parameter(torch.ones(2))}


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, Image.Image):
        return isinstance(b, Image.Image) and a.mode == b.mode and a.size == b.size and a.tobytes() == b.tobytes()
    return a == b


def test_restricted_allowlist_is_exactly_torchs_own():
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
    except ImportError:
        pytest.skip(f"torch {torch.__version__} has no weights_only allowlist to compare with")
    assert set(torch_globals()) == set(_get_allowed_globals())
    extra = unpickler.restricted_allowlist(allowlist.attack_allowlist())
    assert set(extra) == set(_get_allowed_globals()) | set(allowed_global_names())


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_both_loaders_read_the_same_content(tmp_path, safe_loader, legacy):
    obj = _content()
    torch.save(obj, tmp_path / "x.pt", _use_new_zipfile_serialization=not legacy)
    back = safe_torch_load(tmp_path / "x.pt")
    assert _same(obj, back)
    assert isinstance(back["param"], torch.nn.Parameter)


def _raw_pickles(marker):
    """Hand-written pickles reaching a call through each opcode that resolves a global."""
    def text(value: str) -> bytes:  # BINUNICODE
        data = value.encode()
        return b"X" + struct.pack("<I", len(data)) + data

    cmd = text(f"touch {marker}")
    return {
        "GLOBAL": b"cos\nsystem\n" + cmd + b"\x85R.",
        "INST": b"(" + cmd + b"ios\nsystem\n.",
        "python-2 name": b"c__builtin__\neval\n" + text(f"open(r'{marker}', 'w')") + b"\x85R.",
        "STACK_GLOBAL": b"\x80\x04\x8c\x02os\x8c\x06system\x93" + cmd + b"\x85R.",
    }


def _expected_name(fn) -> str:
    return {"system": r"(posix|os|nt)\.system", "eval": r"builtins\.eval", "exec": r"builtins\.exec",
            "call": r"(subprocess|commands)\.call", "rmtree": r"shutil\.rmtree", "__import__": r"builtins\.__import__",
            "loads": r"_?pickle\.loads", "touch_marker": r"tests\.helpers\.bb\.touch_marker"}[fn.__name__]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_global_that_would_run_code_is_refused_by_name_and_never_runs(tmp_path, safe_loader, legacy):
    marker, victim = tmp_path / "pwned", tmp_path / "victim"
    victim.mkdir()
    calls = [Calls(os.system, f"touch {marker}"), Calls(builtins.eval, f"open(r'{marker}', 'w')"),
             Calls(builtins.exec, f"open(r'{marker}', 'w')"), Calls(subprocess.call, ["touch", str(marker)]),
             Calls(shutil.rmtree, str(victim)), Calls(builtins.__import__, "os"),
             Calls(pickle.loads, pickle.dumps(Calls(bb.touch_marker, str(marker)))),
             Calls(bb.touch_marker, str(marker))]
    for call in calls:
        # hidden among allowed content, so that the loader has built other objects before it
        torch.save({"ok": _content(), "x": [call]}, tmp_path / "bad.pt", _use_new_zipfile_serialization=not legacy)
        with pytest.raises(UnsafePickleError, match=_expected_name(call.fn) + ".* could run code; refused without "
                                                                             "running it"):
            safe_torch_load(tmp_path / "bad.pt")
        assert not marker.exists() and victim.is_dir(), call.fn.__name__
    # control: the same file loaded without the allowlist does run the call
    torch.save({"x": [calls[0]]}, tmp_path / "bad.pt", _use_new_zipfile_serialization=not legacy)
    safeload.load_trusted(tmp_path / "bad.pt")
    assert marker.exists()


def test_hand_written_pickles_are_refused_through_every_opcode(tmp_path, safe_loader):
    marker = tmp_path / "pwned"
    torch.save({"a": 1}, tmp_path / "valid.pt")
    for label, pkl in _raw_pickles(marker).items():
        bb.rewrite_pickle(tmp_path / "valid.pt", tmp_path / "bad.pt", lambda _: pkl)
        with pytest.raises(RecordError) as err:
            safe_torch_load(tmp_path / "bad.pt")
        assert not marker.exists(), label
        if label in ("GLOBAL", "python-2 name") or safe_loader == "restricted":  # torch's own unpickler knows
            # neither INST nor STACK_GLOBAL: a bad file to it
            assert isinstance(err.value, UnsafePickleError), label
            assert ("builtins.eval" if label == "python-2 name" else "system") in str(err.value), label


def test_a_torchscript_archive_is_refused_without_loading(tmp_path, safe_loader):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "ts.pt"))
    with pytest.raises(UnsafePickleError, match="TorchScript archive, which holds code; refused"):
        safe_torch_load(tmp_path / "ts.pt")


# ---- each cause of a failure says what it is ----------------------------------------------------------

def _saved(tmp_path):
    torch.save(_content(), tmp_path / "x.pt")
    return tmp_path / "x.pt"


def test_truncation_is_reported_as_a_damaged_file(tmp_path, safe_loader):
    raw = _saved(tmp_path).read_bytes()
    for cut in (0, 10, len(raw) // 2, len(raw) - 1):
        (tmp_path / "cut.pt").write_bytes(raw[:cut])
        with pytest.raises(RecordError, match="is truncated or corrupt .*; re-run the attack") as err:
            safe_torch_load(tmp_path / "cut.pt")
        assert not isinstance(err.value, CompatibilityError)


def test_a_damaged_pickle_is_reported_as_a_damaged_file(tmp_path, safe_loader):
    path = _saved(tmp_path)
    for label, mutate in (("cut short", lambda p: p[: len(p) // 2]), ("no STOP", lambda p: p[:-1]),
                          ("bad opcode", lambda p: p[:2] + b"\xff" + p[3:])):
        bb.rewrite_pickle(path, tmp_path / "bad.pt", mutate)
        with pytest.raises(RecordError, match="is truncated or corrupt") as err:
            safe_torch_load(tmp_path / "bad.pt")
        assert not isinstance(err.value, (CompatibilityError, UnsafePickleError)), label
    with zipfile.ZipFile(path) as z:  # a storage record missing from the zip: damage read by torch's reader
        names = [n for n in z.namelist() if "/data/" not in n]
        with zipfile.ZipFile(tmp_path / "nodata.pt", "w") as out:
            for n in names:
                out.writestr(n, z.read(n))
    with pytest.raises(RecordError, match="is truncated or corrupt") as err:
        safe_torch_load(tmp_path / "nodata.pt")
    assert not isinstance(err.value, CompatibilityError)


def _assert_installation_error(message: str, cause: str) -> None:
    assert "could not be loaded because of this installation, not because of the file" in message
    assert cause in message and f"torch {torch.__version__}" in message and "please report" in message
    assert "corrupt" not in message and "re-run the attack" not in message


def test_a_missing_torch_api_is_not_reported_as_a_corrupt_file(tmp_path, monkeypatch):
    """The failure of issue 13: safe_globals used on a torch that lacks it (here made to look present)."""
    path = _saved(tmp_path)
    monkeypatch.delattr(torch.serialization, "safe_globals", raising=False)
    monkeypatch.setattr(compat, "has_safe_globals", lambda: True)
    with pytest.raises(CompatibilityError) as err:
        safe_torch_load(path)
    _assert_installation_error(str(err.value), "AttributeError")
    assert "safe_globals" in str(err.value)


def test_a_failure_building_the_allowlist_is_not_reported_as_a_corrupt_file(tmp_path, monkeypatch, safe_loader):
    path = _saved(tmp_path)

    def broken():
        raise ImportError("No module named 'numpy._core'")

    monkeypatch.setattr(allowlist, "attack_allowlist", broken)
    with pytest.raises(CompatibilityError) as err:
        safe_torch_load(path)
    _assert_installation_error(str(err.value), "ImportError: No module named 'numpy._core'")


def test_an_unexpected_exception_inside_torch_load_is_not_reported_as_a_corrupt_file(tmp_path, monkeypatch,
                                                                                       safe_loader):
    path = _saved(tmp_path)

    def fails(*args, **kwargs):
        raise TypeError("load() got an unexpected keyword argument 'weights_only'")

    monkeypatch.setattr(torch, "load", fails)
    with pytest.raises(CompatibilityError) as err:
        safe_torch_load(path)
    _assert_installation_error(str(err.value), "TypeError: load() got an unexpected keyword argument")


def test_an_unreadable_file_says_so(tmp_path, monkeypatch, safe_loader):
    path = _saved(tmp_path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(RecordError, match=r"cannot be read \(PermissionError: .*Permission denied\); check the "
                                          r"file's permissions") as err:
        safe_torch_load(path)
    assert "corrupt" not in str(err.value)


def test_the_command_line_names_a_missing_api_in_one_line(tmp_path, capsys, monkeypatch):
    bb.make_record(tmp_path, "cifar10", on_disk=False)
    monkeypatch.delattr(torch.serialization, "safe_globals", raising=False)
    monkeypatch.setattr(compat, "has_safe_globals", lambda: True)
    capsys.readouterr()
    assert main(bb.cli_args(tmp_path, "cifar10")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: attack_result.pt at ")
    _assert_installation_error(err, "AttributeError")
    assert not (tmp_path / "record" / "attack" / "defense").exists()


# ---- the other APIs that differ between old and new torch ----------------------------------------------

def test_trusted_loading_works_on_this_torch(tmp_path):
    torch.save({"frac": __import__("fractions").Fraction(1, 3)}, tmp_path / "x.pt")
    assert safeload.load_trusted(tmp_path / "x.pt")["frac"] == __import__("fractions").Fraction(1, 3)
    with pytest.raises(UnsafePickleError, match="fractions.Fraction"):
        safeload.load_weights_only(tmp_path / "x.pt", "x.pt", "-")


def test_compile_is_refused_clearly_where_torch_lacks_it(monkeypatch):
    monkeypatch.delattr(torch, "compile", raising=False)
    assert not compat.has_compile()
    with pytest.raises(ConfigError, match=r"--compile needs torch.compile \(torch >= 2.0\); torch .* lacks it"):
        compat.require_compile()


def test_grad_scaler_falls_back_to_the_cuda_one(monkeypatch):
    made = []
    if getattr(torch, "amp", None) is not None:
        monkeypatch.delattr(torch.amp, "GradScaler", raising=False)
    monkeypatch.setattr(torch.cuda.amp, "GradScaler", lambda *a, **k: made.append(a) or "cuda scaler")
    assert compat.grad_scaler("cuda") == "cuda scaler" and made == [()]
    with pytest.raises(ConfigError, match="fp16 gradient scaling on 'cpu' needs torch.amp.GradScaler"):
        compat.grad_scaler("cpu")


# ---- one loader, an allowlist per kind of file ----------------------------------------------------------

def test_the_allowlist_is_per_kind_of_file(tmp_path, safe_loader):
    """An attack result may pickle numpy scalars; a defense_result.pt gets torch's own list only."""
    from sau_plugin.report.evaluate import load_defense_model

    content = {"model_name": "preactresnet18", "num_classes": 10, "model": {}, "pratio": np.float64(0.1)}
    torch.save(content, tmp_path / "x.pt")
    assert safe_torch_load(tmp_path / "x.pt")["pratio"] == 0.1  # attack_result.pt's allowlist
    with pytest.raises(UnsafePickleError, match=r"defense_result.pt at .* pickles global\(s\) numpy\S*\.scalar"):
        load_defense_model(tmp_path / "x.pt")


def test_a_cifar_batch_asking_for_code_is_refused_without_running_it(tmp_path, safe_loader):
    from sau_plugin.backdoorbench.datasets import load_split
    from sau_plugin.errors import DatasetError

    marker = tmp_path / "pwned"
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    batch = {"data": np.zeros((1, 3072), dtype=np.uint8), "labels": [Calls(os.system, f"touch {marker}")]}
    (base / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DatasetError, match=r"global (posix|os|nt)\.system is not allowed in a dataset file"):
        load_split("cifar10", tmp_path, train=False)
    assert not marker.exists()
    pickle.loads((base / "test_batch").read_bytes())  # control: a plain unpickler runs the call
    assert marker.exists()


def test_compat_only_detects_features():
    """compat is the lowest layer: it imports nothing of the package but its errors."""
    import ast

    tree = ast.parse(open(compat.__file__).read())
    names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert names == ["errors"], names
