"""The demo world's renderer: determinism, attribute statistics, layout."""

import numpy as np
import pytest

from synthface.align import FFHQ_LANDMARKS
from synthface.world import BALANCED, BIASED, GENDERS, GROUPS, World, take


def test_rendering_is_deterministic_and_independent_of_batching():
    w = World(seed=3)
    ident = w.identities([5, 6, 7, 8])
    batch = w.render(ident, [0, 1, 2, 3], size=64)
    alone = w.render(w.identities([7]), [2], size=64)
    assert batch.shape == (4, 64, 64, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[2], alone[0])
    np.testing.assert_array_equal(batch, World(seed=3).render(World(seed=3).identities([5, 6, 7, 8]), [0, 1, 2, 3]))
    # another world seed, another person
    assert np.abs(World(seed=4).render(World(seed=4).identities([7]), [2]).astype(int) - alone).mean() > 5


def test_images_of_one_identity_vary_but_stay_closer_than_other_identities():
    w = World(seed=0)
    ident = w.identities(range(20))
    rows = np.repeat(np.arange(20), 2)
    imgs = w.render(take(ident, rows), np.tile([0, 1], 20), size=64).reshape(20, 2, -1).astype(float)
    same = np.abs(imgs[:, 0] - imgs[:, 1]).mean()
    assert same > 1.0  # nuisance changes the picture
    other = np.abs(imgs[:, 0] - np.roll(imgs[:, 0], 1, axis=0)).mean()
    assert other > same


def test_forced_attributes_and_their_statistics():
    w = World(seed=0)
    n = 300
    dark = w.identities(range(n), group=1)
    light = w.identities(range(n), group=2)
    assert (dark["group"] == 1).all()
    assert dark["tone"].mean() > light["tone"].mean() + 0.4
    men = w.identities(range(n), gender=1)
    women = w.identities(range(n), gender=0)
    assert men["jaw"].mean() < women["jaw"].mean() - 0.15  # squarer jaws
    assert (men["hair_len"] > 0.3).mean() < 0.2 < 0.8 < (women["hair_len"] > 0.3).mean()
    assert (women["beard"] == 0).all() and (men["beard"] > 0).mean() > 0.3


@pytest.mark.parametrize("dist", [BIASED, BALANCED])
def test_population_proportions_follow_the_distribution(dist):
    a = World(seed=1, distribution=dist).attributes(range(4000))
    for i, g in enumerate(GROUPS):
        assert abs((a["group"] == i).mean() - dist["group"][g]) < 0.03
    for i, s in enumerate(GENDERS):
        assert abs((a["gender"] == i).mean() - dist["gender"][s]) < 0.03
    assert 18 <= a["age"].min() and a["age"].max() <= 80


def test_bad_distribution_is_refused_clearly():
    with pytest.raises(ValueError, match="unknown group"):
        World(distribution={"group": {"martian": 1.0}, "gender": {"male": 1}}).attributes([0])


def test_landmarks_sit_on_the_ffhq_layout():
    w = World(seed=0)
    ident = w.identities(range(200))
    _, lm = w.render(ident, [0] * 200, size=64, return_landmarks=True)
    mean = lm.mean(0) / 64
    np.testing.assert_allclose(mean, FFHQ_LANDMARKS, atol=0.025)


def test_image_folder_rendered_in_processes_is_byte_identical(tmp_path):
    from synthface.world.dataset import write_image_folder
    w = World(seed=3, distribution=BIASED)
    a = write_image_folder(w, tmp_path / "serial", 5, 2, size=16, first_identity=40, log=lambda m: None)
    b = write_image_folder(w, tmp_path / "parallel", 5, 2, size=16, first_identity=40, log=lambda m: None,
                           workers=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 11 and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)  # labels.jsonl included
