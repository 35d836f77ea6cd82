import numpy as np
import pytest
import torch

from synthface.align import (ARCFACE_TEMPLATE, FFHQ_LANDMARKS, arcface_crop, arcface_matrix, attribute_matrix,
                             similarity_transform, warp_affine)


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    a, s, t = 0.3, 1.7, np.array([4.0, -9.0])
    R = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    M = similarity_transform(src, src @ R.T + t)
    np.testing.assert_allclose(M[:, :2], R, atol=1e-10)
    np.testing.assert_allclose(M[:, 2], t, atol=1e-9)


def test_warp_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (64, 64, 3)).astype(np.float32)
    M = arcface_matrix(64)
    ref = cv2.warpAffine(img, M, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    ours = warp_affine(torch.from_numpy(img).permute(2, 0, 1)[None], M, 112)[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - ref)[1:-1, 1:-1].max() < 0.01  # cv2 rounds its coefficients to 1/1024


def test_ffhq_points_land_on_the_arcface_template():
    M = arcface_matrix(1024)
    pts = FFHQ_LANDMARKS * 1024 @ M[:, :2].T + M[:, 2]
    assert np.abs(pts - ARCFACE_TEMPLATE).max() < 3.0  # pixels of the 112 crop
    # a 64 px image gives the same crop geometry
    np.testing.assert_allclose(FFHQ_LANDMARKS * 64 @ arcface_matrix(64)[:, :2].T + arcface_matrix(64)[:, 2], pts,
                               atol=1e-9)


def test_attribute_crop_is_insightfaces_box_rule():
    M = attribute_matrix(100, 96, box=(0.2, 0.3, 0.6, 0.9))
    side = 1.5 * 60  # 1.5 x the longer side of the box, in pixels
    np.testing.assert_allclose(M[0, 0], 96 / side)
    centre = np.array([40.0, 60.0])
    np.testing.assert_allclose(M[:, :2] @ centre + M[:, 2], [48, 48])


def test_arcface_crop_shapes_and_batch_matrices():
    imgs = np.zeros((3, 64, 64, 3), np.uint8)
    imgs[:, 20:40, 20:40] = 255
    out = arcface_crop(imgs)
    assert out.shape == (3, 3, 112, 112)
    per = warp_affine(torch.from_numpy(imgs).permute(0, 3, 1, 2).float(), np.stack([arcface_matrix(64)] * 3), 112)
    torch.testing.assert_close(per, out)
