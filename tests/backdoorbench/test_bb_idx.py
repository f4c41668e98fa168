"""The one idx codec (MNIST's raw files), for the dataset reader and the demo: each bad input is
refused with its cause named. tests/helpers/bb.py keeps its own struct writer as an independent
encoder."""

import struct

import numpy as np
import pytest

from sau_plugin.backdoorbench.idx import IdxError, decode_idx, encode_idx

IMAGES = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)


def test_valid_arrays_round_trip_in_any_dimension():
    raw = encode_idx(IMAGES)
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert np.array_equal(decode_idx(raw, ndim=3), IMAGES)
    table = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert encode_idx(table)[:4] == b"\x00\x00\x08\x02"  # 2-d: its own magic, not the labels' one
    assert np.array_equal(decode_idx(encode_idx(table)), table)
    independent = struct.pack(">HBBI", 0, 8, 1, 3) + bytes([3, 1, 4])  # as tests/helpers/bb.py writes labels
    assert decode_idx(independent, ndim=1).tolist() == [3, 1, 4]


@pytest.mark.parametrize("data, ndim, cause", [
    (encode_idx(IMAGES) + b"\x00", None, r"header says \(2, 3, 4\) but holds 25 values"),
    (encode_idx(IMAGES)[:-1], None, r"header says \(2, 3, 4\) but holds 23 values"),
    (b"\x00\x00\x08\x03\x00\x00", None, r"truncated \(6 bytes\)"),
    (b"\x00\x00", None, r"truncated \(2 bytes\)"),
    (struct.pack(">HBBI", 0, 0x0D, 3, 0), None, r"not an idx ubyte file \(magic 0xd03\)"),
    (encode_idx(np.array([3, 1, 4], np.uint8)), 3, r"has 1 dimensions, expected 3"),  # labels where images belong
], ids=["trailing-byte", "byte-short", "short-header", "no-header", "float-dtype", "labels-as-images"])
def test_bad_input_is_refused_with_its_cause(data, ndim, cause):
    with pytest.raises(IdxError, match=cause):
        decode_idx(data, ndim=ndim)


def test_each_reader_names_the_cause_and_its_own_fix(tmp_path):
    from sau_plugin.backdoorbench.datasets import load_split
    from sau_plugin.demo import data
    from sau_plugin.errors import DatasetError

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte").write_bytes(encode_idx(np.array([3, 1, 4], np.uint8)))  # labels, not images
    (raw / "t10k-labels-idx1-ubyte").write_bytes(encode_idx(np.array([3, 1, 4], np.uint8)))
    with pytest.raises(DatasetError, match=r"is not a valid idx file \(has 1 dimensions, expected 3\); re-download it"):
        load_split("mnist", tmp_path, train=False)
    folder = data.raw_dir(tmp_path)
    folder.mkdir(parents=True)
    for name in data.FILES.values():
        (folder / name).write_bytes(encode_idx(IMAGES if "images" in name else np.zeros(2, np.uint8)))
    (folder / data.FILES["train", "labels"]).write_bytes(encode_idx(IMAGES))
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte: has 3 dimensions, expected 1; delete it and run "
                                           r"again"):
        data.read_mnist(tmp_path)
