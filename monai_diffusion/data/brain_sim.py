"""Build, list and load the embedded offline brain MRI data set ("BrainSim").

:func:`prepare_dataset` renders synthetic subjects (:mod:`monai_diffusion.data.simulate`) to NIfTI files and writes
a MONAI datalist JSON with ``training``, ``validation`` and ``test`` sections; :class:`BrainSimDataset` is a
:class:`monai.data.CacheDataset` over one section, in the manner of :class:`monai.apps.DecathlonDataset` but
generating instead of downloading. The files are ordinary NIfTI, read with :class:`monai.transforms.LoadImaged`
exactly as a user's own data would be (see :func:`load_transforms`).

Layout of a prepared folder::

    OUT/datalist.json                      the datalist (paths relative to OUT) and the build configuration
    OUT/images/sub-007/subject.json        what subject 7 was built from (used to skip rebuilding it)
    OUT/images/sub-007/sub-007_z031_t1w.nii.gz   2D: one file per axial slice and contrast (plus _label, _lesion)
    OUT/images/sub-007/sub-007_t1w.nii.gz        3D: one volume per contrast (plus _label, _lesion)
    OUT/preview.png                        with ``preview=True``
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from monai.data import CacheDataset, load_decathlon_datalist
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from monai_diffusion.data.mri_physics import CONTRASTS
from monai_diffusion.data.simulate import Grid, make_grid, simulate_subject, subject_seed

__all__ = [
    "SECTIONS",
    "LABELS",
    "LESION_SHARE",
    "SPLIT_FRACTIONS",
    "DEFAULT_SUBJECTS",
    "DEFAULT_SIZE",
    "FORMAT_VERSION",
    "CLEAN_KEYS",
    "assign_subjects",
    "prepare_dataset",
    "load_datalist",
    "load_transforms",
    "BrainSimDataset",
]

#: datalist sections
SECTIONS: tuple[str, ...] = ("training", "validation", "test")
#: tissue label values
LABELS: dict[int, str] = {0: "background", 1: "csf", 2: "grey matter", 3: "white matter"}
#: share of subjects (in every section) that carry synthetic lesions; the others are healthy
LESION_SHARE: float = 0.5
#: share of subjects in the training, validation and test sections (whole subjects, never slices)
SPLIT_FRACTIONS: tuple[float, float, float] = (0.70, 0.15, 0.15)
#: default number of subjects
DEFAULT_SUBJECTS: int = 40
#: default image size per spatial dimension: 64 x 64 slices in 2D, 32^3 volumes in 3D
DEFAULT_SIZE: dict[int, int] = {2: 64, 3: 32}
#: bumped whenever the simulation changes, so that stale folders are rebuilt
FORMAT_VERSION: int = 6

#: datalist keys of the noiseless renderings (the exact targets for denoising), one per contrast
CLEAN_KEYS: tuple[str, ...] = tuple(f"{c}_clean" for c in CONTRASTS)

_DATALIST = "datalist.json"
_PREVIEW = "preview.png"


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def _check_contrasts(contrasts: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(contrasts, str):
        contrasts = [contrasts]
    contrasts = [str(c).lower() for c in contrasts]
    unknown = [c for c in contrasts if c not in CONTRASTS]
    if unknown:
        raise ValueError(f"unknown contrast(s) {unknown}; expected a subset of {list(CONTRASTS)}.")
    if not contrasts:
        raise ValueError(f"at least one contrast is needed, expected a subset of {list(CONTRASTS)}.")
    return tuple(c for c in CONTRASTS if c in contrasts)


def assign_subjects(subjects: int, seed: int) -> list[tuple[str, bool]]:
    """Section and lesion status of every subject: a seeded 70/15/15 split of whole subjects, then, inside each
    section in subject order, every other subject carries lesions, starting with a healthy subject in training
    (so that even tiny sets can train on healthy data) and with a lesion subject in validation and test.

    Args:
        subjects: number of subjects (at least 3, so that every section holds one).
        seed: data-set seed.

    Returns:
        ``[(section, has_lesions)]`` indexed by subject.
    """
    subjects = _check_int("subjects", subjects, 3)
    n_val = max(1, int(round(SPLIT_FRACTIONS[1] * subjects)))
    n_test = max(1, int(round(SPLIT_FRACTIONS[2] * subjects)))
    n_train = subjects - n_val - n_test
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5D117])).permutation(subjects)
    sections = {}
    for pos, idx in enumerate(order):
        sections[int(idx)] = SECTIONS[0] if pos < n_train else SECTIONS[1] if pos < n_train + n_val else SECTIONS[2]
    out: list[tuple[str, bool]] = []
    seen = dict.fromkeys(SECTIONS, 0)
    period = max(int(round(1.0 / LESION_SHARE)), 1) if LESION_SHARE > 0 else 0
    for idx in range(subjects):
        sec = sections[idx]
        first = 1 if sec == SECTIONS[0] else 0  # position in the section of the first lesion subject
        out.append((sec, bool(period) and seen[sec] % period == first % period))
        seen[sec] += 1
    return out


def _nifti_header(shape: Sequence[int], dtype: np.dtype, affine: np.ndarray) -> bytes:
    """NIfTI-1 single-file header (348 bytes + 4 empty extension bytes) for an array of ``shape`` and ``dtype``."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(tuple(shape))
    hdr.set_data_dtype(dtype)
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_xyzt_units("mm")
    hdr["vox_offset"] = 352
    return hdr.binaryblock + b"\x00" * 4


def _write_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write ``array`` as a gzipped NIfTI-1 file with a zero gzip timestamp, so equal inputs give equal bytes.

    The header comes from nibabel; the file is assembled here because nibabel's writer costs about three times
    as much per small file, and the 2D set has thousands of them.
    """
    import gzip

    blob = _nifti_header(array.shape, array.dtype, affine) + np.asarray(array).tobytes(order="F")
    path.write_bytes(gzip.compress(blob, compresslevel=1, mtime=0))


def _write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename, so a concurrent reader never sees a partial file.

    Used for the JSON records, which are written after a subject's (or the set's) images and mark them complete;
    the images themselves are written directly (renaming thousands of small files costs seconds of system time).
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _subject_items(
    out_dir: Path, index: int, seed: int, section: str, lesions: bool, grid: Grid, dim: int, contrasts: tuple[str, ...]
) -> list[dict]:
    """Build (or reuse) one subject's files and return its datalist items (paths relative to ``out_dir``)."""
    sid = f"sub-{index:03d}"
    folder = out_dir / "images" / sid
    s_seed = subject_seed(seed, index)
    key = {
        "format": FORMAT_VERSION,
        "subject_seed": s_seed,
        "dim": dim,
        "shape": list(grid.shape),
        "spacing": grid.spacing,
        "contrasts": list(contrasts),
        "lesions": lesions,
    }
    record = folder / "subject.json"
    if record.is_file():
        try:
            stored = json.loads(record.read_text())
        except (OSError, ValueError):
            stored = {}
        if stored.get("key") == key and all((out_dir / p).is_file() for it in stored["items"] for p in _files(it)):
            return [dict(it, section=section) for it in stored["items"]]
    folder.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)  # an interrupted rebuild must not leave a record that vouches for mixed files
    sim = simulate_subject(s_seed, grid, lesions=lesions, contrasts=contrasts, clean=True)
    params = sim["params"]
    keys = (*contrasts, *(f"{c}_clean" for c in contrasts), "label", "lesion")
    items = []
    if dim == 3:
        rel = {k: f"images/{sid}/{sid}_{k}.nii.gz" for k in keys}
        for k in keys:
            _write_nifti(sim[k], grid.affine, out_dir / rel[k])
        items.append({**rel, "brain_voxels": int((sim["label"] > 0).sum()), "lesion_voxels": int(sim["lesion"].sum())})
    else:
        label = sim["label"]
        for z in np.flatnonzero(label.reshape(-1, label.shape[2]).any(0)):
            affine = grid.affine.copy()
            affine[2, 3] += grid.spacing * z
            rel = {k: f"images/{sid}/{sid}_z{z:03d}_{k}.nii.gz" for k in keys}
            for k in keys:
                _write_nifti(np.ascontiguousarray(sim[k][:, :, z]), affine, out_dir / rel[k])
            items.append(
                {
                    **rel,
                    "slice": int(z),
                    "brain_voxels": int((label[:, :, z] > 0).sum()),
                    "lesion_voxels": int(sim["lesion"][:, :, z].sum()),
                }
            )
    for it in items:
        it.update(healthy=not lesions, subject=sid, params=params)
    _write_atomic(record, json.dumps({"key": key, "items": items}, sort_keys=True).encode())
    return [dict(it, section=section) for it in items]


def _files(item: dict) -> list[str]:
    return [v for k, v in item.items() if k in (*CONTRASTS, *CLEAN_KEYS, "label", "lesion")]


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OSError(f"cannot write to the output folder {str(out_dir)!r}: {err.strerror or err}") from None


def prepare_dataset(
    out_dir: str | os.PathLike,
    dim: int = 2,
    size: int | None = None,
    subjects: int | None = None,
    seed: int = 0,
    contrasts: Sequence[str] = CONTRASTS,
    preview: bool = False,
    progress: bool = False,
) -> Path:
    """Render the embedded data set into ``out_dir`` and return the path of its datalist JSON.

    Only what is missing or different is built: a second call with the same arguments only checks the files,
    and subjects whose recorded build key matches are reused when other arguments change.

    Args:
        out_dir: output folder (created if needed).
        dim: 2 (axial slices, every slice holding brain) or 3 (volumes).
        size: voxels per side; default 64 in 2D (64 x 64 slices) and 32 in 3D (32^3).
        subjects: number of synthetic subjects (at least 3); default 40.
        seed: data-set seed; with the other arguments it defines every file byte for byte.
        contrasts: subset of ``("t1w", "t2w", "pd", "flair")``.
        preview: also write ``out_dir/preview.png`` (needs matplotlib).
        progress: show a progress bar over subjects.

    Returns:
        Path of ``out_dir/datalist.json``.

    Raises:
        ValueError: on a bad ``dim``, ``size``, ``subjects``, ``seed`` or contrast.
        OSError: if ``out_dir`` cannot be written.
    """
    if dim not in (2, 3) or isinstance(dim, bool):
        raise ValueError(f"dim must be 2 or 3, got {dim!r}.")
    size = DEFAULT_SIZE[dim] if size is None else _check_int("size", size, 8)
    subjects = DEFAULT_SUBJECTS if subjects is None else _check_int("subjects", subjects, 3)
    seed = _check_int("seed", seed, 0)
    contrasts = _check_contrasts(contrasts)
    out_dir = Path(out_dir)
    _check_writable(out_dir)
    datalist_path = out_dir / _DATALIST
    config = {
        "format": FORMAT_VERSION,
        "dim": dim,
        "size": size,
        "subjects": subjects,
        "seed": seed,
        "contrasts": list(contrasts),
    }
    if not _up_to_date(datalist_path, config):
        grid = make_grid(dim, size)
        sections: dict[str, list[dict]] = {s: [] for s in SECTIONS}
        from tqdm.auto import tqdm

        plan = assign_subjects(subjects, seed)
        for index in tqdm(range(subjects), desc=f"BrainSim {dim}D {size}", unit="subject", disable=not progress):
            section, lesions = plan[index]
            for item in _subject_items(out_dir, index, seed, section, lesions, grid, dim, contrasts):
                sections[item.pop("section")].append(item)
        datalist = {
            "name": "BrainSim",
            "description": "Synthetic multi-contrast brain MRI simulated from the MNI152 2009a template "
            "(monai_diffusion.data); not clinical data.",
            "config": config,
            "grid": {"shape": list(grid.shape), "spacing_mm": grid.spacing, "origin_mm": list(grid.origin)},
            "modality": {c: c.upper() if c != "pd" else "PD" for c in contrasts},
            "labels": {str(k): v for k, v in LABELS.items()},
            "intensity": "each contrast divided per subject by the 99.5th percentile of its lesion-free, noiseless "
            "brain signal, clipped to [0, 1]; background is 0",
            "numTraining": len(sections["training"]),
            "numValidation": len(sections["validation"]),
            "numTest": len(sections["test"]),
            **sections,
        }
        _write_atomic(datalist_path, json.dumps(datalist, indent=1, sort_keys=True).encode())
    if preview:
        from monai_diffusion.data.preview import write_preview

        write_preview(datalist_path, out_dir / _PREVIEW)
    return datalist_path


def _up_to_date(datalist_path: Path, config: dict) -> bool:
    if not datalist_path.is_file():
        return False
    try:
        datalist = json.loads(datalist_path.read_text())
    except (OSError, ValueError):
        return False
    if datalist.get("config") != config:
        return False
    root = datalist_path.parent
    return all((root / p).is_file() for s in SECTIONS for it in datalist.get(s, []) for p in _files(it))


def load_datalist(path: str | os.PathLike, section: str = "training") -> list[dict]:
    """Read one section of a datalist JSON with absolute paths (a thin wrapper over
    :func:`monai.data.load_decathlon_datalist`, which joins the paths to the file's folder).

    Works for the embedded data set and for any user datalist in the same format.

    Args:
        path: the datalist JSON.
        section: ``"training"``, ``"validation"`` or ``"test"`` (any key of the file is accepted).

    Returns:
        The list of item dicts.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file has no such section.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"datalist {str(path)!r} not found; build it with monai_diffusion.data.prepare_dataset."
        )
    return load_decathlon_datalist(path, is_segmentation=True, data_list_key=section, base_dir=path.parent)


def load_transforms(
    keys: Sequence[str] = (*CONTRASTS, "label", "lesion"), extra: Sequence[Callable] = (), reader: str | None = None
) -> Compose:
    """The loading chain used for the embedded data and for users' own NIfTI/DICOM files alike.

    ``LoadImaged`` (the reader MONAI picks for the file: nibabel for NIfTI, pydicom for DICOM, ...) followed by
    ``EnsureChannelFirstd``, then ``extra``.

    Args:
        keys: item keys holding image paths.
        extra: transforms appended after loading (e.g. intensity scaling, crops).
        reader: force a MONAI reader by name, e.g. ``"PydicomReader"`` for folders holding one DICOM series.

    Returns:
        A :class:`monai.transforms.Compose`.
    """
    keys = list(keys)
    return Compose([LoadImaged(keys=keys, reader=reader, image_only=True), EnsureChannelFirstd(keys=keys), *extra])


class BrainSimDataset(CacheDataset):
    """One section of the embedded data set as a :class:`monai.data.CacheDataset`.

    Like :class:`monai.apps.DecathlonDataset`, the data live in a sub-folder of ``root_dir``
    (``brainsim_{dim}d_{size}px_seed{seed}``) and are made on first use, generated locally instead of downloaded.

    Args:
        root_dir: folder holding prepared data sets.
        section: ``"training"``, ``"validation"`` or ``"test"``.
        transform: transforms applied to each item dict (which holds paths), e.g. :func:`load_transforms`;
            None (default) returns the items as they are.
        dim: 2 or 3.
        size: voxels per side (default 64 in 2D, 32 in 3D).
        subjects: number of subjects (default 40).
        seed: data-set seed.
        contrasts: contrasts to build.
        generate: build missing data (the counterpart of ``download=True``); if False the folder must exist.
        healthy_only: keep only items of healthy subjects (e.g. to train anomaly detectors).
        keep_params: keep each item's nested simulation ``params`` (off by default: they differ in structure
            between subjects, so a ``DataLoader`` could not collate them; they stay in the datalist file).
        cache_num, cache_rate, num_workers, progress, copy_cache, as_contiguous, runtime_cache: as in
            :class:`monai.data.CacheDataset`; ``progress`` also drives the build's progress bar.

    Raises:
        ValueError: on a bad section or build argument.
        FileNotFoundError: if ``generate=False`` and the data are missing.
    """

    def __init__(
        self,
        root_dir: str | os.PathLike,
        section: str = "training",
        transform: Sequence[Callable] | Callable | None = None,
        dim: int = 2,
        size: int | None = None,
        subjects: int | None = None,
        seed: int = 0,
        contrasts: Sequence[str] = CONTRASTS,
        generate: bool = True,
        healthy_only: bool = False,
        keep_params: bool = False,
        cache_num: int = sys.maxsize,
        cache_rate: float = 1.0,
        num_workers: int | None = 1,
        progress: bool = True,
        copy_cache: bool = True,
        as_contiguous: bool = True,
        runtime_cache: bool = False,
    ) -> None:
        if section not in SECTIONS:
            raise ValueError(f"section must be one of {list(SECTIONS)}, got {section!r}.")
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim!r}.")
        size = DEFAULT_SIZE[dim] if size is None else _check_int("size", size, 8)
        self.section = section
        self.dataset_dir = Path(root_dir) / f"brainsim_{dim}d_{size}px_seed{seed}"
        datalist_path = self.dataset_dir / _DATALIST
        if generate:
            prepare_dataset(
                self.dataset_dir,
                dim,
                size,
                subjects,
                seed,
                contrasts=contrasts,
                progress=progress and section == "training",
            )
        elif not datalist_path.is_file():
            raise FileNotFoundError(
                f"no prepared data in {str(self.dataset_dir)!r}; pass generate=True or run "
                f"`monai-diffusion data prepare --out {self.dataset_dir} --dim {dim} --size {size}`."
            )
        self.datalist_path = datalist_path
        data = load_datalist(datalist_path, section)
        if healthy_only:
            data = [d for d in data if d["healthy"]]
        if not keep_params:
            data = [{k: v for k, v in d.items() if k != "params"} for d in data]
        super().__init__(
            data=data,
            transform=transform if transform is not None else (),
            cache_num=cache_num,
            cache_rate=cache_rate,
            num_workers=num_workers,
            progress=progress,
            copy_cache=copy_cache,
            as_contiguous=as_contiguous,
            runtime_cache=runtime_cache,
        )

    def get_properties(self, keys: Sequence[str] | str | None = None) -> dict:
        """Properties stored in the datalist header (``config``, ``grid``, ``labels``, ``modality``, ...).

        Args:
            keys: which properties; all non-section entries when None.
        """
        header = {k: v for k, v in json.loads(self.datalist_path.read_text()).items() if k not in SECTIONS}
        if keys is None:
            return header
        keys = [keys] if isinstance(keys, str) else list(keys)
        return {k: header[k] for k in keys if k in header}
