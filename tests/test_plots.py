import torch

from pyro_deepgen import plots


def test_snr_against_k_one_panel_per_group_one_line_per_estimator(tmp_path):
    curves = {"IWAE": {"guide": [(1, 0.3), (5, 0.2)], "model": [(1, 1.0), (5, 2.0)]},
              "DReG": {"guide": [(1, 0.5), (5, 0.45)]}}
    fig = plots.snr_against_k(curves)
    guide, model = fig.axes[:2]
    assert guide.get_title() == "guide" and model.get_title() == "model"
    assert [line.get_label() for line in guide.get_lines()] == ["IWAE", "DReG"]
    assert list(guide.get_lines()[1].get_ydata()) == [0.5, 0.45]
    assert len(model.get_lines()) == 1
    plots.save_figure(fig, tmp_path / "snr.png")
    assert (tmp_path / "snr.png").stat().st_size > 0


def test_image_grid_and_manifold_tile_the_images():
    fig = plots.image_grid(torch.rand(6, 12), (3, 4), nrow=3)
    canvas = fig.axes[0].get_images()[0].get_array()
    assert canvas.shape == (2 * 4 + 1, 3 * 5 + 1)
    fig = plots.latent_manifold(lambda z: torch.sigmoid(z.sum(-1, keepdim=True)).expand(-1, 4), (2, 2), n=5)
    assert fig.axes[0].get_images()[0].get_array().shape == (5 * 3 + 1, 5 * 3 + 1)


def test_bound_curves_plot_the_bound_against_epoch_and_cumulative_seconds():
    hist = {"fast": [{"epoch": 1, "seconds": 2.0, "val_elbo": -120.0},
                     {"epoch": 2, "seconds": 2.0, "val_elbo": -110.0}],
            "slow": [{"epoch": 1, "seconds": 10.0, "val_elbo": -115.0}, {"epoch": 2, "seconds": 10.0}]}
    by_epoch, by_time = plots.bound_curves(hist).axes[:2]
    assert by_epoch.get_xscale() == "log" and by_time.get_xlabel() == "training seconds"
    fast, slow = by_time.get_lines()
    assert list(fast.get_xdata()) == [2.0, 4.0] and list(fast.get_ydata()) == [-120.0, -110.0]
    assert list(slow.get_xdata()) == [10.0]  # the record without a bound is left out
    assert [line.get_label() for line in by_epoch.get_lines()] == ["fast", "slow"]
