import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from pyro_deepgen.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_train_evaluate_sample_on_digits(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--z-dim", "2", "--hidden", "32", "--epochs", "2",
                 "--out", str(run), "--quiet"]) == 0
    for name in ["run.json", "model.json", "model.pt", "checkpoint.pt", "history.json", "history.csv",
                 "best.pt"]:
        assert (run / name).exists(), name
    assert main(["evaluate", str(run), "--num-samples", "20", "--limit", "50"]) == 0
    out = capsys.readouterr().out
    assert "test log-likelihood (IWAE-20)" in out and "over 50 datapoints" in out
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["num_datapoints"] == 50 and ev["log_likelihood"] < 0 and ev["latent_dim"] == 2
    assert main(["sample", str(run), "--out", str(tmp_path / "s.png"), "-n", "16"]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert (tmp_path / "s_manifold.png").stat().st_size > 0  # z_dim == 2


def test_compiled_train_and_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--z-dim", "2", "--hidden", "16", "--epochs", "1",
                 "--objective", "iwae-3", "--compile", "fx", "--out", str(run), "--quiet"]) == 0
    history = json.loads((run / "history.json").read_text())
    assert history[-1]["compile_seconds"] > 0
    assert json.loads((run / "run.json").read_text())["compile"] == "fx"
    assert main(["evaluate", str(run), "--num-samples", "20", "--limit", "40"]) == 0  # the run's fx
    compiled = json.loads((run / "evaluation.json").read_text())["log_likelihood"]
    assert main(["evaluate", str(run), "--num-samples", "20", "--limit", "40", "--compile", "none"]) == 0
    general = json.loads((run / "evaluation.json").read_text())["log_likelihood"]
    assert compiled == pytest.approx(general, abs=1e-4)  # fx draws what the general path draws
    with pytest.raises(SystemExit):
        main(["train", "--compile", "jit", "--out", str(tmp_path / "x")])
    assert "invalid choice: 'jit'" in capsys.readouterr().err


def test_evaluate_with_ais_keeps_the_iwae_evaluation(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--z-dim", "2", "--hidden", "16", "--epochs", "1",
                 "--out", str(run), "--quiet"]) == 0
    assert main(["evaluate", str(run), "--num-samples", "200", "--limit", "20"]) == 0
    iwae = json.loads((run / "evaluation.json").read_text())
    assert main(["evaluate", str(run), "--method", "ais", "--ais-steps", "30", "--ais-chains", "4",
                 "--ais-leapfrog", "2", "--limit", "20"]) == 0
    out = capsys.readouterr().out
    assert "test log-likelihood (AIS, 30 steps x 4 chains, Monte Carlo SE" in out
    ev = json.loads((run / "evaluation_ais.json").read_text())
    assert ev["method"] == "ais" and ev["ais_steps"] == 30 and ev["ais_chains"] == 4
    assert ev["num_datapoints"] == 20 and 0 < ev["ais_accept_rate"] < 1
    assert abs(ev["log_likelihood"] - iwae["log_likelihood"]) < 1 + 4 * ev["ais_stderr"]
    assert json.loads((run / "evaluation.json").read_text()) == iwae  # left as it was
    assert (run / "log_likelihood_ais.pt").exists()
    assert main(["evaluate", str(run), "--method", "ais", "--ais-steps", "0"]) == 2
    assert "num_steps must be an integer >= 1" in capsys.readouterr().err


def test_compare_writes_table_json_and_plots(tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--dataset", "digits", "--objectives", "elbo,iwae-3", "--epochs", "2",
                 "--z-dim", "4", "--hidden", "32", "--num-samples", "10", "--out", str(out),
                 "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [r["objective"] for r in res["results"]] == ["elbo", "iwae-3"]
    for r in res["results"]:
        assert r["test_log_likelihood"] <= 0 and r["epochs"] == 2 and r["seconds_per_epoch"] > 0
        assert 0 <= r["active_units"] <= 4
        assert r["kl"] > 0 and 0 <= r["mutual_information"] <= math.log(360)  # 360 test digits
    md = (out / "results.md").read_text()
    assert "| run | test log p(x) | test ELBO | KL | active units | MI | epochs | s/epoch |" in md
    for f in ["curves.png", "kl_units.png", "samples_elbo.png", "samples_iwae-3.png"]:
        assert (out / f).stat().st_size > 0


def test_compare_puts_flow_guides_and_kl_schedules_side_by_side(tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--dataset", "digits", "--objectives", "elbo", "--flows", "none,planar",
                 "--num-flows", "2", "--epochs", "2", "--z-dim", "3", "--hidden", "16",
                 "--kl-warmup", "10", "--free-bits", "0.1", "--num-samples", "5", "--out", str(out),
                 "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    names = ["elbo+warmup-10+freebits-0.1", "elbo+planar-2+warmup-10+freebits-0.1"]
    assert [r["run"] for r in res["results"]] == names
    for name in names:
        history = json.loads((out / name / "history.json").read_text())
        assert [r["kl_weight"] for r in history] == [1.0, 1.0]  # 11 steps per epoch
        ev = json.loads((out / name / "evaluation.json").read_text())
        assert ev["kl"] == pytest.approx(sum(ev["kl_per_unit"]["z"]))
        assert len(ev["kl_per_unit"]["z"]) == (3 if "planar" not in name else 1)
    assert json.loads((out / names[1] / "model.json").read_text())["config"]["flow"] == "planar"
    assert "flow" not in json.loads((out / names[0] / "model.json").read_text())["config"]


@pytest.mark.parametrize("argv, message", [
    (["train", "--objective", "elbow", "--out", "x"], "unknown objective 'elbow'; valid: "),
    (["train", "--dataset", "cifar", "--out", "x"], "unknown dataset 'cifar'; valid: "),
    (["compare", "--objectives", "elbo,vimco"], "unknown objective 'vimco'"),
    (["train", "--flow", "glow", "--out", "x"], "unknown flow 'glow'; valid: none, planar, "),
    (["train", "--model", "sbn", "--flow", "iaf", "--out", "x"], "model 'sbn' takes no flow guide"),
    (["train", "--beta", "-1", "--out", "x"], "beta must be a finite number >= 0; got -1.0"),
    (["train", "--free-bits", "-0.5", "--out", "x"], "free bits must be a finite number of nats >= 0"),
    (["train", "--kl-warmup", "100000", "--epochs", "1", "--out", "w"],
     "the KL warm-up of 100000 steps does not fit in the run: 1 epochs of 11 steps make 11 steps"),
    (["evaluate", "no/such/run"], "is not a training run"),
])
def test_bad_names_list_the_valid_ones(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_data_leaves_no_run_behind(tmp_path, capsys, shared_data):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "mnist", "--data-root", str(shared_data), "--out", str(out),
                 "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and "--download" in err
    assert not (out / "run.json").exists()  # a retry with --download is not refused


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "pyro_deepgen", "--help"], capture_output=True, text=True,
                       cwd=REPO)
    assert r.returncode == 0 and "train" in r.stdout and "compare" in r.stdout
