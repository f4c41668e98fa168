"""README's Python example for process groups runs on 2 gloo processes and gives every process
the history of the single-process run (figures equal)."""

import copy
import re

import torch
import torch.multiprocessing as mp

from sau_plugin import SAUConfig, Unlearner, batches, evaluate_clean
from sau_plugin.run.distributed import free_port
from tests.distributed import workers
from tests.helpers import bb
from tests.helpers.synthetic import backdoored_task

README = bb.REPO / "README.md"


def test_the_process_group_example_runs_and_equals_one_process(tmp_path):
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)
    (example,) = [b for b in blocks if "DataParallel()" in b]
    model, (x_clean, y_clean), (x_test, y_test), _ = backdoored_task(n_train=300, n_poison=30, epochs=1)
    task = (model, x_clean[:40], y_clean[:40], x_test[:50], y_test[:50])
    out = tmp_path / "history"
    mp.spawn(workers.readme_example_main, args=(2, free_port(), example, task, str(out)), nprocs=2, join=True)
    histories = [[{k: v for k, v in row.items() if not k.startswith("time_")} for row in torch.load(f"{out}.{rank}")]
                 for rank in range(2)]
    assert histories[0] == histories[1] and len(histories[0]) == 5

    torch.set_num_threads(1)
    cfg = SAUConfig(device="cpu", amp=False, n_rounds=5)
    single = Unlearner(copy.deepcopy(model), model, cfg).fit(
        x_clean[:40], y_clean[:40], evaluate=lambda m: evaluate_clean(m, batches(x_test[:50], y_test[:50]))).history
    assert [r["test_acc"] for r in histories[0]] == [r["test_acc"] for r in single]
