import pytest
import torch

# One thread: the tests' tensors are tiny, and a second OpenMP thread only spins against the first
# (measured: the suite took about three times as long with two). Both sides of every bitwise comparison
# run with the same thread count.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=["torch", "restricted"])
def safe_loader(request, monkeypatch):
    """Each safe loading path of record.safe_torch_load: torch's own (weights_only with
    safe_globals, torch >= 2.5) and the restricted unpickler (older torch; forced here)."""
    from sau_plugin import compat

    if request.param == "torch" and not compat.has_safe_globals():
        pytest.skip(f"torch {torch.__version__} has no torch.serialization.safe_globals; the restricted unpickler "
                    f"is its only safe loader (tested under [restricted])")
    if request.param == "restricted":
        monkeypatch.setattr(compat, "has_safe_globals", lambda: False)
    return request.param
