"""DataParallel's pieces that need no process group: slices, evaluation shares, refusals."""

import pytest
import torch

from sau_plugin import ConfigError
from sau_plugin.core import DataParallel


def _rank(rank: int, world: int) -> DataParallel:
    p = DataParallel.__new__(DataParallel)  # the arithmetic only; no group
    p.rank, p.world_size, p.group = rank, world, None
    return p


@pytest.mark.parametrize("n, world", [(8, 2), (7, 3), (1, 2), (5, 4)])
def test_slices_of_a_global_batch_are_contiguous_and_cover_it_once(n, world):
    batch = torch.arange(100, 100 + n)
    parts = [_rank(r, world).shard(batch) for r in range(world)]
    assert torch.equal(torch.cat(parts), batch)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)  # the first ranks take the remainder


@pytest.mark.parametrize("n, size, world", [(23, 6, 2), (5, 6, 3), (24, 6, 4)])
def test_evaluation_shares_are_whole_batches_each_on_one_rank(n, size, world):
    starts = [list(_rank(r, world).batch_starts(n, size)) for r in range(world)]
    assert sorted(s for share in starts for s in share) == list(range(0, n, size))


def test_without_a_process_group_it_says_what_to_do():
    with pytest.raises(ConfigError, match="init_process_group"):
        DataParallel()


def test_a_split_run_refuses_random_init_and_names_the_fix():
    from sau_plugin import SAUConfig

    with pytest.raises(ConfigError, match="pgd_init 'random' is not supported across processes"):
        _rank(0, 2).check_run(SAUConfig(device="cpu", pgd_init="random"), 10)


def test_an_empty_slice_is_refused_only_where_torch_cannot_run_it(monkeypatch):
    from sau_plugin import SAUConfig
    from sau_plugin.core import parallel

    cfg = SAUConfig(device="cpu", batch_size=8)
    monkeypatch.setattr(parallel, "empty_batches_run", lambda: False)
    with pytest.raises(ConfigError, match="17 % batch_size is 0 or at least 2"):
        _rank(0, 2).check_run(cfg, 17)  # 8, 8, 1
    _rank(0, 2).check_run(cfg, 18)  # 8, 8, 2: every rank has a sample
    monkeypatch.setattr(parallel, "empty_batches_run", lambda: True)
    _rank(0, 2).check_run(cfg, 17)
