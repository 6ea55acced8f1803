"""The loss options against formulas written here from their papers and torch's definitions."""
import pytest
import torch
import torch.nn.functional as F

from hypernet_studio.hypernet.sd.components import scaled_linear_alphas_cumprod
from hypernet_studio.hypernet.train.losses import diffusion_loss, min_snr_weights

ALPHAS = scaled_linear_alphas_cumprod()


@pytest.mark.parametrize("loss_type,reference", [
    ("mse", lambda p, t: F.mse_loss(p, t)),
    ("l1", lambda p, t: F.l1_loss(p, t)),
    ("huber", lambda p, t: F.huber_loss(p, t, delta=1.0)),
    ("smooth_l1", lambda p, t: F.smooth_l1_loss(p, t, beta=1.0)),
])
def test_each_loss_type_is_torchs(loss_type, reference):
    generator = torch.Generator().manual_seed(0)
    prediction, target = torch.randn(3, 4, 8, 8, generator=generator) * 2, torch.randn(3, 4, 8, 8, generator=generator)
    got = diffusion_loss(prediction, target, None, loss_type)
    torch.testing.assert_close(got, reference(prediction, target), rtol=1e-6, atol=0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_gamma_weights_follow_the_formula(prediction_type):
    timesteps = torch.tensor([0, 100, 500, 999])
    gamma = 5.0
    # Hang et al. 2023: SNR = abar / (1 - abar); w = min(SNR, gamma) / SNR for eps, / (SNR + 1) for v.
    expected = []
    for t in timesteps.tolist():
        abar = float(ALPHAS[t])
        snr = abar / (1 - abar)
        expected.append(min(snr, gamma) / (snr + 1 if prediction_type == "v_prediction" else snr))
    got = min_snr_weights(ALPHAS, timesteps, gamma, prediction_type)
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=0)
    assert got[0] < got[-1] or prediction_type == "v_prediction", "eps: low noise (high SNR) is weighted down"


def test_min_snr_weighs_each_samples_mean():
    generator = torch.Generator().manual_seed(1)
    prediction, target = torch.randn(2, 4, 4, 4, generator=generator), torch.randn(2, 4, 4, 4, generator=generator)
    weights = torch.tensor([0.25, 2.0])
    per_sample = ((prediction - target) ** 2).mean(dim=(1, 2, 3))
    got = diffusion_loss(prediction, target, None, "mse", weights)
    torch.testing.assert_close(got, (per_sample * weights).mean(), rtol=1e-6, atol=0)
