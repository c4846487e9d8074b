from __future__ import annotations

import json
import os
import shutil
import tempfile
import unittest
from pathlib import Path

import nibabel as nib
import numpy as np
from parameterized import parameterized

from monai_diffusion.data import BrainSimDataset, assign_subjects, load_datalist, load_transforms, prepare_dataset
from monai_diffusion.data.brain_sim import CLEAN_KEYS, SECTIONS
from monai_diffusion.data.mri_physics import CONTRASTS

SIZE = 16
KEYS = (*CONTRASTS, "label", "lesion")
BUILDS = {2: {"dim": 2, "size": SIZE, "subjects": 4, "seed": 0}, 3: {"dim": 3, "size": SIZE, "subjects": 3, "seed": 1}}


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class TestPrepareDataset(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp())
        cls.paths = {dim: prepare_dataset(cls.tmp / f"set{dim}d", **kw) for dim, kw in BUILDS.items()}
        cls.lists = {dim: json.loads(p.read_text()) for dim, p in cls.paths.items()}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @parameterized.expand([("2d", 2), ("3d", 3)])
    def test_sections_are_subject_disjoint(self, _, dim):
        datalist = self.lists[dim]
        subjects = {s: {it["subject"] for it in datalist[s]} for s in SECTIONS}
        for s in SECTIONS:
            self.assertGreater(len(subjects[s]), 0, s)
        self.assertFalse(subjects["training"] & subjects["validation"])
        self.assertFalse(subjects["training"] & subjects["test"])
        self.assertFalse(subjects["validation"] & subjects["test"])
        self.assertEqual(len(set.union(*subjects.values())), BUILDS[dim]["subjects"])

    def test_training_holds_healthy_and_lesion_subjects(self):
        plan = assign_subjects(40, 0)
        train = [les for sec, les in plan if sec == "training"]
        self.assertEqual((len(train), sum(train)), (28, 14))
        for section in ("validation", "test"):
            flags = [les for sec, les in plan if sec == section]
            self.assertEqual((len(flags), sum(flags)), (6, 3), section)

    @parameterized.expand([("2d", 2), ("3d", 3)])
    def test_items_and_lesion_masks(self, _, dim):
        root = self.paths[dim].parent
        datalist = self.lists[dim]
        lesion_voxels: dict[str, int] = {}
        for section in SECTIONS:
            for item in datalist[section]:
                self.assertTrue(set(KEYS) | {"healthy", "subject", "params"} <= set(item), item.keys())
                self.assertFalse(os.path.isabs(item["t1w"]))
                for c in CLEAN_KEYS:  # the noiseless renderings ship with every item
                    self.assertTrue((root / item[c]).is_file(), item[c])
                mask = np.asarray(nib.load(str(root / item["lesion"])).dataobj)
                label = np.asarray(nib.load(str(root / item["label"])).dataobj)
                self.assertEqual(int(mask.sum()), item["lesion_voxels"])
                self.assertEqual(int((label > 0).sum()), item["brain_voxels"])
                self.assertTrue(np.all(label[mask > 0] >= 2))
                if item["healthy"]:
                    self.assertEqual(mask.sum(), 0, "healthy cases have empty lesion masks")
                    self.assertEqual(item["params"]["lesions"], [])
                lesion_voxels[item["subject"]] = lesion_voxels.get(item["subject"], 0) + int(mask.sum())
                if dim == 2:
                    self.assertTrue(label.any(), "every 2D slice holds brain")
        sick = {it["subject"] for s in SECTIONS for it in datalist[s] if not it["healthy"]}
        self.assertTrue(sick)
        for sid in sick:
            self.assertGreater(lesion_voxels[sid], 0, sid)

    @parameterized.expand([("2d", 2, (1, SIZE, SIZE)), ("3d", 3, (1, SIZE, SIZE, SIZE))])
    def test_loads_through_loadimaged(self, _, dim, shape):
        items = load_datalist(self.paths[dim], "training")
        self.assertTrue(os.path.isabs(items[0]["t1w"]))
        self.assertEqual(items[0]["subject"][:4], "sub-")  # not mistaken for a path
        out = load_transforms()(items[0])
        for k in KEYS:
            self.assertEqual(tuple(out[k].shape), shape, k)
        self.assertLessEqual(float(out["t2w"].max()), 1.0)
        np.testing.assert_allclose(np.diag(out["t1w"].affine)[:3], self.lists[dim]["grid"]["spacing_mm"], rtol=1e-6)

    def test_deterministic_and_incremental(self):
        again = prepare_dataset(self.tmp / "again", **BUILDS[3])
        self.assertEqual(_tree_bytes(again.parent), _tree_bytes(self.paths[3].parent))
        before = {p: p.stat().st_mtime_ns for p in again.parent.rglob("*.nii.gz")}
        prepare_dataset(self.tmp / "again", **BUILDS[3])  # nothing to do
        self.assertEqual(before, {p: p.stat().st_mtime_ns for p in again.parent.rglob("*.nii.gz")})
        # one more subject: only subjects whose lesion status changed (and the new one) are rendered again
        records = {p.parent.name: p.stat().st_mtime_ns for p in again.parent.rglob("subject.json")}
        old_plan, new_plan = assign_subjects(3, 1), assign_subjects(4, 1)
        prepare_dataset(self.tmp / "again", **{**BUILDS[3], "subjects": 4})
        for i in range(3):
            path = again.parent / "images" / f"sub-{i:03d}" / "subject.json"
            kept = path.stat().st_mtime_ns == records[f"sub-{i:03d}"]
            self.assertEqual(kept, old_plan[i][1] == new_plan[i][1], f"sub-{i:03d}")
        self.assertEqual(len(json.loads(again.read_text())["test"]) > 0, True)
        other = prepare_dataset(self.tmp / "other", **{**BUILDS[3], "seed": 2})
        self.assertNotEqual(_tree_bytes(other.parent), _tree_bytes(again.parent))

    def test_dataset_class(self):
        root = self.tmp / "root"
        ds = BrainSimDataset(
            root, "validation", transform=load_transforms(), dim=3, size=SIZE, subjects=3, progress=False
        )
        self.assertEqual(len(ds), 1)
        self.assertEqual(tuple(ds[0]["flair"].shape), (1, SIZE, SIZE, SIZE))
        self.assertEqual(ds.get_properties("config")["config"]["dim"], 3)
        train = BrainSimDataset(root, "training", dim=3, size=SIZE, subjects=3, healthy_only=True, progress=False)
        self.assertTrue(all(item["healthy"] for item in train.data))
        self.assertNotIn("params", train.data[0])
        self.assertIn(
            "params",
            BrainSimDataset(root, "training", dim=3, size=SIZE, subjects=3, keep_params=True, progress=False).data[0],
        )
        # items of healthy and lesion subjects collate into one batch (nested params would not)
        from monai.data import DataLoader

        every = BrainSimDataset(
            self.tmp / "root4", "training", transform=load_transforms(), dim=3, size=SIZE, subjects=4, progress=False
        )
        self.assertEqual({it["healthy"] for it in every.data}, {True, False})
        batch = next(iter(DataLoader(every, batch_size=len(every))))
        self.assertEqual(tuple(batch["t1w"].shape), (len(every), 1, SIZE, SIZE, SIZE))
        with self.assertRaises(FileNotFoundError):
            BrainSimDataset(self.tmp / "empty", "training", dim=3, size=SIZE, generate=False)
        # buildable from a bundle config with JSON arguments
        config = {
            "_target_": "monai_diffusion.data.BrainSimDataset",
            "root_dir": str(root),
            "section": "test",
            "dim": 3,
            "size": SIZE,
            "subjects": 3,
            "progress": False,
        }
        from monai.bundle import ConfigParser

        parsed = ConfigParser({"dataset": config}).get_parsed_content("dataset")
        self.assertIsInstance(parsed, BrainSimDataset)
        self.assertEqual(len(parsed), 1)
        with self.assertRaisesRegex(ValueError, "section"):
            BrainSimDataset(root, "train", dim=3, size=SIZE, generate=False)

    def test_2d_dataset_from_bundle_config(self):
        """A bundle builds the 2D data set with its loading chain from JSON arguments alone."""
        from monai.bundle import ConfigParser

        config = {
            "dataset": {
                "_target_": "monai_diffusion.data.BrainSimDataset",
                "root_dir": str(self.tmp / "root2d"),
                "section": "training",
                "dim": 2,
                "size": SIZE,
                "subjects": 3,
                "healthy_only": True,
                "progress": False,
                "transform": {"_target_": "monai_diffusion.data.load_transforms", "keys": ["t2w", "label"]},
            }
        }
        ds = ConfigParser(config).get_parsed_content("dataset")
        self.assertIsInstance(ds, BrainSimDataset)
        self.assertGreater(len(ds), 10)
        self.assertTrue(all(item["healthy"] for item in ds.data))
        self.assertEqual(tuple(ds[0]["t2w"].shape), (1, SIZE, SIZE))
        self.assertEqual(tuple(ds[0]["label"].shape), (1, SIZE, SIZE))
        self.assertIsInstance(ds[0]["t1w"], str, "keys outside the chain stay paths")

    @parameterized.expand(
        [
            ("zero_size", {"size": 0}, ValueError, "size"),
            ("negative_size", {"size": -16}, ValueError, "size"),
            ("few_subjects", {"subjects": 2}, ValueError, "subjects"),
            ("negative_seed", {"seed": -1}, ValueError, "seed"),
            ("bad_dim", {"dim": 4}, ValueError, "dim"),
            ("unknown_contrast", {"contrasts": ("t1w", "dwi")}, ValueError, "dwi"),
        ]
    )
    def test_bad_arguments(self, _, kwargs, error, pattern):
        with self.assertRaisesRegex(error, pattern):
            prepare_dataset(self.tmp / "bad", **{"size": SIZE, "subjects": 3, **kwargs})

    def test_unwritable_folder(self):
        blocker = self.tmp / "a_file"
        blocker.write_text("not a folder")
        with self.assertRaisesRegex(OSError, "cannot write to the output folder"):
            prepare_dataset(blocker / "sub", size=SIZE, subjects=3)


class TestUsersOwnData(unittest.TestCase):
    """A user's NIfTI or DICOM file goes through the same loading chain as the embedded data."""

    @parameterized.expand([("nifti", None), ("dicom", None), ("dicom", "PydicomReader")])
    def test_same_chain(self, kind, reader):
        if kind == "nifti":
            path = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
        else:
            import pydicom.data

            path = Path(pydicom.data.get_testdata_file("MR_small.dcm"))
        with tempfile.TemporaryDirectory() as tmp:
            datalist = Path(tmp) / "datalist.json"
            shutil.copy(path, Path(tmp) / path.name)
            datalist.write_text(json.dumps({"training": [{"t1w": path.name, "healthy": True}]}))
            item = load_datalist(datalist, "training")[0]
            out = load_transforms(keys=["t1w"], reader=reader)(item)
        image = out["t1w"]
        self.assertEqual(image.shape[0], 1)
        self.assertIn(image.ndim, (3, 4))
        self.assertGreater(float(image.max()), 0.0)


if __name__ == "__main__":
    unittest.main()
