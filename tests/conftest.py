import os
import sys

import pytest
import torch

# Tests are CPU-only and must not fight over the cores with each other's threads.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
sys.path.insert(0, os.path.dirname(__file__))  # for tests/reference_sau.py


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
