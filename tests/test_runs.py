"""Runs configured once: RunConfig, the models' declared run options and hooks, and a user's
model reaching every command from outside the package."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pyro_deepgen.models import RUN_OPTIONS, RunOption, register_model
from pyro_deepgen.runs import RunConfig, load_run_config

REPO = Path(__file__).resolve().parents[1]

USER_MODULE = textwrap.dedent('''
    """A user's model/guide pair, with a run option of its own ("width")."""
    import pyro
    import pyro.distributions as dist
    import torch
    from torch import nn

    from pyro_deepgen.models import RunOption, register_model


    class Pair(nn.Module):
        def __init__(self, x_dim, z_dim=2, width=8):
            super().__init__()
            self.z_dim = z_dim
            self.enc = nn.Linear(x_dim, 2 * z_dim)
            self.dec = nn.Sequential(nn.Linear(z_dim, width), nn.Tanh(), nn.Linear(width, x_dim))

        def model(self, x):
            pyro.module("user_dec", self.dec)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(torch.zeros(self.z_dim), 1.0).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

        def guide(self, x):
            pyro.module("user_enc", self.enc)
            loc, log_scale = self.enc(x).chunk(2, -1)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

        def decode(self, z):
            return torch.sigmoid(self.dec(z))

        def sample(self, n):
            return self.decode(torch.randn(n, self.z_dim))


    def make_pair(x_dim, z_dim=2, width=8):
        return Pair(x_dim, z_dim, width)


    def plain(x_dim, z_dim=2):  # registers nothing: its run options are its parameters
        return Pair(x_dim, z_dim)


    register_model("usermodels:make_pair", make_pair,
                   ("z_dim", RunOption("width", 8, "the decoder's hidden width", int)))
''')


def _cli(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(cwd), str(REPO)]), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pyro_deepgen", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_user_model_trains_evaluates_and_samples_through_the_cli(tmp_path):
    (tmp_path / "usermodels.py").write_text(USER_MODULE)
    r = _cli(tmp_path, "train", "--model", "usermodels:make_pair", "--width", "16", "--dataset", "digits",
             "--epochs", "1", "--out", "run", "--quiet")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta == {"model": "usermodels:make_pair", "config": {"x_dim": 64, "z_dim": 50, "width": 16}}
    assert json.loads((tmp_path / "run" / "run.json").read_text())["width"] == 16
    r = _cli(tmp_path, "evaluate", "run", "--num-samples", "10", "--limit", "20")
    assert r.returncode == 0 and "over 20 datapoints" in r.stdout, r.stderr
    r = _cli(tmp_path, "sample", "run", "--out", "s.png", "-n", "4")
    assert r.returncode == 0 and (tmp_path / "s.png").stat().st_size > 0, r.stderr
    # a factory that registers nothing takes the run options among its parameters
    r = _cli(tmp_path, "train", "--model", "usermodels:plain", "--z-dim", "2", "--dataset", "digits",
             "--epochs", "1", "--out", "plain", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "plain" / "model.json").read_text())["config"] == {"x_dim": 64, "z_dim": 2}
    r = _cli(tmp_path, "sample", "plain", "--out", "p.png", "-n", "4")
    assert r.returncode == 0 and (tmp_path / "p_manifold.png").exists(), r.stderr  # z_dim == 2
    r = _cli(tmp_path, "train", "--model", "usermodels:nothing", "--out", "x", "--quiet")
    assert r.returncode == 2 and "cannot import the model factory 'usermodels:nothing'" in r.stderr


def test_a_registered_run_option_is_a_flag_and_a_config_entry():
    from pyro_deepgen.cli import build_parser

    option = RunOption("test_width", 3, "a width for the test model", int)
    register_model("test-model-with-option", lambda x_dim, test_width=3: None, ("z_dim", option))
    try:
        args = build_parser().parse_args(["train", "--out", "x", "--model", "test-model-with-option",
                                          "--test-width", "7"])
        assert args.test_width == 7
        cfg = RunConfig(model="test-model-with-option", test_width=7)
        assert cfg.test_width == 7 and cfg.model_options() == {"z_dim": 50, "test_width": 7}
        with pytest.raises(ValueError, match="model 'vae' takes no test_width; models that do: --model "
                                             "test-model-with-option"):
            RunConfig(test_width=7)
    finally:
        from pyro_deepgen.models import MODELS
        MODELS.pop("test-model-with-option")
        RUN_OPTIONS.pop("test_width")


def test_run_config_round_trips_and_refuses_unknown_options(tmp_path):
    cfg = RunConfig(dataset="digits", model="vae", flow="planar", num_flows=2, z_dim=3, hidden=(8,))
    (tmp_path / "run.json").write_text(json.dumps(cfg.to_dict()))
    again = load_run_config(tmp_path)
    assert again == cfg and again.name == "elbo+planar-2" and again.hidden == (8,)
    assert RunConfig(flow="none") == RunConfig() and RunConfig(z_dim=50) == RunConfig()
    with pytest.raises(TypeError, match="RunConfig got unknown options \\['zdim'\\]"):
        RunConfig(zdim=3)


def test_runs_and_experiment_name_no_model():
    """The run layer knows models only by what they declare."""
    from pyro_deepgen.models import MODELS

    for path in [*sorted((REPO / "pyro_deepgen" / "runs").glob("*.py")), REPO / "pyro_deepgen" / "experiment.py"]:
        text = path.read_text()
        for name in MODELS:
            assert f'"{name}"' not in text and f"'{name}'" not in text, (path.name, name)
