"""The shared image writers: the montage view (channel 0, middle slice of 3D, rotated), PNG grids and NIfTI files, in
2D and 3D, and the apps that write through them."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from monai_diffusion.utils.image_io import display_slice, save_nifti, save_nifti_images, write_montage_png


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def expected_pixels(tile: np.ndarray) -> np.ndarray:
    return (np.clip(tile, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 5, 7, 3)], ids=["2d", "3d"])
def test_display_slice(shape):
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    view = display_slice(image)
    plane = image[0].numpy() if len(shape) == 3 else image[0, :, :, shape[-1] // 2].numpy()
    np.testing.assert_array_equal(view, np.rot90(plane))
    assert view.dtype == np.float64  # float32/float64 keep their precision
    assert display_slice(image.to(torch.bfloat16)).dtype == np.float32
    assert display_slice(image > 0.5).dtype == np.float32
    np.testing.assert_array_equal(display_slice(image.numpy()), view)
    with pytest.raises(ValueError, match="2D or 3D"):
        display_slice(torch.zeros(1, 4))


@pytest.mark.parametrize("shape", [(1, 4, 6), (1, 4, 6, 5)], ids=["2d", "3d"])
def test_montage_grid_padding_and_pixels(tmp_path, shape):
    g = torch.Generator().manual_seed(1)
    rows = [[torch.rand(shape, generator=g) * 1.4 - 0.2 for _ in range(n)] for n in (3, 1)]
    path = write_montage_png(rows, tmp_path / "m.png", columns=3)
    grid = png(path)
    assert grid.shape == (2 * 6, 3 * 4) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[:6, 4:8], expected_pixels(display_slice(rows[0][1])))
    np.testing.assert_array_equal(grid[6:, :4], expected_pixels(display_slice(rows[1][0])))
    assert (grid[6:, 4:] == 0).all(), "short rows are padded with black tiles"
    assert png(write_montage_png([], tmp_path / "empty.png")).shape == (8, 8)


@pytest.mark.parametrize("shape", [(1, 4, 6), (1, 4, 6, 5)], ids=["2d", "3d"])
def test_nifti_files(tmp_path, shape):
    images = torch.randn(3, *shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    paths = save_nifti_images(images, tmp_path / "new" / "folder", [f"x_{i}.nii.gz" for i in range(3)])
    assert [p.name for p in paths] == ["x_0.nii.gz", "x_1.nii.gz", "x_2.nii.gz"]
    loaded = nib.load(str(paths[1]))
    assert loaded.get_data_dtype() == np.float32 and np.array_equal(loaded.affine, np.eye(4))
    np.testing.assert_array_equal(loaded.get_fdata(), images[1, 0].numpy().astype(np.float32))
    single = save_nifti(images[0].numpy(), tmp_path / "one.nii.gz")
    np.testing.assert_array_equal(nib.load(str(single)).get_fdata(), images[0, 0].numpy().astype(np.float32))
    with pytest.raises(ValueError, match="3 images but 2 file names"):
        save_nifti_images(images, tmp_path, ["a.nii.gz", "b.nii.gz"])


def test_apps_write_through_the_shared_helpers(tmp_path):
    """The generation, anomaly and denoising writers give what the shared helpers give (their former code did the
    same rot90 / middle-slice / clip-to-uint8 steps, file for file)."""
    from monai_diffusion.apps.anomaly.evaluation import _save_maps
    from monai_diffusion.apps.denoising.evaluation import _figure
    from monai_diffusion.apps.generation.pipeline import save_samples

    g = torch.Generator().manual_seed(3)
    images = torch.rand(4, 1, 6, 8, 5, generator=g) * 2 - 1
    files = save_samples(images, torch.tensor([0, 1, 1, 0]), tmp_path / "gen", prefix="p", montage_columns=2)
    assert [p.rsplit("/", 1)[-1] for p in files["nifti"]] == [
        "p_t1w_000.nii.gz",
        "p_t2w_000.nii.gz",
        "p_t2w_001.nii.gz",
        "p_t1w_001.nii.gz",
    ]
    images01 = (images + 1) / 2
    reference = write_montage_png([[images01[0], images01[3]], [images01[1], images01[2]]], tmp_path / "ref.png")
    np.testing.assert_array_equal(png(files["montage"]), png(reference))
    examples = {"noisy": torch.rand(2, 1, 6, 8, generator=g), "clean": torch.rand(2, 1, 6, 8, generator=g)}
    np.testing.assert_array_equal(
        png(_figure(examples, tmp_path / "fig.png")),
        png(write_montage_png(list(examples.values()), tmp_path / "r.png")),
    )
    _save_maps(images[:2], tmp_path / "maps", "flair")
    saved = nib.load(str(tmp_path / "maps" / "flair_0001.nii.gz")).get_fdata()
    np.testing.assert_array_equal(saved, images[1, 0].numpy())
