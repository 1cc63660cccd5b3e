"""Restoration models: registry, shipped CARE/N2V weights on held-out simulated and real pairs,
the Gaussian baseline, Noise2Void masking, training reproducibility, BioImage Model Zoo export."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from scopeflow import ConfigurationError
from tasks.inference import (
    FMD_CONFOCAL_FISH,
    RestorationModel,
    available_restoration_models,
    best_gaussian_blur,
    load_model,
    load_pair,
    load_restoration_model,
    psnr,
    register_model,
    restore_planes,
    ssim,
)
from tasks.training import (
    add_confocal_noise,
    estimate_noise_gain,
    n2v_mask,
    random_confocal_noise,
    sim_pair,
    tissue_clean,
)
from tests.conftest import shared_data

torch = pytest.importorskip("torch")

REAL_GOAL_DB = 1.5  # issue 4: beat the best hindsight Gaussian blur by this much on real pairs


@pytest.fixture(scope="module", autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def care() -> RestorationModel:
    return load_restoration_model("care", device="cpu")


@pytest.fixture(scope="module")
def held_out_sim() -> tuple[np.ndarray, np.ndarray]:
    # seed 10_000 is never drawn by training (its simulator seeds come from [seed, 11]); a
    # low-SNR frame (~27 dB): the regime a denoiser is for
    return sim_pair(10_000, 256)


def test_registry_lists_and_checks_restoration_models() -> None:
    assert {"care", "n2v", "gaussian"} <= set(available_restoration_models())
    with pytest.raises(ConfigurationError, match="unknown restoration model 'unet'"):
        load_restoration_model("unet")  # a segmentation model is not a restorer
    with pytest.raises(ConfigurationError, match="unknown model 'care'"):
        load_model("care")

    class NotARestorer:
        name, version = "x", "1"

        def segment(self, image: np.ndarray, *, pixel_size_um: float | None = None) -> None: ...

    register_model("not-a-restorer", NotARestorer, kind="restoration", replace=True)
    with pytest.raises(ConfigurationError, match="does not implement RestorationModel"):
        load_restoration_model("not-a-restorer")


def test_missing_weights_name_the_training_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="train_restoration --mode care"):
        load_restoration_model("care", weights=tmp_path / "absent.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigurationError, match="cannot load care weights"):
        load_restoration_model("care", weights=bad)


def test_gaussian_restorer_smooths_and_keeps_units() -> None:
    rng = np.random.default_rng(0)
    img = (1000 + rng.normal(0, 50, (64, 80))).astype(np.uint16)
    out = load_restoration_model("gaussian", sigma=2.0).restore(img)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert abs(float(out.mean()) - float(img.mean())) < 2.0
    assert out.std() < img.std() / 3
    with pytest.raises(ValueError, match="sigma"):
        load_restoration_model("gaussian", sigma=-1)


def test_care_denoises_held_out_low_snr_sim_pair(
    care: RestorationModel, held_out_sim: tuple[np.ndarray, np.ndarray]
) -> None:
    noisy, ref = held_out_sim
    out = care.restore(noisy.astype(np.uint16))
    assert out.dtype == np.float32 and out.shape == noisy.shape
    # measured: noisy 27.3 dB, best hindsight blur 37.5 dB, CARE 41.5 dB (SSIM 0.41 -> 0.99)
    assert psnr(ref, out) > psnr(ref, noisy) + 12.0
    assert ssim(ref, out) > ssim(ref, noisy) + 0.5
    blur = best_gaussian_blur(ref, noisy)
    assert psnr(ref, out) > blur.psnr + 2.5, (psnr(ref, out), blur.psnr)
    assert ssim(ref, out) > blur.ssim + 0.02


def test_real_confocal_pair_against_best_blur(care: RestorationModel) -> None:
    noisy, clean = load_pair(shared_data(*FMD_CONFOCAL_FISH))
    blur = best_gaussian_blur(clean, noisy)
    assert 31.4 < blur.psnr < 31.8  # the baseline itself (sigma ~1.23 px)
    care_db = psnr(clean, care.restore(noisy))
    n2v_db = psnr(clean, load_restoration_model("n2v", device="cpu").restore(noisy))
    # Goal (issue 4): best blur + 1.5 dB. NOT reached: measured CARE 32.6 dB (+1.00 vs blur;
    # +1.12 with ensemble=8, README "Restoration"), N2V 31.8 dB (+0.21), both > 9 dB over the
    # noisy 22.6 dB. Assert what is achieved so a regression fails.
    assert care_db > psnr(clean, noisy) + 9.5
    assert care_db > blur.psnr + 0.9, (care_db, blur.psnr)
    assert n2v_db > blur.psnr + 0.1, (n2v_db, blur.psnr)
    assert care_db < blur.psnr + REAL_GOAL_DB  # flips when the goal is met: update the docs


def test_tiled_inference_matches_whole_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    img = rng.poisson(20.0, (150, 170)).astype(np.float32) + 10
    whole = load_restoration_model("care", device="cpu", tile=512).restore(img)
    tiled = load_restoration_model("care", device="cpu", tile=64).restore(img)
    # tiles overlap by 32 px, so seams see nearly the full receptive field
    assert psnr(whole, tiled) > 35


def test_ensemble_averages_the_eight_symmetries() -> None:
    rng = np.random.default_rng(2)
    img = rng.poisson(30.0, (48, 72)).astype(np.float32)
    plain = load_restoration_model("n2v", device="cpu")
    x8 = load_restoration_model("n2v", device="cpu", ensemble=8).restore(img)
    assert x8.shape == img.shape and x8.dtype == np.float32
    manual = np.zeros_like(x8)
    for k in range(4):
        for flip in (False, True):
            t = np.rot90(img, k)
            t = t[:, ::-1] if flip else t
            out = plain.restore(np.ascontiguousarray(t))
            out = out[:, ::-1] if flip else out
            manual += np.rot90(out, -k) / 8
    np.testing.assert_allclose(x8, manual, atol=1e-3 * float(np.abs(manual).max()))
    assert not np.allclose(x8, plain.restore(img), atol=1e-3)  # the network is not invariant
    with pytest.raises(ConfigurationError, match="ensemble"):
        load_restoration_model("care", device="cpu", ensemble=4)


def test_noise_estimate_recovers_the_confocal_noise_slope() -> None:
    rng = np.random.default_rng(7)
    for _ in range(3):
        noise = random_confocal_noise(rng, (5.0, 50.0))
        noisy, ref = add_confocal_noise(tissue_clean(rng, 192), noise, rng)
        assert noisy.min() >= 0 and noisy.max() <= 255 and np.all(noisy == np.rint(noisy))
        # mean-variance: noisy - ref has variance slope * (ref - offset) (+ read, rounding)
        sig = ref - noise.offset_adu
        bright = sig > np.percentile(sig, 80)
        measured = float(np.var((noisy - ref)[bright]) / np.mean(sig[bright]))
        assert 0.75 < measured / noise.variance_per_adu < 1.25, measured
        offset, slope = estimate_noise_gain(noisy)
        assert abs(offset - round(noise.offset_adu)) <= 1
        assert 0.8 < slope / noise.variance_per_adu < 1.25, (slope, noise.variance_per_adu)


def test_restore_planes_runs_each_plane_and_rejects_4d() -> None:
    model = load_restoration_model("gaussian", sigma=1.0)
    stack = np.stack([np.full((16, 16), v, np.uint16) for v in (10, 200, 3000)])
    out = restore_planes(model, stack)
    assert out.shape == stack.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 8, 8], [10, 200, 3000], rtol=1e-5)
    with pytest.raises(ValueError, match="split other axes"):
        restore_planes(model, np.zeros((2, 2, 8, 8)))


def test_n2v_mask_blinds_pixels_with_a_neighbour_value() -> None:
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(4, 32, 32)).astype(np.float32)
    masked, mask = n2v_mask(batch, rng, fraction=0.05, radius=2)
    assert 0.02 < mask.mean() < 0.08
    # a blinded pixel holds some value from its 5x5 window, never its own
    changed = masked[mask] != batch[mask]
    assert changed.all()
    b, r, c = np.nonzero(mask)
    for bi, ri, ci, v in zip(b[:50], r[:50], c[:50], masked[mask][:50], strict=True):
        window = batch[bi, max(ri - 2, 0) : ri + 3, max(ci - 2, 0) : ci + 3]
        assert np.isclose(window, v).any()
    np.testing.assert_array_equal(masked[~mask], batch[~mask])


@pytest.mark.parametrize("mode", ["care", "n2v"])
def test_training_is_reproducible(mode: str) -> None:
    from tasks.training.train_restoration import RestorationTrainConfig, train

    cfg = RestorationTrainConfig(
        mode=mode,
        seed=3,
        n_sim=1,
        n_synthetic=2,
        size=96,
        n_tissue=2,
        iterations=3,
        batch=2,
        crop=32,
        threads=1,
        channels=(8, 16),
    )
    a, meta = train(cfg, log=False)
    b, _ = train(cfg, log=False)
    assert meta["mode"] == mode and meta["residual"] == (mode == "care")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    c, _ = train(RestorationTrainConfig(**{**cfg.__dict__, "seed": 4}), log=False)
    assert any(
        not torch.equal(va, vc)
        for va, vc in zip(a.state_dict().values(), c.state_dict().values(), strict=True)
    )


def test_care_trains_on_a_users_own_pairs(tmp_path: Path) -> None:
    from dataclasses import replace

    import tifffile

    from tasks.inference import percentile_range
    from tasks.training.train_restoration import RestorationTrainConfig, make_sampler, train

    rng = np.random.default_rng(8)
    noisy = (3.0 + rng.poisson(20.0 * tissue_clean(rng, 80))).astype(np.float32)
    tifffile.imwrite(tmp_path / "low.tif", noisy)
    tifffile.imwrite(tmp_path / "high.tif", 2.0 * noisy)  # an exact relation, to check crops
    pair = (str(tmp_path / "low.tif"), str(tmp_path / "high.tif"))
    cfg = RestorationTrainConfig(
        pairs=(pair,), crop=32, batch=2, iterations=3, threads=1, channels=(8, 16)
    )
    lo, scale = percentile_range(noisy)
    draw = make_sampler(cfg, log=False)
    for _ in range(5):  # input and target crops come from the same window and symmetry
        x, y = draw(rng)
        assert x.shape == (32, 32) and y is not None
        np.testing.assert_allclose(y, 2.0 * x + lo / scale, rtol=1e-5, atol=1e-5)
    _, meta = train(cfg, log=False)
    assert meta["train_config"]["pairs"] == [pair]
    # half the crops from the pair, half from the built-in sources
    train(replace(cfg, pair_fraction=0.5, n_sim=0, n_synthetic=2, n_tissue=2, size=64), log=False)
    with pytest.raises(ValueError, match="use it with --mode care"):
        make_sampler(replace(cfg, mode="n2v"), log=False)
    tifffile.imwrite(tmp_path / "cut.tif", noisy[:60])
    with pytest.raises(ValueError, match="differ; give the same field"):
        make_sampler(replace(cfg, pairs=((pair[0], str(tmp_path / "cut.tif")),)), log=False)


@pytest.mark.skipif(
    importlib.util.find_spec("bioimageio") is None,
    reason="bioimageio.core is not installed: pip install -e '.[bioimageio]'",
)
def test_bioimageio_export_and_load_back_offline(tmp_path: Path, care: RestorationModel) -> None:
    from tasks.inference import export_bioimageio_package

    package = export_bioimageio_package(tmp_path / "care.zip", mode="care")
    model = load_restoration_model(f"bioimageio:{package}", device="cpu")
    assert model.name.startswith("bioimageio:")
    noisy, _ = sim_pair(10_007, 96)
    ours, theirs = care.restore(noisy), model.restore(noisy)
    # same network; bioimageio.core computes its percentiles slightly differently
    assert psnr(ours, theirs) > 35
    with pytest.raises(ConfigurationError, match="local disk only"):
        load_restoration_model("bioimageio:https://example.org/model.zip")
    with pytest.raises(ConfigurationError, match="not found"):
        load_restoration_model(f"bioimageio:{tmp_path / 'absent.zip'}")
