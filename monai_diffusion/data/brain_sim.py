"""Build, list and load the embedded offline brain MRI data set ("BrainSim").

:func:`prepare_dataset` renders synthetic subjects (:mod:`monai_diffusion.data.simulate`) to NIfTI files and writes
a MONAI datalist JSON with ``training``, ``validation`` and ``test`` sections; :class:`BrainSimDataset` is a
:class:`monai.data.CacheDataset` over one section, in the manner of :class:`monai.apps.DecathlonDataset` but
generating instead of downloading. The files are ordinary NIfTI, read with :class:`monai.transforms.LoadImaged`
exactly as a user's own data would be (see :func:`load_transforms`).

Layout of a prepared folder::

    OUT/datalist.json                      the datalist (paths relative to OUT), the build configuration and the
                                           sha256 of every subject record
    OUT/images/sub-007/subject.json        what subject 7 was built from, its items and the size and sha256 of each
                                           of its files (used to skip rebuilding it and to check its files)
    OUT/images/sub-007/sub-007_z031_t1w.nii.gz   2D: one file per axial slice and contrast (plus _label, _lesion)
    OUT/images/sub-007/sub-007_t1w.nii.gz        3D: one volume per contrast (plus _label, _lesion)
    OUT/preview.png                        with ``preview=True`` (marked as ours by a PNG ``tEXt`` chunk)

A build first removes the datalist (and a stale preview of ours), then each subject's record before touching its
files, and publishes the new datalist last, so that no datalist ever vouches for files that were changed after it
was written; an interrupted build leaves no datalist, and the next call repairs the folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import struct
import sys
import zlib
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
_RECORD = "subject.json"
#: ``tEXt`` chunk (keyword, text) that marks a preview PNG as written by :func:`prepare_dataset`
_PREVIEW_MARK = (b"Software", b"monai_diffusion.data.prepare_dataset (BrainSim preview)")

logger = logging.getLogger(__name__)


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


def _nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    """``array`` as a gzipped NIfTI-1 file with a zero gzip timestamp, so equal inputs give equal bytes.

    The header comes from nibabel; the file is assembled here because nibabel's writer costs about three times
    as much per small file, and the 2D set has thousands of them.
    """
    import gzip

    blob = _nifti_header(array.shape, array.dtype, affine) + np.asarray(array).tobytes(order="F")
    return gzip.compress(blob, compresslevel=1, mtime=0)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename, so a concurrent reader never sees a partial file.

    Used for the JSON records and the preview, which are written after the files they describe; the images
    themselves are written directly (renaming thousands of small files costs seconds of system time): the record
    that vouches for them is removed before and written after them.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` unless the file already holds exactly these bytes; True if it was written.

    Leaves intact files untouched (a repair rewrites only what is broken, and a reader of an intact file is never
    disturbed).
    """
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except OSError:
        pass
    path.write_bytes(data)
    return True


def _bad_files(root: Path, manifest: dict, content: bool) -> list[str]:
    """Files of ``manifest`` (``{relative path: {"size", "sha256"}}``) that are missing or differ from it.

    Args:
        root: the data set folder.
        manifest: the recorded files.
        content: compare sha256 hashes (reads every file); otherwise only that each is a regular file of the
            recorded size.
    """
    bad = []
    base = os.fspath(root)
    for rel, meta in manifest.items():
        path = os.path.join(base, rel)  # not pathlib: its overhead is most of a no-op call's time
        try:
            if content:
                with open(path, "rb") as f:
                    data = f.read()
                ok = len(data) == meta["size"] and _sha256(data) == meta["sha256"]
            else:
                st = os.stat(path)
                ok = stat.S_ISREG(st.st_mode) and st.st_size == meta["size"]
        except (OSError, TypeError, KeyError):
            ok = False
        if not ok:
            bad.append(rel)
    return bad


def _subject_key(
    index: int, seed: int, lesions: bool, shape: Sequence[int], spacing: float, dim: int, contrasts: Sequence[str]
) -> dict:
    """What a subject's files are built from: equal keys give equal files."""
    return {
        "format": FORMAT_VERSION,
        "subject_seed": subject_seed(seed, index),
        "dim": dim,
        "shape": list(shape),
        "spacing": spacing,
        "contrasts": list(contrasts),
        "lesions": lesions,
    }


def _record_body(key: dict, items: list[dict], files: dict[str, dict]) -> bytes:
    return json.dumps({"files": files, "items": items, "key": key}, sort_keys=True).encode()


def _record_consistent(record: object, check_digest: bool = True) -> bool:
    """A subject record of the current layout whose manifest lists exactly the files of its items and, with
    ``check_digest``, unedited (its own sha256 matches; not needed where the datalist vouches for its bytes)."""
    if not isinstance(record, dict) or not isinstance(record.get("items"), list):
        return False
    if check_digest:
        try:
            if record.get("sha256") != _sha256(_record_body(record["key"], record["items"], record["files"])):
                return False
        except (KeyError, TypeError, ValueError):
            return False
    files = record.get("files")
    if not isinstance(files, dict):
        return False  # a record written before files were recorded: its files cannot be checked
    listed = {p for it in record["items"] if isinstance(it, dict) for p in _files(it)}
    return listed == set(files) and all(isinstance(it, dict) for it in record["items"])


def _subject_items(
    out_dir: Path, index: int, seed: int, section: str, lesions: bool, grid: Grid, dim: int, contrasts: tuple[str, ...]
) -> tuple[list[dict], str, bool]:
    """Build, repair or reuse one subject's files.

    A subject is reused when its record's key matches and every recorded file has its recorded size and sha256;
    otherwise its record is removed, the subject is simulated again, files whose bytes differ are written, files of
    an earlier build that no longer belong to it are removed, and the record is written last.

    Returns:
        The subject's datalist items (paths relative to ``out_dir``, each with its ``section``), the sha256 of its
        record, and whether anything was rebuilt.
    """
    sid = f"sub-{index:03d}"
    folder = out_dir / "images" / sid
    key = _subject_key(index, seed, lesions, grid.shape, grid.spacing, dim, contrasts)
    record = folder / _RECORD
    if record.is_file():
        try:
            raw = record.read_bytes()
            stored = json.loads(raw)
        except (OSError, ValueError):
            raw, stored = b"", {}
        if isinstance(stored, dict) and stored.get("key") == key and _record_consistent(stored):
            bad = _bad_files(out_dir, stored["files"], content=True)
            if not bad:
                return [dict(it, section=section) for it in stored["items"]], _sha256(raw), False
            logger.warning(
                "BrainSim: %s: %d file(s) missing or not matching their recorded size and sha256 (first: %s); "
                "rebuilding the subject.",
                sid,
                len(bad),
                bad[0],
            )
    folder.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)  # an interrupted rebuild must not leave a record that vouches for mixed files
    sim = simulate_subject(subject_seed(seed, index), grid, lesions=lesions, contrasts=contrasts, clean=True)
    params = sim["params"]
    keys = (*contrasts, *(f"{c}_clean" for c in contrasts), "label", "lesion")
    items: list[dict] = []
    manifest: dict[str, dict] = {}

    def put(rel: str, array: np.ndarray, affine: np.ndarray) -> None:
        data = _nifti_bytes(array, affine)
        _write_if_changed(out_dir / rel, data)
        manifest[rel] = {"sha256": _sha256(data), "size": len(data)}

    if dim == 3:
        rel = {k: f"images/{sid}/{sid}_{k}.nii.gz" for k in keys}
        for k in keys:
            put(rel[k], sim[k], grid.affine)
        items.append({**rel, "brain_voxels": int((sim["label"] > 0).sum()), "lesion_voxels": int(sim["lesion"].sum())})
    else:
        label = sim["label"]
        for z in np.flatnonzero(label.reshape(-1, label.shape[2]).any(0)):
            affine = grid.affine.copy()
            affine[2, 3] += grid.spacing * z
            rel = {k: f"images/{sid}/{sid}_z{z:03d}_{k}.nii.gz" for k in keys}
            for k in keys:
                put(rel[k], np.ascontiguousarray(sim[k][:, :, z]), affine)
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
    # images of an earlier build of this subject that this build does not list (another seed covers other slices)
    for path in folder.glob(f"{sid}_*.nii.gz"):
        if f"images/{sid}/{path.name}" not in manifest:
            path.unlink()
    # the record's own sha256 (of its other entries) reveals an edited record when no datalist vouches for it
    body = _record_body(key, items, manifest)
    raw = json.dumps({"files": manifest, "items": items, "key": key, "sha256": _sha256(body)}, sort_keys=True).encode()
    _write_atomic(record, raw)
    return [dict(it, section=section) for it in items], _sha256(raw), True


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


def _read_datalist(path: Path) -> tuple[str, dict]:
    """Whose is ``path``: ``("absent", {})``, ``("ours", datalist)`` for a datalist written by this or an earlier
    :func:`prepare_dataset` (``"name": "BrainSim"`` and a ``config`` with a ``format``), else ``("foreign", {})``."""
    if not path.exists():
        return "absent", {}
    try:
        datalist = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return "foreign", {}
    if (
        isinstance(datalist, dict)
        and datalist.get("name") == "BrainSim"
        and isinstance(datalist.get("config"), dict)
        and "format" in datalist["config"]
    ):
        return "ours", datalist
    return "foreign", {}


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """``[(type, payload)]`` of a PNG file, or None if ``data`` is not one (CRCs are not checked)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    chunks, pos = [], 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
        if kind == b"IEND":
            return chunks
    return None


def _mark_png(data: bytes) -> bytes:
    """``data`` (a PNG) with the :data:`_PREVIEW_MARK` ``tEXt`` chunk inserted before ``IEND``."""
    payload = b"tEXt" + _PREVIEW_MARK[0] + b"\x00" + _PREVIEW_MARK[1]
    chunk = struct.pack(">I", len(payload) - 4) + payload + struct.pack(">I", zlib.crc32(payload) & 0xFFFFFFFF)
    end = data.rindex(b"IEND") - 4
    return data[:end] + chunk + data[end:]


def _is_our_preview(path: Path) -> bool:
    try:
        chunks = _png_chunks(path.read_bytes())
    except OSError:
        return False
    return chunks is not None and (b"tEXt", b"\x00".join(_PREVIEW_MARK)) in chunks


def _not_ours(path: Path, what: str) -> FileExistsError:
    return FileExistsError(
        f"{str(path)!r} exists and was not written by prepare_dataset ({what}); refusing to overwrite it. Move it "
        f"away, choose another output folder, or pass overwrite=True (--overwrite on the command line) to replace it."
    )


def prepare_dataset(
    out_dir: str | os.PathLike,
    dim: int = 2,
    size: int | None = None,
    subjects: int | None = None,
    seed: int = 0,
    contrasts: Sequence[str] = CONTRASTS,
    preview: bool = False,
    progress: bool = False,
    verify: bool = False,
    overwrite: bool = False,
) -> Path:
    """Render the embedded data set into ``out_dir`` and return the path of its datalist JSON.

    Only what is missing or different is built. A second call with the same arguments only checks the folder:
    the datalist and every subject record (sha256), and that every file exists with its recorded size
    (``verify=True`` also compares every file's sha256). If anything disagrees, every subject's files are
    checked by sha256 and the subjects that do not match are rebuilt (byte for byte as a clean build would write
    them). When arguments change, subjects whose recorded build key still matches are reused.

    Builds are safe to interrupt: the old datalist is removed before any file changes and the new one is written
    last, so a datalist never vouches for files it does not describe.

    Args:
        out_dir: output folder (created if needed).
        dim: 2 (axial slices, every slice holding brain) or 3 (volumes).
        size: voxels per side; default 64 in 2D (64 x 64 slices) and 32 in 3D (32^3).
        subjects: number of synthetic subjects (at least 3); default 40.
        seed: data-set seed; with the other arguments it defines every file byte for byte.
        contrasts: subset of ``("t1w", "t2w", "pd", "flair")``.
        preview: also write ``out_dir/preview.png`` (needs matplotlib).
        progress: show a progress bar over subjects.
        verify: check the content (sha256) of every file even when all sizes match, and repair what differs.
        overwrite: replace a ``datalist.json`` (and, with ``preview``, a ``preview.png``) in ``out_dir`` that
            :func:`prepare_dataset` did not write; without it such files are refused.

    Returns:
        Path of ``out_dir/datalist.json``.

    Raises:
        ValueError: on a bad ``dim``, ``size``, ``subjects``, ``seed`` or contrast.
        FileExistsError: if ``out_dir`` holds a datalist or (with ``preview``) a preview that is not ours and
            ``overwrite`` is False.
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
    preview_path = out_dir / _PREVIEW
    config = {
        "format": FORMAT_VERSION,
        "dim": dim,
        "size": size,
        "subjects": subjects,
        "seed": seed,
        "contrasts": list(contrasts),
    }
    plan = assign_subjects(subjects, seed)
    owner, old = _read_datalist(datalist_path)
    if owner == "foreign" and not overwrite:
        raise _not_ours(datalist_path, "not a BrainSim datalist")
    same_data = owner == "ours" and old.get("config") == config  # the data keep (or regain) their current content
    foreign_preview = preview_path.exists() and not _is_our_preview(preview_path)
    if preview and foreign_preview and not overwrite and not same_data:
        # (with same_data a preview from before previews were marked is accepted if it is re-rendered identically)
        raise _not_ours(preview_path, "no BrainSim preview mark")
    if owner != "ours" or not _up_to_date(out_dir, old, config, plan, content=verify):
        datalist_path.unlink(missing_ok=True)  # first: no datalist may vouch for files while they change
        if not same_data and preview_path.exists() and not foreign_preview:
            preview_path.unlink()  # our preview of other data
        grid = make_grid(dim, size)
        sections: dict[str, list[dict]] = {s: [] for s in SECTIONS}
        records: dict[str, str] = {}
        rebuilt = 0
        from tqdm.auto import tqdm

        for index in tqdm(range(subjects), desc=f"BrainSim {dim}D {size}", unit="subject", disable=not progress):
            section, lesions = plan[index]
            items, digest, changed = _subject_items(out_dir, index, seed, section, lesions, grid, dim, contrasts)
            for item in items:
                sections[item.pop("section")].append(item)
            records[f"images/sub-{index:03d}/{_RECORD}"] = digest
            rebuilt += changed
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
            "records": records,
            "numTraining": len(sections["training"]),
            "numValidation": len(sections["validation"]),
            "numTest": len(sections["test"]),
            **sections,
        }
        _write_atomic(datalist_path, json.dumps(datalist, indent=1, sort_keys=True).encode())  # last: publish
        logger.info("BrainSim: %s: %d subject(s) built, %d reused.", out_dir, rebuilt, subjects - rebuilt)
    if preview:
        _write_preview(datalist_path, preview_path, replace_foreign=overwrite)
    return datalist_path


def _write_preview(datalist_path: Path, preview_path: Path, replace_foreign: bool) -> None:
    """Render the preview, mark it as ours and publish it, refusing to replace a foreign file that differs."""
    from monai_diffusion.data.preview import write_preview

    tmp = preview_path.with_name(f".{preview_path.stem}.{os.getpid()}.tmp.png")  # matplotlib needs the suffix
    try:
        write_preview(datalist_path, tmp)
        data = tmp.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    marked = _mark_png(data)
    if preview_path.exists() and not replace_foreign and not _is_our_preview(preview_path):
        try:
            current = preview_path.read_bytes()
        except OSError:
            current = b""
        if current not in (data, marked):  # identical content (an unmarked preview of an earlier version) is ours
            raise _not_ours(preview_path, "no BrainSim preview mark")
    _write_atomic(preview_path, marked)


def _up_to_date(out_dir: Path, datalist: dict, config: dict, plan: list[tuple[str, bool]], content: bool) -> bool:
    """Whether ``datalist`` (ours) describes the folder built with ``config``: the sha256 of every subject record
    as listed, each record's key as expected, the datalist items equal to the records' items in the planned
    sections, and every recorded file present with its recorded size (and sha256 with ``content``)."""
    if datalist.get("config") != config:
        return False
    records, grid = datalist.get("records"), datalist.get("grid")
    if not isinstance(records, dict) or not isinstance(grid, dict):
        return False  # written before records were kept: cannot be checked
    sids = [f"sub-{i:03d}" for i in range(config["subjects"])]
    if set(records) != {f"images/{sid}/{_RECORD}" for sid in sids}:
        return False
    listed: dict[object, list[tuple[str, dict]]] = {}
    for section in SECTIONS:
        items = datalist.get(section)
        if not isinstance(items, list):
            return False
        for it in items:
            listed.setdefault(it.get("subject") if isinstance(it, dict) else None, []).append((section, it))
    if set(listed) != set(sids):
        return False
    try:
        for index, sid in enumerate(sids):
            rel = f"images/{sid}/{_RECORD}"
            raw = (out_dir / rel).read_bytes()
            if _sha256(raw) != records[rel]:
                return False
            record = json.loads(raw)
            section, lesions = plan[index]
            key = _subject_key(
                index, config["seed"], lesions, grid["shape"], grid["spacing_mm"], config["dim"], config["contrasts"]
            )
            if not _record_consistent(record, check_digest=False) or record.get("key") != key:
                return False
            if listed[sid] != [(section, it) for it in record["items"]]:
                return False
            if _bad_files(out_dir, record["files"], content):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


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
