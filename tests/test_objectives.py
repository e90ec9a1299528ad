"""Every objective against exact answers.

Gradients are averaged over independent datapoints (copies of one x in the
data plate) and over repeated draws; tolerances are 4 standard errors of that
average, with a fixed seed.
"""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI
from torch import nn

from linear_gaussian import LinearGaussian
from pyro_deepgen.infer import IWAE, NVIL, RWS, STL, VIMCO, Reinforce, WakeSleep

# ---------------------------------------------------------------- linear-Gaussian


def _lg(x_n=1, shift=0.4):
    return LinearGaussian(x_dim=3, z_dim=2).shift_guide(c=shift, log_s=0.2)


def exact_elbo_grads(lg, x):
    """Closed-form ELBO of the linear-Gaussian pair, differentiated by autograd."""
    W, b, A, c, s = lg.W, lg.b, lg.A, lg.c, lg.log_s.exp()
    m = x @ A.T + c                      # (n, z)
    var = s**2
    s2 = lg.sigma**2
    r = x - m @ W.T - b                  # residual at the mean
    e_log_lik = (-0.5 * (r**2).sum(-1) - 0.5 * (W**2 * var).sum() ) / s2 \
        - 0.5 * lg.x_dim * math.log(2 * math.pi * s2)
    kl = 0.5 * (var.sum() + (m**2).sum(-1) - lg.z_dim - torch.log(var).sum())
    elbo = (e_log_lik - kl).sum()
    params = [lg.W, lg.b, lg.A, lg.c, lg.log_s]
    return dict(zip(["W", "b", "A", "c", "log_s"], torch.autograd.grad(elbo, params)))


def mc_grads(loss, lg, x, reps):
    names = ["W", "b", "A", "c", "log_s"]
    params = [lg.W, lg.b, lg.A, lg.c, lg.log_s]
    draws = {n: [] for n in names}
    for _ in range(reps):
        pyro.clear_param_store()
        for p in params:
            p.grad = None
        loss.loss_and_grads(lg.model, lg.guide, x)
        for n, p in zip(names, params):
            draws[n].append(-p.grad.clone())
    return {n: torch.stack(v) for n, v in draws.items()}


def assert_unbiased(draws, exact, sigmas=4.0):
    for name, d in draws.items():
        mean, se = d.mean(0), d.std(0) / math.sqrt(d.shape[0])
        bad = (mean - exact[name]).abs() > sigmas * se + 1e-9
        assert not bad.any(), f"{name}: mean {mean[bad]}, exact {exact[name][bad]}, se {se[bad]}"


def test_elbo_closed_form_is_right():
    """The closed form against a large Monte Carlo average of Pyro's Trace_ELBO."""
    from pyro.infer import Trace_ELBO
    lg = _lg()
    x = lg.sample_x(2)
    mc = -Trace_ELBO(num_particles=20000, vectorize_particles=True, max_plate_nesting=1).loss(
        lg.model, lg.guide, x)
    m = x @ lg.A.T + lg.c
    var = lg.log_s.exp() ** 2
    r = x - m @ lg.W.T - lg.b
    closed = ((-0.5 * (r**2).sum(-1) - 0.5 * (lg.W**2 * var).sum()) / lg.sigma**2
              - 1.5 * math.log(2 * math.pi * lg.sigma**2)
              - 0.5 * (var.sum() + (m**2).sum(-1) - 2 - torch.log(var).sum())).sum().item()
    assert abs(mc - closed) < 0.05


@pytest.mark.parametrize("make", [
    lambda: Reinforce(baseline="none"),
    lambda: Reinforce(baseline="average"),
    lambda: Reinforce(baseline="nn"),
    lambda: NVIL(normalize=False),
    lambda: STL(),
    lambda: STL(num_particles=3),
], ids=["reinforce-none", "reinforce-average", "reinforce-nn", "nvil", "stl", "stl-3"])
def test_elbo_estimators_unbiased_on_linear_gaussian(make):
    lg = _lg()
    x = lg.sample_x(1).expand(500, 3)
    loss = make()
    # warm the running baselines up on other draws first (they must stay unbiased)
    for _ in range(5):
        pyro.clear_param_store()
        loss.loss_and_grads(lg.model, lg.guide, x)
    draws = mc_grads(loss, lg, x, reps=60)
    assert_unbiased(draws, exact_elbo_grads(lg, x))


def test_stl_has_zero_variance_at_the_exact_posterior():
    lg = LinearGaussian(x_dim=3, z_dim=2)  # guide == exact posterior
    x = lg.sample_x(4)
    draws = mc_grads(STL(), lg, x, reps=10)
    for name in ["A", "c", "log_s"]:
        assert draws[name].abs().max() < 1e-10, name
    # whereas Pyro's Trace_ELBO keeps the score term and varies
    from pyro.infer import Trace_ELBO
    pyro_draws = mc_grads(Trace_ELBO(), lg, x, reps=10)
    assert pyro_draws["log_s"].std(0).max() > 0.1


def test_iwae_dreg_agrees_with_standard_in_expectation():
    lg = _lg(shift=0.8)
    x = lg.sample_x(1).expand(400, 3)
    std = mc_grads(IWAE(5), lg, x, reps=60)
    dreg = mc_grads(IWAE(5, gradient="dreg"), lg, x, reps=60)
    for name in std:
        a, b = std[name], dreg[name]
        se = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()
        assert ((a.mean(0) - b.mean(0)).abs() <= 4 * se + 1e-9).all(), name
    # and DReG has the lower guide-gradient variance
    assert dreg["log_s"].var(0).sum() < std["log_s"].var(0).sum()


# ---------------------------------------------------------------- discrete latents

W = torch.tensor([1.0, -2.0, 0.5])
PRIOR = torch.tensor([0.3, -0.4, 0.2])
PHI0 = torch.tensor([0.1, 0.5, -0.3])


def discrete_model(x):
    with pyro.plate("data", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Bernoulli(logits=PRIOR).to_event(1))
        pyro.sample("x", dist.Normal(z @ W, 1.0), obs=x)


def discrete_guide(x):
    phi = pyro.param("phi", PHI0.clone())
    with pyro.plate("data", x.shape[0], dim=-1):
        pyro.sample("z", dist.Bernoulli(logits=phi.expand(x.shape[0], 3)).to_event(1))


STATES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))


def exact_discrete_grad(x0, k):
    """d/dphi of E[log mean_i w_i] over all k-tuples (k=1: the ELBO)."""
    phi = PHI0.clone().requires_grad_()
    log_q = dist.Bernoulli(logits=phi).to_event(1).log_prob(STATES)
    log_w = (dist.Bernoulli(logits=PRIOR).to_event(1).log_prob(STATES)
             + dist.Normal(STATES @ W, 1.0).log_prob(torch.tensor(x0)) - log_q)
    idx = torch.tensor(list(itertools.product(range(8), repeat=k)))
    total = (log_q[idx].sum(-1).exp() * (torch.logsumexp(log_w[idx], -1) - math.log(k))).sum()
    return torch.autograd.grad(total, phi)[0]


def discrete_draws(loss, reps=40, n=3000):
    x = torch.full((n,), 0.7)
    out = []
    for _ in range(reps):
        pyro.clear_param_store()
        loss.loss_and_grads(discrete_model, discrete_guide, x)
        out.append(-pyro.param("phi").unconstrained().grad / n)
    return torch.stack(out)


@pytest.mark.parametrize("make, k", [
    (lambda: Reinforce(baseline="none"), 1),
    (lambda: Reinforce(baseline="average"), 1),
    (lambda: NVIL(normalize=False), 1),
    (lambda: VIMCO(2), 2),
    (lambda: VIMCO(3), 3),
    (lambda: IWAE(3), 3),
], ids=["reinforce-none", "reinforce-average", "nvil", "vimco-2", "vimco-3", "iwae-3"])
def test_discrete_estimators_unbiased(make, k):
    loss = make()
    discrete_draws(loss, reps=3)  # warm up running baselines
    g = discrete_draws(loss)
    exact = exact_discrete_grad(0.7, k)
    mean, se = g.mean(0), g.std(0) / math.sqrt(g.shape[0])
    assert ((mean - exact).abs() < 4 * se).all(), (mean, exact, se)


def test_vimco_reduces_variance_against_plain_iwae():
    v = discrete_draws(VIMCO(3), reps=30)
    i = discrete_draws(IWAE(3), reps=30)
    assert v.var(0).sum() < i.var(0).sum()


def test_loss_evaluation_leaves_running_baselines_alone():
    loss = NVIL()
    discrete_draws(loss, reps=3)
    state = loss.get_state()
    loss.loss(discrete_model, discrete_guide, torch.full((50,), 0.7))
    assert loss.get_state() == state


def test_nvil_normalizes_by_running_std():
    loss = NVIL(normalize=True)
    discrete_draws(loss, reps=5)
    assert loss._var > 0


def test_mixed_discrete_and_continuous_sites():
    """One Bernoulli and one Normal latent: the ELBO gradient (score function for
    the Bernoulli, pathwise for the Normal in IWAE(1)) against the closed form."""
    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            b = pyro.sample("b", dist.Bernoulli(0.4))
            u = pyro.sample("u", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(u + 2 * b, 0.8), obs=x)

    def guide(x):
        phi = pyro.param("phi", torch.tensor(0.2))
        m = pyro.param("m", torch.tensor(0.3))
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("b", dist.Bernoulli(logits=phi.expand(x.shape[0])))
            pyro.sample("u", dist.Normal(m.expand(x.shape[0]), 0.9))

    def exact_elbo_grad():
        # E_q[log p - log q], enumerating b and integrating u in closed form
        phi = torch.tensor(0.2, requires_grad=True)
        m = torch.tensor(0.3, requires_grad=True)
        x0, s_u, s_x = 0.7, 0.9, 0.8
        total = 0.0
        for bv in (0.0, 1.0):
            qb = torch.sigmoid(phi) if bv else 1 - torch.sigmoid(phi)
            log_pb = math.log(0.4 if bv else 0.6)
            e_log_pu = -0.5 * (m**2 + s_u**2) - 0.5 * math.log(2 * math.pi)
            e_log_px = -0.5 * ((x0 - m - 2 * bv) ** 2 + s_u**2) / s_x**2 - 0.5 * math.log(2 * math.pi * s_x**2)
            ent_u = 0.5 * math.log(2 * math.pi * math.e * s_u**2)
            total = total + qb * (log_pb - torch.log(qb) + e_log_pu + e_log_px + ent_u)
        return torch.stack(torch.autograd.grad(total, [phi, m]))

    n = 3000
    x = torch.full((n,), 0.7)
    exact = exact_elbo_grad()
    for loss in (Reinforce(baseline="none"), IWAE(1)):
        draws = []
        for _ in range(40):
            pyro.clear_param_store()
            loss.loss_and_grads(model, guide, x)
            draws.append(torch.stack([-pyro.param("phi").unconstrained().grad / n,
                                      -pyro.param("m").unconstrained().grad / n]))
        g = torch.stack(draws)
        mean, se = g.mean(0), g.std(0) / math.sqrt(g.shape[0])
        assert ((mean - exact).abs() < 4 * se).all(), (type(loss).__name__, mean, exact, se)


# ---------------------------------------------------------------- wake-sleep, RWS


class TinySBN(nn.Module):
    """A 3-latent sigmoid belief net over 4 binary pixels, enumerable exactly."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.dec = nn.Linear(3, 4)
        self.enc = nn.Linear(4, 3)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g)

    def model(self, x):
        pyro.module("dec", self.dec)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Bernoulli(logits=torch.zeros(3)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("enc", self.enc)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Bernoulli(logits=self.enc(x)).to_event(1))


def test_rws_wake_gradients_match_exact_posterior_expectations():
    """As k grows the self-normalized wake gradients approach the exact ones:
    d/dtheta log p(x) and E_p(z|x)[d/dphi log q(z|x)]."""
    sbn = TinySBN()
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0]]).expand(2000, 4)
    log_joint = (dist.Bernoulli(logits=torch.zeros(3)).to_event(1).log_prob(STATES)
                 + dist.Bernoulli(logits=sbn.dec(STATES)).to_event(1).log_prob(x[0]))
    log_px = torch.logsumexp(log_joint, 0)
    post = torch.softmax(log_joint, 0).detach()
    g_theta = torch.autograd.grad(log_px, sbn.dec.weight)[0]
    log_q = dist.Bernoulli(logits=sbn.enc(x[:1])).to_event(1).log_prob(STATES)
    g_phi = torch.autograd.grad((post * log_q).sum(), sbn.enc.weight)[0]

    loss = RWS(num_particles=200)
    pyro.clear_param_store()
    sbn.zero_grad()
    loss.loss_and_grads(sbn.model, sbn.guide, x)
    torch.testing.assert_close(-sbn.dec.weight.grad / 2000, g_theta, atol=0.02, rtol=0.02)
    torch.testing.assert_close(-sbn.enc.weight.grad / 2000, g_phi, atol=0.02, rtol=0.02)


def test_sleep_gradient_matches_exact_expectation():
    sbn = TinySBN()
    # E_{p(z, x)}[d/dphi log q(z|x)] by enumerating z and x
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))
    log_joint = (dist.Bernoulli(logits=torch.zeros(3)).to_event(1).log_prob(STATES)[:, None]
                 + dist.Bernoulli(logits=sbn.dec(STATES)[:, None, :]).to_event(1).log_prob(xs))
    p = log_joint.exp().detach()  # (8, 16)
    log_q = dist.Bernoulli(logits=sbn.enc(xs)).to_event(1).log_prob(STATES[:, None, :])  # (8, 16)
    exact = torch.autograd.grad((p * log_q).sum(), sbn.enc.weight)[0]
    loss = WakeSleep()
    n, draws = 2000, []
    x = torch.zeros(n, 4)
    for _ in range(30):
        pyro.clear_param_store()
        sbn.zero_grad()
        loss.loss_and_grads(sbn.model, sbn.guide, x)
        draws.append(-sbn.enc.weight.grad / n)
    g = torch.stack(draws)
    mean, se = g.mean(0), g.std(0) / math.sqrt(g.shape[0])
    assert ((mean - exact).abs() < 4 * se + 1e-6).all()


def test_wake_sleep_and_rws_train_sbn_with_minibatch_svi():
    for loss in (WakeSleep(), RWS(5, phi="both")):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        sbn = TinySBN()
        data = torch.bernoulli(torch.full((256, 4), 0.3))
        svi = SVI(sbn.model, sbn.guide, pyro.optim.Adam({"lr": 0.05}), loss)
        first = sum(svi.step(data[i:i + 32]) for i in range(0, 256, 32))
        for _ in range(15):
            last = sum(svi.step(data[i:i + 32]) for i in range(0, 256, 32))
        assert last < first


# ---------------------------------------------------------------- bad input


def test_bad_objective_arguments():
    with pytest.raises(ValueError, match="Reinforce needs an integer num_particles >= 1; got 0"):
        Reinforce(num_particles=0)
    with pytest.raises(ValueError, match=r"VIMCO needs num_particles >= 2 .*got 1"):
        VIMCO(1)
    with pytest.raises(ValueError, match=r"RWS needs num_particles >= 2 .*got 1"):
        RWS(1)
    with pytest.raises(ValueError, match="unknown baseline 'mean'"):
        Reinforce(baseline="mean")
    with pytest.raises(ValueError, match="unknown gradient 'drag'"):
        IWAE(5, gradient="drag")
    with pytest.raises(ValueError, match="unknown phi update 'dream'"):
        RWS(5, phi="dream")


@pytest.mark.parametrize("loss", [STL(), IWAE(3, gradient="dreg")], ids=["stl", "dreg"])
def test_reparameterized_objectives_reject_discrete_sites_at_first_step(loss):
    x = torch.full((5,), 0.7)
    svi = SVI(discrete_model, discrete_guide, pyro.optim.Adam({"lr": 0.1}), loss)
    with pytest.raises(ValueError, match=r"needs reparameterized guide sites, but \['z'\] cannot"):
        svi.step(x)


def test_split_objectives_reject_shared_parameters():
    lg = _lg()

    def model(x):  # registers the guide's parameters in the model too
        pyro.module("lg_enc", lg.enc)
        lg.model(x)

    with pytest.raises(ValueError, match=r"registered in both the model and the guide: \['lg_enc\$\$\$A'"):
        IWAE(3, gradient="dreg").loss_and_grads(model, lg.guide, lg.sample_x(4))
    with pytest.raises(NotImplementedError, match="no single differentiable loss"):
        IWAE(3, gradient="dreg").differentiable_loss(lg.model, lg.guide, lg.sample_x(4))
