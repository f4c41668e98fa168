"""Reading attack_result.pt: safe loading (exact allowlist, refusal without execution),
validation errors, both container modes, key handling and poisoned-image paths."""

import logging
import shutil
import zipfile
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import bb
from sau_plugin.backdoorbench.attack_result import PoisonedSplit, save_attack_result
from sau_plugin.backdoorbench.datasets import load_split
from sau_plugin.backdoorbench.record import (dataset_root, poisoned_test_set, read_attack_result,
                                             resolve_image_path)
from sau_plugin.models.weights import rename_by_position
from sau_plugin.safeload import allowed_global_names, load_trusted, safe_torch_load
from sau_plugin.errors import RecordError, UnsafePickleError



@pytest.mark.parametrize("on_disk", [False, True])
def test_both_container_modes_rebuild_the_poisoned_test_set(tmp_path, on_disk):
    attack, model = bb.make_record(tmp_path, "cifar10", on_disk=on_disk)
    rec = read_attack_result(attack)
    assert rec.model_name == "preactresnet18" and rec.num_classes == 10 and rec.img_size == (8, 8, 3)
    assert set(rec.state_dict) == set(model.state_dict())  # 'module.' stripped
    test = load_split("cifar10", dataset_root(tmp_path / "record", rec.data_path), train=False)
    bd = poisoned_test_set(rec, test, attack, tmp_path)
    expected = [i for i in range(len(test)) if test.labels[i] != bb.TARGET]
    assert bd.original_index.tolist() == expected  # target-class samples excluded, stored order
    assert (bd.bd_labels == bb.TARGET).all() and bd.orig_labels.tolist() == test.labels[expected].tolist()
    first = np.asarray(bd.load(0))
    assert (first[-3:, -3:] == 255).all()  # the trigger survived (PNG or in-file)
    assert np.array_equal(first[:-3], np.asarray(test.image(expected[0]))[:-3])


def test_allowlist_is_exactly_what_pil_and_numpy_pickles_need(tmp_path):
    names = allowed_global_names()
    assert "PIL.Image.Image" in names and "PIL.PngImagePlugin.PngImageFile" in names
    assert "numpy._core.multiarray._reconstruct" in names and "numpy.core.multiarray._reconstruct" in names
    assert not any(n.startswith(("os.", "builtins.", "subprocess", "posix")) for n in names)
    png = tmp_path / "a.png"
    Image.fromarray(np.full((3, 4, 3), 7, np.uint8)).save(png)
    opened = Image.open(png)
    opened.load()
    obj = {"img": Image.new("L", (5, 2), 3), "png": opened, "arr": np.arange(4), "u8": np.zeros((2, 2), np.uint8),
           "f": np.float32(0.5), "i": np.int64(3), "b": np.array([True])}
    torch.save(obj, tmp_path / "x.pt")
    back = safe_torch_load(tmp_path / "x.pt")
    assert np.array_equal(np.asarray(back["png"]), np.asarray(opened)) and back["png"].size == (4, 3)
    assert np.asarray(back["img"]).tolist() == [[3] * 5] * 2 and back["i"] == 3 and back["f"] == np.float32(0.5)
    assert back["arr"].tolist() == [0, 1, 2, 3] and back["u8"].dtype == np.uint8


def test_a_global_that_runs_code_is_refused_and_never_runs(tmp_path):
    attack, _ = bb.make_record(tmp_path, "cifar10", on_disk=False)
    marker = tmp_path / "pwned"
    bb.edit_attack_result(attack, payload=bb.RunsCode(marker))
    with pytest.raises(UnsafePickleError, match=r"(posix|os)\.system"):
        read_attack_result(attack)
    assert not marker.exists()


def test_legacy_non_zip_file_with_a_bad_global_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"x": bb.RunsCode(marker)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafePickleError, match="system"):
        safe_torch_load(tmp_path / "legacy.pt")
    assert not marker.exists()


def test_trust_pickle_loads_other_globals_with_a_warning(tmp_path, caplog):
    attack, _ = bb.make_record(tmp_path, "cifar10", on_disk=False)
    bb.edit_attack_result(attack, extra=Fraction(1, 3))
    with pytest.raises(UnsafePickleError, match="fractions.Fraction"):
        read_attack_result(attack)
    with caplog.at_level(logging.WARNING):
        rec = read_attack_result(attack, trust_pickle=True)
    assert rec.num_classes == 10 and "trust_pickle" in caplog.text


def test_image_size_that_disagrees_with_its_pixels_is_refused_before_allocating(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"img": Image.new("RGB", (2, 2))}, good)
    needle = b"K\x02K\x02\x86"  # BININT1 2, BININT1 2, TUPLE2: the size in the stored pickle
    bad = tmp_path / "bad.pt"
    # (60000, 60000) with BININT2: PIL's own __setstate__ would allocate ~10 GB before failing
    bb.rewrite_pickle(good, bad, lambda pkl: pkl.replace(needle, b"M`\xeaM`\xea\x86") if pkl.count(needle) == 1 else b"")
    with pytest.raises(RecordError, match="60000x60000"):
        safe_torch_load(bad)


def test_missing_folder_file_truncated_and_corrupt_files(tmp_path):
    with pytest.raises(RecordError, match="folder .* not found"):
        read_attack_result(tmp_path / "record" / "nope")
    attack, _ = bb.make_record(tmp_path, "cifar10", on_disk=False)
    raw = (attack / "attack_result.pt").read_bytes()
    (attack / "attack_result.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RecordError, match="truncated or corrupt"):
        read_attack_result(attack)
    (attack / "attack_result.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(RecordError, match="truncated or corrupt"):
        read_attack_result(attack)
    (attack / "attack_result.pt").unlink()
    with pytest.raises(RecordError, match="attack_result.pt not found"):
        read_attack_result(attack)


@pytest.mark.parametrize("change, message", [
    ({"bd_test": bb.DROP}, "missing key.*bd_test"),
    ({"model_name": 3}, "'model_name' must be"),
    ({"num_classes": "ten"}, "'num_classes' must be"),
    ({"model": [1, 2]}, "'model' must be"),
    ({"data_path": "./somewhere"}, "'data_path' must"),
    ({"img_size": [8, 8]}, "'img_size' must"),
    ({"clean_data": None}, "'clean_data' must"),
    ({"bd_test": {"bd_data_container": {}}}, "'bd_test' lacks"),
])
def test_missing_keys_and_wrong_types_name_the_field(tmp_path, change, message):
    attack, _ = bb.make_record(tmp_path, "cifar10", on_disk=False)
    bb.edit_attack_result(attack, **change)
    with pytest.raises(RecordError, match=message):
        read_attack_result(attack)


def test_labels_out_of_range_and_bad_indices(tmp_path):
    attack, _ = bb.make_record(tmp_path, "cifar10", on_disk=False)
    content = load_trusted(attack / "attack_result.pt")
    key = next(iter(content["bd_test"]["bd_data_container"]["data_dict"]))
    img, _, orig = content["bd_test"]["bd_data_container"]["data_dict"][key]
    content["bd_test"]["bd_data_container"]["data_dict"][key] = (img, 12, orig)
    torch.save(content, attack / "attack_result.pt")
    with pytest.raises(RecordError, match="bd_label 12 is not a class"):
        read_attack_result(attack)
    content["bd_test"]["bd_data_container"]["data_dict"][key] = (img, 0, orig)
    content["bd_test"]["original_index_array"] = np.array([10_000])
    torch.save(content, attack / "attack_result.pt")
    with pytest.raises(RecordError, match="indices outside"):
        read_attack_result(attack)


def test_rename_by_position_like_backdoorbench():
    sd = {"a.weight": torch.zeros(2), "a.bias": torch.ones(1)}
    assert list(rename_by_position(sd, ["x.weight", "x.bias"])) == ["x.weight", "x.bias"]
    assert rename_by_position(sd, ["x.weight"]) == sd  # counts differ: left for load_weights to report
    model_sd = {"x.weight": torch.zeros(2), "x.bias": torch.zeros(3)}  # names differ and one shape differs
    assert list(rename_by_position(sd, model_sd)) == ["a.weight", "a.bias"]  # unchanged: load_weights names a.*
    assert list(rename_by_position(sd, {"x.weight": torch.ones(2), "x.bias": torch.ones(1)})) == ["x.weight", "x.bias"]


def test_poisoned_png_paths_are_resolved_when_the_folder_moved(tmp_path):
    attack, _ = bb.make_record(tmp_path, "cifar10", on_disk=True)
    written = "./record/attack/bd_test_dataset/3/10.png"
    assert resolve_image_path(written, attack, tmp_path) == tmp_path / "record/attack/bd_test_dataset/3/10.png"
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(attack, moved)
    assert resolve_image_path(written, moved, tmp_path / "nowhere") == moved / "bd_test_dataset/3/10.png"
    with pytest.raises(RecordError, match="not found; tried .*nowhere"):
        resolve_image_path("./record/attack/bd_test_dataset/3/999.png", moved, tmp_path / "nowhere")


def test_in_file_mode_keeps_values_backdoorbench_writes_with_numpy_keys(tmp_path):
    """BackdoorBench's data_dict keys and labels are numpy integers, pickled as numpy scalars."""
    bb.write_cifar10(tmp_path / "data" / "cifar10")
    split = PoisonedSplit(30, [np.int64(1), np.int64(2)], [Image.new("RGB", (32, 32))] * 2,
                          [np.int64(0), np.int64(0)], [np.int64(4), np.int64(5)])
    save_attack_result(tmp_path / "record" / "a", model_name="preactresnet18", num_classes=10,
                       state_dict=bb.tiny_model("cifar10").state_dict(), data_path="./data/cifar10",
                       img_size=np.array([8, 8, 3]), clean_data="cifar10", bd_test=split)
    rec = read_attack_result(tmp_path / "record" / "a")
    assert [(e.index, e.bd_label, e.orig_label) for e in rec.bd_test] == [(1, 0, 4), (2, 0, 5)]


def test_file_written_under_numpy_1_loads(tmp_path):
    """BackdoorBench environments pin numpy < 2, whose pickles name numpy.core.multiarray."""
    torch.save({"arr": np.arange(5), "poison": np.zeros(3, np.int64)}, tmp_path / "np2.pt", pickle_protocol=2)
    bb.rewrite_pickle(tmp_path / "np2.pt", tmp_path / "np1.pt",
                   lambda data: data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    with zipfile.ZipFile(tmp_path / "np1.pt") as z:
        assert b"numpy.core.multiarray" in z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    back = safe_torch_load(tmp_path / "np1.pt")
    assert back["arr"].tolist() == [0, 1, 2, 3, 4] and back["poison"].dtype == np.int64
