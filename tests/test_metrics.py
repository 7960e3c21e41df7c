"""SSIM variants and mask-SSIM on cases worked out by hand."""

import numpy as np
import pytest

from pg2kit.metrics import mask_ssim, ssim


def flat(value, n=1, h=16, w=16):
    return np.full((n, h, w, 3), value, np.uint8)


def test_identical_images_score_one():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, a, "patn") == pytest.approx(1.0)


def test_flat_images_luminance_term():
    # flat images: every local variance is 0, so SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 150 + c1) / (100**2 + 150**2 + c1)  # 0.92309...
    assert ssim(flat(100), flat(150)) == pytest.approx(expected, rel=1e-6)
    # PATN: data range = max - min of the generated image; 0 here, taken as 1 -> C1 = 1e-4
    c1 = 0.01**2
    expected = (2 * 100 * 150 + c1) / (100**2 + 150**2 + c1)
    assert ssim(flat(100), flat(150), "patn") == pytest.approx(expected, rel=1e-6)


def test_variants_differ_on_noise():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (2, 32, 16, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    pg2, patn = ssim(a, b), ssim(a, b, "patn")
    assert 0 < pg2 < 1 and 0 < patn < 1 and abs(pg2 - patn) > 1e-3


def test_mask_ssim_uses_the_given_target_mask():
    rng = np.random.default_rng(2)
    real = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    gen = real.copy()
    gen[:, 16:] = rng.integers(0, 256, (1, 16, 32, 3), dtype=np.uint8)  # differs in the bottom half
    top = np.zeros((1, 32, 32), np.uint8)
    top[:, :16] = 1
    bottom = 1 - top
    assert ssim(gen, real) < 0.9
    assert mask_ssim(gen, real, top) == pytest.approx(1.0)  # differences masked out
    assert mask_ssim(gen, real, bottom) < 0.9
    assert mask_ssim(gen, real, top * 255) == pytest.approx(1.0)  # 0/255 masks work too


def test_bad_shapes():
    with pytest.raises(ValueError):
        ssim(flat(1), flat(1, h=8))
    with pytest.raises(ValueError):
        mask_ssim(flat(1), flat(1), np.ones((1, 8, 8)))
    with pytest.raises(ValueError):
        ssim(flat(1), flat(1), "other")


# ---------------------------------------------------------------- against scikit-image itself


def _skimage_ssim(g, r, variant):
    from skimage.metrics import structural_similarity

    if variant == "pg2":  # 2017 defaults on uint8: 7x7 box, data range 255, sample covariance
        kw = dict(win_size=7, data_range=255, use_sample_covariance=True, gaussian_weights=False)
    else:  # PATN/GFLA scripts: Gaussian 1.5, population covariance, range of the generated
        span = float(g.max()) - float(g.min())
        kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=span)
    return structural_similarity(g.astype(np.float64), r.astype(np.float64), channel_axis=-1, **kw)


def _test_images(n=6, h=128, w=64, seed=3):
    """Photo-like pairs: smooth shapes on a white background, a noisy, shifted 'generated' copy."""
    import cv2

    rng = np.random.default_rng(seed)
    real = np.full((n, h, w, 3), 255, np.uint8)
    for i in range(n):
        for _ in range(6):
            c = tuple(int(v) for v in rng.integers(0, 256, 3))
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.ellipse(real[i], (x, y), (int(rng.integers(4, 20)), int(rng.integers(8, 40))),
                        0, 0, 360, c, -1)  # fmt: skip
    real = cv2.GaussianBlur(real.reshape(n * h, w, 3), (5, 5), 1).reshape(n, h, w, 3)
    gen = np.roll(real, 2, axis=2).astype(int) + rng.integers(-25, 26, real.shape)
    return np.clip(gen, 0, 255).astype(np.uint8), real


@pytest.mark.parametrize("variant", ["pg2", "patn"])
def test_batched_ssim_matches_skimage(variant):
    from pg2kit.metrics import ssim_batch

    gen, real = _test_images()
    gen[0] = 255  # a flat generated image (PATN: range 0, taken as 1)
    gen[1] = np.random.default_rng(0).integers(0, 256, gen[1].shape)
    fast = ssim_batch(gen, real, variant)
    for i in range(len(gen)):
        if variant == "patn" and i == 0:  # skimage rejects data_range 0: pass the 1 we use
            from skimage.metrics import structural_similarity

            ref = structural_similarity(
                gen[i].astype(float), real[i].astype(float), channel_axis=-1,
                gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
            )  # fmt: skip
        else:
            ref = _skimage_ssim(gen[i], real[i], variant)
        assert fast[i] == pytest.approx(ref, abs=1e-6), (variant, i)


def test_threads_give_the_same_numbers(monkeypatch):
    """Chunks on several threads fill disjoint slices: bit-identical to one thread."""
    from pg2kit import metrics

    monkeypatch.setattr(metrics, "_CHUNK", 3)  # several chunks from a few images
    gen, real = _test_images()
    one = metrics.ssim_batch_multi(gen, real, threads=1)
    many = metrics.ssim_batch_multi(gen, real, threads=4)
    for v in one:
        np.testing.assert_array_equal(one[v], many[v])


@pytest.mark.parametrize("variant", ["pg2", "patn"])
def test_mask_ssim_matches_skimage_on_masked_images(variant):
    from pg2kit.maps import body_masks

    gen, real = _test_images(n=4, h=256, w=176, seed=5)
    kp = np.full((4, 18, 2), -1, np.float32)
    kp[:, [1, 2, 5, 8, 11]] = [[88, 60], [70, 62], [106, 62], [76, 140], [100, 140]]
    mask = body_masks(kp, 256, 176, radius=4)
    m = mask[..., None]
    ref = np.mean([_skimage_ssim(g * m[i], r * m[i], variant) for i, (g, r) in
                   enumerate(zip(gen, real, strict=True))])  # fmt: skip
    assert mask_ssim(gen, real, mask, variant) == pytest.approx(ref, abs=1e-6)


def test_l1_and_psnr():
    from pg2kit.metrics import l1_batch, psnr_batch

    a = flat(100, n=2)
    b = a.copy()
    b[1] = 110
    assert l1_batch(a, b).tolist() == pytest.approx([0.0, 10 / 255])
    p = psnr_batch(a, b)
    assert p[0] == float("inf")
    assert p[1] == pytest.approx(10 * np.log10(255**2 / 100))


# ---------------------------------------------------------------- IS, FID, LPIPS from weight files


def test_inception_score_and_fid_math():
    from pg2kit.metrics import feature_stats, frechet_distance, inception_score

    # uniform predictions: IS 1; one-hot predictions over k equally used classes: IS k
    assert inception_score(np.zeros((20, 1008)))[0] == pytest.approx(1.0)
    onehot = np.full((40, 1008), -1e4)
    onehot[np.arange(40), np.arange(40) % 4] = 0
    assert inception_score(onehot, splits=10)[0] == pytest.approx(4.0, rel=1e-6)
    rng = np.random.default_rng(0)
    f = rng.normal(size=(200, 6))
    mu, s = feature_stats(f)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-8
    # two Gaussians with identity covariance: FID = |mu1 - mu2|^2
    eye = np.eye(6)
    assert frechet_distance(np.zeros(6), eye, np.full(6, 2.0), eye) == pytest.approx(24.0)


@pytest.mark.parametrize(
    "n, dims", [(2, 64), pytest.param(12, 2048, marks=pytest.mark.slow)], ids=["small", "full"]
)
def test_inception_weights_saved_and_loaded(tmp_path, n, dims):
    import torch

    from pg2kit.metrics import feature_stats, frechet_distance
    from pg2kit.nets.inception import InceptionV3TF, load_inception

    torch.manual_seed(0)
    net = InceptionV3TF()
    path = tmp_path / "pt_inception-random.pth"
    torch.save(net.state_dict(), path)
    loaded = load_inception(path)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    gen, real = _test_images(n=n, h=64, w=32)
    with torch.no_grad():
        pool, logits = loaded(torch.from_numpy(gen).permute(0, 3, 1, 2))
    assert pool.shape == (n, 2048) and logits.shape == (n, 1008)
    # a set against itself (the default test keeps `dims` features: sqrtm of 2048^2 is slow)
    mu, s = feature_stats(pool.double().numpy()[:, :dims])
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-3 * max(1.0, float(np.trace(s)))


def test_lpips_weights_saved_and_loaded(tmp_path):
    import torch

    from pg2kit.nets.lpips import LPIPSAlex, load_lpips

    torch.manual_seed(0)
    net = LPIPSAlex()
    for lin in net.lin:  # heads are non-negative in the released files
        lin.weight.data.abs_()
    heads = {f"lin{i}.model.1.weight": lin.weight for i, lin in enumerate(net.lin)}
    alex = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    torch.save(heads, tmp_path / "alex_heads.pth")
    torch.save(alex, tmp_path / "alexnet.pth")
    torch.save({**heads, **alex}, tmp_path / "combined.pth")
    gen, real = _test_images(n=3, h=64, w=64)
    g, r = (torch.from_numpy(x).permute(0, 3, 1, 2) for x in (gen, real))
    ref = net(g, r)
    two = load_lpips(tmp_path / "alex_heads.pth", tmp_path / "alexnet.pth")
    one = load_lpips(tmp_path / "combined.pth")
    assert torch.equal(two(g, r), ref) and torch.equal(one(g, r), ref)
    assert (ref > 0).all() and (net(g, g).abs() < 1e-6).all()
    assert not torch.equal(load_lpips(tmp_path / "combined.pth", version="0.0")(g, r), ref)


def test_missing_weight_files_name_the_file_and_source(tmp_path):
    from pg2kit.nets import WeightsError
    from pg2kit.nets.inception import load_inception
    from pg2kit.nets.lpips import load_lpips

    with pytest.raises(WeightsError) as e:
        load_inception(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    msg = str(e.value)
    assert "\n" not in msg and "pt_inception-2015-12-05-6726825d.pth" in msg
    assert "pytorch-fid" in msg and "never downloads" in msg
    with pytest.raises(WeightsError, match="lpips"):
        load_lpips(tmp_path / "alex.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read"):
        load_inception(tmp_path / "junk.pth")
