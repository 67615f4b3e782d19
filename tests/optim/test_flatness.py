"""Flatness instruments against models whose Hessian is known exactly.

The quadratic model's loss is ``0.5 (w - c_b)^T A_b (w - c_b)`` per batch ``b``, so the
Hessian of the mean loss is ``mean_b A_b``: eigenvalues, trace and landscapes all have
closed forms to compare with.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from optim import flatness, hessian, landscape


class Quadratic(nn.Module):
    """A single weight matrix (so filter normalisation has filters to work on) and a bias
    the loss does not use (the curvature code must cope with unused parameters)."""

    def __init__(self, rows: int, cols: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(rows, cols, generator=g))
        self.unused_bias = nn.Parameter(torch.zeros(rows))


def quadratic_loss(model: Quadratic, batch) -> torch.Tensor:
    a, c = batch
    r = model.weight.reshape(-1) - c
    return 0.5 * r @ (a @ r)


def symmetric_with_spectrum(eigenvalues: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
    return (q * eigenvalues) @ q.T


def quadratic_problem(eigenvalues: np.ndarray, seed: int = 0):
    """Two batches whose mean Hessian is the matrix with the given spectrum."""
    n = len(eigenvalues)
    rng = np.random.default_rng(seed + 100)
    h = symmetric_with_spectrum(eigenvalues, seed)
    noise = rng.standard_normal((n, n))
    noise = 0.3 * (noise + noise.T)
    hessians = [h + noise, h - noise]
    batches = [
        (torch.tensor(a, dtype=torch.float32), torch.tensor(rng.standard_normal(n), dtype=torch.float32))
        for a in hessians
    ]
    return h, batches


def gapped_spectrum(n: int = 60, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([[10.0, 7.0, 5.0], rng.uniform(-1.0, 1.0, n - 3)])


# -- Hessian-vector products -----------------------------------------------------------------
def test_hvp_of_quadratic_is_mean_hessian_times_vector():
    h, batches = quadratic_problem(gapped_spectrum())
    model = Quadratic(6, 10)
    v = torch.randn(60 + 6, generator=torch.Generator().manual_seed(1))
    hv = hessian.hessian_vector_product(model, quadratic_loss, batches, v)
    expected = np.concatenate([h @ v[:60].numpy(), np.zeros(6)])  # the bias has no curvature
    np.testing.assert_allclose(hv.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_hvp_matches_finite_differences_of_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    batches = [(torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))) for _ in range(2)]

    def loss_fn(m, batch):
        x, y = batch
        return nn.functional.cross_entropy(m(x), y)

    params = hessian.trainable_parameters(model)
    dim = sum(p.numel() for p in params)
    v = torch.randn(dim, dtype=torch.float64)
    hv = hessian.hessian_vector_product(model, loss_fn, batches, v)

    eps = 1e-5
    origin = hessian.flatten([p.detach().clone() for p in params])

    def grad_at(w):
        with torch.no_grad():
            for p, piece in zip(params, hessian.unflatten(w, params)):
                p.copy_(piece)
        return hessian.gradient(model, loss_fn, batches)

    fd = (grad_at(origin + eps * v) - grad_at(origin - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hv.numpy(), fd.numpy(), rtol=1e-6, atol=1e-8)
    assert hv.norm() > 1e-3  # a non-trivial check: the curvature is not zero


# -- eigenvalues and trace -------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_top3_eigenvalues_match_eigvalsh(method):
    h, batches = quadratic_problem(gapped_spectrum())
    expected = np.linalg.eigvalsh(h)[::-1][:3]
    model = Quadratic(6, 10)
    top = hessian.top_eigenvalues(model, quadratic_loss, batches, k=3, method=method)
    np.testing.assert_allclose(top, expected, rtol=1e-4)


def test_lanczos_finds_largest_algebraic_not_largest_magnitude():
    spectrum = np.concatenate([[-20.0, 4.0, 3.0, 2.0], np.linspace(-1.0, 1.0, 16)])
    h, batches = quadratic_problem(spectrum, seed=3)
    model = Quadratic(4, 5)
    top = hessian.top_eigenvalues(model, quadratic_loss, batches, k=3)
    np.testing.assert_allclose(top, np.linalg.eigvalsh(h)[::-1][:3], rtol=1e-4)


def test_hutchinson_trace_within_five_percent():
    rng = np.random.default_rng(5)
    spectrum = np.concatenate([[10.0, 7.0, 5.0], rng.uniform(0.5, 2.0, 57)])
    h, batches = quadratic_problem(spectrum, seed=5)
    model = Quadratic(6, 10)
    result = hessian.hutchinson_trace(model, quadratic_loss, batches, samples=200, seed=1)
    true_trace = float(np.trace(h))
    assert result["samples"] == 200
    assert abs(result["trace"] - true_trace) <= 0.05 * true_trace
    assert 0 < result["stderr"] < 0.05 * true_trace


# -- landscapes ------------------------------------------------------------------------------
def _quadratic_along(h, batches, model, directions, coords):
    """Closed form of the mean loss at ``w0 + sum c_i d_i`` (numpy, float64)."""
    w = model.weight.detach().double().reshape(-1).numpy()
    for c, d in zip(coords, directions):
        w = w + c * d[0].double().reshape(-1).numpy()
    return float(np.mean([0.5 * (w - c.double().numpy()) @ a.double().numpy() @ (w - c.double().numpy())
                          for a, c in batches]))


def test_landscape_1d_of_quadratic_is_its_parabola():
    h, batches = quadratic_problem(gapped_spectrum())
    model = Quadratic(6, 10)
    d = landscape.filter_normalized_direction(model, seed=3)
    result = landscape.loss_landscape_1d(model, quadratic_loss, batches, direction=d, steps=9)
    expected = np.array([_quadratic_along(h, batches, model, [d], [a]) for a in result["alphas"]])
    np.testing.assert_allclose(result["loss"], expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    # and it is exactly a parabola: a degree-2 fit leaves nothing, its curvature is d^T H d
    coeffs, residuals, *_ = np.polyfit(result["alphas"], result["loss"], 2, full=True)
    dv = d[0].double().reshape(-1).numpy()
    assert coeffs[0] == pytest.approx(0.5 * dv @ h @ dv, rel=1e-4)
    assert residuals[0] < 1e-6 * max(result["loss"]) ** 2


def test_landscape_2d_of_quadratic_matches_closed_form():
    h, batches = quadratic_problem(gapped_spectrum())
    model = Quadratic(6, 10)
    dirs = (landscape.filter_normalized_direction(model, 1), landscape.filter_normalized_direction(model, 2))
    result = landscape.loss_landscape_2d(model, quadratic_loss, batches, directions=dirs, steps=5)
    grid = np.asarray(result["loss"])
    assert grid.shape == (5, 5)
    expected = np.array([[_quadratic_along(h, batches, model, dirs, [a, b]) for b in result["betas"]]
                         for a in result["alphas"]])
    # float32 sums of terms of size ~max|loss|: compare on that scale
    np.testing.assert_allclose(grid, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert np.ptp(expected) > 1.0  # the grid spans a real change of loss


def test_filter_normalized_direction_matches_filter_norms():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 5, 5))
    direction = landscape.filter_normalized_direction(model, seed=0)
    for p, d in zip(hessian.trainable_parameters(model), direction):
        assert d.shape == p.shape
        if p.dim() <= 1:
            assert torch.count_nonzero(d) == 0  # biases and BN parameters are left alone
        else:
            w_norms = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            d_norms = d.reshape(d.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(d_norms, w_norms, rtol=1e-5, atol=1e-6)
    other = landscape.filter_normalized_direction(model, seed=1)
    assert not torch.equal(direction[0], other[0])


# -- measurement leaves the model as it was -----------------------------------------------------
def _bn_model_and_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model.train()
    model(torch.randn(8, 3, 6, 6) * 3 + 1)  # move the running stats off their init
    batches = [(torch.randn(4, 3, 6, 6), torch.randint(0, 3, (4,))) for _ in range(2)]
    return model, batches


def _cross_entropy(m, batch):
    x, y = batch
    return nn.functional.cross_entropy(m(x), y)


def test_measure_uses_eval_mode_and_restores_model_exactly():
    model, batches = _bn_model_and_batches()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    model.eval()
    with torch.no_grad():
        eval_loss = float(np.mean([float(_cross_entropy(model, b)) for b in batches]))
    model.train()

    result = flatness.measure(model, _cross_entropy, batches, topk=2, trace_samples=3,
                              landscape="2d", steps=3)
    assert result["loss"] == pytest.approx(eval_loss, rel=1e-6)  # BN running stats, no dropout
    assert result["landscape_2d"]["loss"][1][1] == pytest.approx(eval_loss, rel=1e-5)
    assert len(result["eigenvalues"]["top"]) == 2
    assert result["eigenvalues"]["top"][0] >= result["eigenvalues"]["top"][1]
    assert result["num_params"] == sum(p.numel() for p in model.parameters())
    assert all(m.training for m in model.modules())
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert all(p.grad is None for p in model.parameters())


def test_measure_is_deterministic_for_a_seed_and_rejects_bad_arguments():
    model, batches = _bn_model_and_batches()
    a = flatness.measure(model, _cross_entropy, batches, topk=1, trace_samples=2, landscape="1d", steps=3)
    b = flatness.measure(model, _cross_entropy, batches, topk=1, trace_samples=2, landscape="1d", steps=3)
    assert a == b
    with pytest.raises(ValueError, match="landscape"):
        flatness.measure(model, _cross_entropy, batches, landscape="3d")
    with pytest.raises(ValueError, match="at least one batch"):
        hessian.top_eigenvalues(model, _cross_entropy, [])
    with pytest.raises(ValueError, match="method"):
        hessian.top_eigenvalues(model, _cross_entropy, batches, method="qr")
    with pytest.raises(ValueError, match="span"):
        flatness.measure(model, _cross_entropy, batches, span=0.0)


def test_both_landscapes_share_their_first_direction_and_span():
    """With one seed the 1-D direction is the 2-D plane's first axis: the 1-D landscape is
    the plane's centre column, point for point (so 1-D and 2-D pictures agree)."""
    model, batches = _bn_model_and_batches()
    result = flatness.measure(model, _cross_entropy, batches, topk=0, trace_samples=0,
                              landscape="both", steps=5, span=0.5, seed=3)
    line, plane = result["landscape_1d"], result["landscape_2d"]
    assert line["alphas"] == plane["alphas"] == [-0.5, -0.25, 0.0, 0.25, 0.5]
    np.testing.assert_allclose(line["loss"], np.asarray(plane["loss"])[:, 2], rtol=1e-6)
    assert np.ptp(line["loss"]) > 1e-3  # the direction really moves the loss
    assert "eigenvalues" not in result and "trace" not in result
