"""``prepare_dataset`` builds atomically, checks and repairs what it finds on disk, and leaves other people's files
alone: interrupted builds, builds with other arguments into a complete folder, damaged files, edited records, and a
user's own ``datalist.json`` / ``preview.png``."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np

from monai_diffusion.data import brain_sim, load_datalist, prepare_dataset
from monai_diffusion.data.brain_sim import SECTIONS

BUILD = {"dim": 2, "size": 16, "subjects": 4, "seed": 0}
OTHER_SEED = 3  # sub-000 is healthy with seed 0 and has lesions with seed 3


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def _interrupted_at(call: int):
    """``simulate_subject`` raises on its ``call``-th call (1-based), as an interrupted build would stop."""
    real = brain_sim.simulate_subject
    calls = []

    def fake(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt("simulated interruption")
        return real(*args, **kwargs)

    with mock.patch.object(brain_sim, "simulate_subject", side_effect=fake):
        yield calls


def _some_file(root: Path, key: str, subject: str = "sub-001") -> Path:
    datalist = json.loads((root / "datalist.json").read_text())
    items = [it for s in SECTIONS for it in datalist[s] if it["subject"] == subject]
    return root / items[len(items) // 2][key]


class TestRepair(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.tmp = Path(cls._tmp.name)
        cls.clean = prepare_dataset(cls.tmp / "clean", **BUILD).parent
        cls.clean_other = prepare_dataset(cls.tmp / "clean_other", **{**BUILD, "seed": OTHER_SEED}).parent
        cls.clean_bytes = _tree_bytes(cls.clean)
        cls.clean_other_bytes = _tree_bytes(cls.clean_other)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def _copy(self, name: str) -> Path:
        """A fresh copy of the clean build (timestamps kept)."""
        out = self.tmp / f"{self._testMethodName}_{name}"
        shutil.copytree(self.clean, out)
        return out

    def assertConsistent(self, root: Path):
        """Every item's flags and voxel counts match the files it points to (what the stale datalist broke)."""
        datalist = json.loads((root / "datalist.json").read_text())
        for section in SECTIONS:
            for item in load_datalist(root / "datalist.json", section):
                mask = np.asarray(nib.load(item["lesion"]).dataobj)
                self.assertEqual(int(mask.sum()), item["lesion_voxels"], item["lesion"])
                if item["healthy"]:
                    self.assertEqual(int(mask.sum()), 0, item["lesion"])
                seed = brain_sim.subject_seed(datalist["config"]["seed"], int(item["subject"][4:]))
                self.assertEqual(item["params"]["subject_seed"], seed)

    def test_clean_builds_differ(self):
        """Precondition of the comparisons below: the two seeds give different files, including other slices."""
        self.assertNotEqual(self.clean_bytes, self.clean_other_bytes)
        self.assertNotEqual(set(self.clean_bytes), set(self.clean_other_bytes))

    def test_interrupted_build_then_original_arguments(self):
        out = self.tmp / "fresh"
        with self.assertRaises(KeyboardInterrupt), _interrupted_at(3) as calls:
            prepare_dataset(out, **BUILD)
        self.assertEqual(len(calls), 3)
        self.assertTrue((out / "images" / "sub-001" / "subject.json").is_file(), "two subjects were built")
        self.assertFalse((out / "datalist.json").exists(), "an unfinished build publishes no datalist")
        with self.assertRaises(FileNotFoundError):
            load_datalist(out / "datalist.json")
        prepare_dataset(out, **BUILD)
        self.assertEqual(_tree_bytes(out), self.clean_bytes)

    def test_other_seed_interrupted_never_leaves_a_live_stale_datalist(self):
        out = self._copy("set")
        with self.assertRaises(KeyboardInterrupt), _interrupted_at(3):
            prepare_dataset(out, **{**BUILD, "seed": OTHER_SEED})
        # sub-000 and sub-001 now hold the other seed's subjects: the old datalist must not describe them
        record = json.loads((out / "images" / "sub-000" / "subject.json").read_text())
        self.assertEqual(record["key"]["subject_seed"], brain_sim.subject_seed(OTHER_SEED, 0))
        self.assertFalse((out / "datalist.json").exists())
        # the original command repairs: byte for byte the clean build, no slices of the other seed left over
        prepare_dataset(out, **BUILD)
        self.assertEqual(_tree_bytes(out), self.clean_bytes)
        self.assertConsistent(out)
        # and the other seed, run to the end, gives its clean build
        prepare_dataset(out, **{**BUILD, "seed": OTHER_SEED})
        self.assertEqual(_tree_bytes(out), self.clean_other_bytes)
        self.assertConsistent(out)

    def test_healthy_only_after_interrupted_seed_switch(self):
        """The issue's symptom: after an interrupted seed switch no healthy item points at a lesion image."""
        n = BUILD["subjects"]
        self.assertEqual(
            (brain_sim.assign_subjects(n, 0)[0][1], brain_sim.assign_subjects(n, OTHER_SEED)[0][1]), (False, True)
        )
        out = self._copy("set")
        with self.assertRaises(KeyboardInterrupt), _interrupted_at(4):
            prepare_dataset(out, **{**BUILD, "seed": OTHER_SEED})
        prepare_dataset(out, **BUILD)
        healthy = [it for s in SECTIONS for it in load_datalist(out / "datalist.json", s) if it["healthy"]]
        self.assertTrue(healthy)
        for item in healthy:
            self.assertEqual(int(np.asarray(nib.load(item["lesion"]).dataobj).sum()), 0, item["lesion"])

    def test_emptied_truncated_and_missing_files_are_repaired(self):
        out = self._copy("set")
        emptied, truncated = _some_file(out, "t1w"), _some_file(out, "lesion", "sub-002")
        missing = _some_file(out, "flair_clean", "sub-003")
        emptied.write_bytes(b"")
        truncated.write_bytes(truncated.read_bytes()[:-7])
        missing.unlink()
        untouched = _some_file(out, "t2w", "sub-000")
        before = untouched.stat().st_mtime_ns
        with self.assertLogs(brain_sim.logger, "WARNING") as logs:
            prepare_dataset(out, **BUILD)  # no verify: the sizes tell
        self.assertEqual(_tree_bytes(out), self.clean_bytes)
        self.assertEqual(untouched.stat().st_mtime_ns, before, "intact files are not rewritten")
        text = "\n".join(logs.output)
        for sid in ("sub-001", "sub-002", "sub-003"):
            self.assertIn(sid, text)
        self.assertNotIn("sub-000", text)

    def test_same_size_corruption_is_caught_by_verify(self):
        out = self._copy("set")
        path = _some_file(out, "pd")
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        # the default check compares sizes only (it is run before every bundle run): this change passes it
        prepare_dataset(out, **BUILD)
        self.assertEqual(path.read_bytes(), bytes(data))
        prepare_dataset(out, **BUILD, verify=True)
        self.assertEqual(_tree_bytes(out), self.clean_bytes)
        # and an intact folder is left as it is by verify=True
        mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
        prepare_dataset(out, **BUILD, verify=True)
        self.assertEqual(mtimes, {p: p.stat().st_mtime_ns for p in out.rglob("*")})

    def test_edited_datalist_and_record_are_repaired(self):
        out = self._copy("set")
        path = out / "datalist.json"
        datalist = json.loads(path.read_text())
        datalist["training"][0]["healthy"] = not datalist["training"][0]["healthy"]
        path.write_text(json.dumps(datalist))
        record_path = out / "images" / "sub-002" / "subject.json"
        record = json.loads(record_path.read_text())
        record["items"][0]["lesion_voxels"] += 1
        record_path.write_text(json.dumps(record, sort_keys=True))
        prepare_dataset(out, **BUILD)
        self.assertEqual(_tree_bytes(out), self.clean_bytes)

    def test_folder_of_an_earlier_version_is_upgraded(self):
        """Datalists and records written before sizes and hashes were recorded are ours: replaced, not refused."""
        out = self._copy("set")
        datalist = json.loads((out / "datalist.json").read_text())
        del datalist["records"]
        (out / "datalist.json").write_text(json.dumps(datalist, indent=1, sort_keys=True))
        for path in out.glob("images/*/subject.json"):
            record = json.loads(path.read_text())
            del record["files"], record["sha256"]
            path.write_text(json.dumps(record, sort_keys=True))
        image = _some_file(out, "t1w")
        before = image.stat().st_mtime_ns
        prepare_dataset(out, **BUILD)
        self.assertEqual(_tree_bytes(out), self.clean_bytes)
        self.assertEqual(image.stat().st_mtime_ns, before, "identical images are not rewritten")

    def test_users_datalist_is_refused_without_overwrite(self):
        out = self.tmp / "users"
        out.mkdir()
        own = json.dumps({"training": [{"t1w": "mine.nii.gz", "healthy": True}]})
        for content in (own, "{not json", json.dumps({"name": "BrainSim"})):
            (out / "datalist.json").write_text(content)
            with self.assertRaisesRegex(FileExistsError, r"datalist\.json.*overwrite=True.*--overwrite"):
                prepare_dataset(out, **BUILD)
            self.assertEqual((out / "datalist.json").read_text(), content)
            self.assertFalse((out / "images").exists(), "refused before building anything")
        prepare_dataset(out, **BUILD, overwrite=True)
        self.assertEqual(_tree_bytes(out), self.clean_bytes)


class TestPreviewOwnership(unittest.TestCase):
    def setUp(self):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self.skipTest("matplotlib is not installed")
        self._tmp = tempfile.TemporaryDirectory()
        self.out = Path(self._tmp.name) / "set"
        self.build = {**BUILD, "subjects": 3}

    def tearDown(self):
        self._tmp.cleanup()

    def test_our_preview_is_marked_and_replaced(self):
        from matplotlib.image import imread

        prepare_dataset(self.out, **self.build, preview=True)
        png = self.out / "preview.png"
        self.assertTrue(brain_sim._is_our_preview(png))
        self.assertEqual(imread(str(png)).ndim, 3, "the marked PNG still decodes (chunk CRC valid)")
        first = png.read_bytes()
        prepare_dataset(self.out, **self.build, preview=True)  # ours: re-rendered without a word
        self.assertEqual(png.read_bytes(), first)
        # another seed without --preview: our preview of the old data goes with the old datalist
        prepare_dataset(self.out, **{**self.build, "seed": OTHER_SEED})
        self.assertFalse(png.exists())

    def test_users_preview_is_refused_without_overwrite(self):
        self.out.mkdir(parents=True)
        png = self.out / "preview.png"
        png.write_bytes(b"\x89PNG\r\n\x1a\nmy own picture")
        with self.assertRaisesRegex(FileExistsError, r"preview\.png.*overwrite"):
            prepare_dataset(self.out, **self.build, preview=True)
        self.assertFalse((self.out / "images").exists(), "refused before building anything")
        prepare_dataset(self.out, **self.build)  # no preview asked: the file is left alone
        self.assertEqual(png.read_bytes(), b"\x89PNG\r\n\x1a\nmy own picture")
        # with the data set in place and up to date, still refused, after rendering
        with self.assertRaisesRegex(FileExistsError, r"preview\.png.*overwrite"):
            prepare_dataset(self.out, **self.build, preview=True)
        self.assertEqual(png.read_bytes(), b"\x89PNG\r\n\x1a\nmy own picture")
        self.assertEqual(sorted(p.name for p in self.out.iterdir()), ["datalist.json", "images", "preview.png"])
        prepare_dataset(self.out, **self.build, preview=True, overwrite=True)
        self.assertTrue(brain_sim._is_our_preview(png))

    def test_unmarked_identical_preview_of_an_earlier_version_is_ours(self):
        from monai_diffusion.data.preview import write_preview

        datalist = prepare_dataset(self.out, **self.build)
        png = write_preview(datalist, self.out / "preview.png")  # as earlier versions wrote it: no mark
        self.assertFalse(brain_sim._is_our_preview(png))
        prepare_dataset(self.out, **self.build, preview=True)
        self.assertTrue(brain_sim._is_our_preview(png))


if __name__ == "__main__":
    unittest.main()
