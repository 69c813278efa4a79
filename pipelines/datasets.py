"""Datasets: the embedded demo set, the course's ants-vs-bees set, image folders and CSV files, as one ``ImageSet``."""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from filelock import FileLock

from featurize.images import IMAGE_EXTENSIONS
from featurize.weights import file_sha256
from pipelines.demo import generate_demo
from pipelines.download import (
    ChecksumError,
    DownloadError,
    download_file,
    read_manifest,
    safe_extract,
    write_manifest,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "HYMENOPTERA_URL",
    "ImageSet",
    "default_data_dir",
    "load_dataset",
    "load_image_folder",
    "load_csv",
    "fetch_hymenoptera",
    "generate_demo",
]

logger = logging.getLogger(__name__)

HYMENOPTERA_URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"
HYMENOPTERA_CLASSES = ("ants", "bees")
HYMENOPTERA_VAL_SIZE = 153
SUBSETS = ("train", "val")
BUILTIN_DATASETS = ("demo", "hymenoptera")

_MANIFEST = "manifest.json"


@dataclass
class ImageSet:
    """A labelled image collection.

    Attributes
    ----------
    name : str
        Short name used in reports ("demo", "hymenoptera", a folder or CSV name).
    items : list of str
        Image file paths.
    labels : ndarray of int, shape (n,)
        Index into ``classes`` for each item.
    classes : list of str
        Class names, sorted.
    subset : ndarray of str, shape (n,), or None
        "train" or "val" per item when the set comes with a fixed split, else None.
    root : Path
        Folder the set was loaded from.
    """

    name: str
    items: list[str]
    labels: np.ndarray
    classes: list[str]
    subset: np.ndarray | None
    root: Path

    def __post_init__(self) -> None:
        self.items = [str(item) for item in self.items]
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.classes = list(self.classes)
        self.root = Path(self.root)
        if self.labels.shape != (len(self.items),):
            raise ValueError(f"{self.name}: {len(self.items)} items but labels of shape {self.labels.shape}")
        if len(self.items) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(f"{self.name}: labels must lie in 0..{len(self.classes) - 1}")
        if self.subset is not None:
            self.subset = np.asarray(self.subset, dtype=str)
            if self.subset.shape != (len(self.items),):
                raise ValueError(f"{self.name}: {len(self.items)} items but subset of shape {self.subset.shape}")
            bad = sorted(set(self.subset.tolist()) - set(SUBSETS))
            if bad:
                raise ValueError(f"{self.name}: subset values must be 'train' or 'val'; got {bad}")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def has_split(self) -> bool:
        """Whether the set comes with a fixed train/val split."""
        return self.subset is not None

    def class_counts(self, subset: str | None = None) -> dict[str, int]:
        """Number of images per class, over the whole set or one subset ("train" or "val")."""
        mask = np.ones(len(self), dtype=bool)
        if subset is not None:
            if self.subset is None:
                raise ValueError(f"{self.name} has no fixed split; subset must be None, got {subset!r}")
            if subset not in SUBSETS:
                raise ValueError(f"subset must be one of {SUBSETS}; got {subset!r}")
            mask = self.subset == subset
        counts = np.bincount(self.labels[mask], minlength=len(self.classes))
        return dict(zip(self.classes, counts.tolist()))

    def summary(self) -> str:
        """One line: name, size, classes with counts, and the split if any."""
        counts = ", ".join(f"{name} {n}" for name, n in self.class_counts().items())
        text = f"{self.name}: {len(self)} images, {len(self.classes)} classes ({counts})"
        if self.subset is not None:
            text += f"; train {int((self.subset == 'train').sum())} / val {int((self.subset == 'val').sum())}"
        return text


def default_data_dir() -> Path:
    """Where datasets are stored: ``$CNN_TRANSFER_DATA``, else ``~/.cache/cnn-transfer``."""
    return Path(os.environ.get("CNN_TRANSFER_DATA") or Path.home() / ".cache" / "cnn-transfer").expanduser()


def load_dataset(spec: str | Path, data_dir: str | Path | None = None, verbose: bool = True) -> ImageSet:
    """Load a dataset by name or location.

    Parameters
    ----------
    spec : str or Path
        "demo" (a small generated two-class set), "hymenoptera" (the course's ants vs bees, downloaded once),
        a folder of class subfolders (optionally under ``train/`` and ``val/``), or a CSV file with columns
        ``path,label`` and optionally ``subset`` ("train"/"val"). The names "demo" and "hymenoptera" take
        precedence over folders of that name; write "./demo" for a local folder.
    data_dir : str or Path, optional
        Where "demo" and "hymenoptera" are stored; defaults to :func:`default_data_dir`.
    verbose : bool, default=True
        Log progress and show progress bars.

    Returns
    -------
    ImageSet

    Raises
    ------
    ValueError
        Unknown spec, or a folder/CSV that does not hold a usable two-or-more-class dataset.
    DownloadError
        "hymenoptera" is not on disk and cannot be downloaded; the message says where to put the zip by hand.
    """
    data_dir = default_data_dir() if data_dir is None else Path(data_dir).expanduser()
    if isinstance(spec, str) and spec in BUILTIN_DATASETS:
        if spec == "demo":
            root = generate_demo(data_dir / "demo", verbose=verbose)
        else:
            root = fetch_hymenoptera(data_dir, verbose=verbose)
        imageset = load_image_folder(root, name=spec)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            imageset = load_image_folder(path)
        elif path.is_file() and path.suffix.lower() == ".csv":
            imageset = load_csv(path)
        else:
            raise ValueError(
                f"unknown dataset spec {str(spec)!r}: expected one of {', '.join(map(repr, BUILTIN_DATASETS))}, "
                "an existing folder of class subfolders (optionally inside train/ and val/), "
                "or an existing .csv file with columns path,label[,subset]"
            )
    if verbose:
        logger.info("%s", imageset.summary())
    return imageset


def _list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden files skipped), sorted."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    """Class name → image paths, for the non-hidden subfolders of ``folder`` that hold images."""
    found = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = _list_images(sub)
        if images:
            found[sub.name] = images
    return found


def load_image_folder(root: str | Path, name: str | None = None) -> ImageSet:
    """Load an ImageFolder-style tree: ``root/train/<class>/…`` and ``root/val/<class>/…``, or ``root/<class>/…``.

    Parameters
    ----------
    root : str or Path
        The folder.
    name : str, optional
        Dataset name; defaults to the folder's name.

    Returns
    -------
    ImageSet
        With ``subset`` set when ``root`` has ``train/`` and ``val/`` subfolders.

    Raises
    ------
    ValueError
        No images, fewer than two classes, ``train/`` without ``val/`` (or the reverse), or a class that has no
        training image.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"dataset folder {root} does not exist")
    name = name or root.resolve().name
    has_train, has_val = (root / "train").is_dir(), (root / "val").is_dir()
    if has_train != has_val:
        missing = "val" if has_train else "train"
        raise ValueError(f"{root} has a {'train' if has_train else 'val'}/ folder but no {missing}/ folder")
    if has_train:
        per_subset = {subset: _class_folders(root / subset) for subset in SUBSETS}
        classes = sorted(set(per_subset["train"]) | set(per_subset["val"]))
        no_train = [c for c in classes if c not in per_subset["train"]]
        if no_train:
            raise ValueError(f"{root}: classes {no_train} have images in val/ but none in train/")
    else:
        per_subset = {None: _class_folders(root)}
        classes = sorted(per_subset[None])
    _check_classes(root, classes, sum(len(v) for found in per_subset.values() for v in found.values()))
    index = {c: i for i, c in enumerate(classes)}
    items, labels, subsets = [], [], []
    for subset, found in per_subset.items():
        for cls, paths in found.items():
            items += [str(p) for p in paths]
            labels += [index[cls]] * len(paths)
            subsets += [subset] * len(paths)
    return ImageSet(name, items, np.array(labels), classes, np.array(subsets) if has_train else None, root)


def _check_classes(source: Path, classes: list[str], n_images: int) -> None:
    if n_images == 0:
        raise ValueError(
            f"{source} holds no images (extensions {', '.join(sorted(IMAGE_EXTENSIONS))}, one subfolder per class)"
        )
    if len(classes) < 2:
        raise ValueError(f"{source} holds a single class {classes}; a classification dataset needs at least two")


def load_csv(path: str | Path, name: str | None = None) -> ImageSet:
    """Load a CSV with columns ``path,label`` and optionally ``subset`` ("train"/"val").

    The file is read as UTF-8 (a byte-order mark is skipped; bytes that are not UTF-8 are kept as in the file
    system's names); fields holding commas, quotes or newlines must be quoted. Relative paths are resolved against
    the CSV's folder; a path is taken as written, blanks around it are dropped only when no file has the name as
    written. Labels are class names (whole numbers are read as names but sorted numerically).

    Parameters
    ----------
    path : str or Path
        The CSV file.
    name : str, optional
        Dataset name; defaults to the file's stem.

    Returns
    -------
    ImageSet

    Raises
    ------
    ValueError
        Missing columns, missing image files, bad subset values, or fewer than two classes.
    """
    path = Path(path).expanduser()
    try:
        table = pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding="utf-8-sig", encoding_errors="surrogateescape"
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as exc:
        raise ValueError(
            f"{path} cannot be read as a CSV with columns path,label[,subset] ({exc}); quote fields that hold "
            "commas, quotes or newlines"
        ) from exc
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}; expected columns path,label and optionally subset")
    names = table["label"].str.strip()
    empty = np.flatnonzero((names == "").to_numpy() | (table["path"] == "").to_numpy())
    if len(empty):
        raise ValueError(
            f"{path}: {len(empty)} row(s) have an empty path or label, e.g. data row(s) {(empty[:3] + 1).tolist()}; "
            "quote fields that hold commas, quotes or newlines"
        )
    base = path.resolve().parent
    items = [str(_resolve_listed(base, raw)) for raw in table["path"]]
    absent = [item for item in items if not _is_file(Path(item))]
    if absent:
        raise ValueError(f"{path}: {len(absent)} image file(s) do not exist, e.g. {absent[:3]}")
    unique = set(names)
    numeric = all(_INTEGER.fullmatch(n) for n in unique)
    classes = sorted(unique, key=lambda n: (int(n), n)) if numeric else sorted(unique)
    _check_classes(path, classes, len(items))
    subset = None
    if "subset" in table.columns:
        subset = table["subset"].str.strip().str.lower().to_numpy(dtype=str)
        bad = sorted(set(subset.tolist()) - set(SUBSETS))
        if bad:
            raise ValueError(f"{path}: column subset must hold 'train' or 'val'; got {bad}")
        for required in SUBSETS:
            if not (subset == required).any():
                raise ValueError(f"{path}: column subset has no {required!r} row")
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[n] for n in names])
    return ImageSet(name or path.stem, items, labels, classes, subset, base)


_INTEGER = re.compile(r"[+-]?[0-9]+")


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for names the OS refuses (too long, NUL bytes) instead of raising."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _resolve_listed(base: Path, raw: str) -> Path:
    """A CSV path cell against ``base``: as written when that file exists, else with surrounding blanks removed."""
    for text in (raw, raw.strip()):
        candidate = Path(text)
        candidate = candidate if candidate.is_absolute() else base / candidate
        if _is_file(candidate):
            return candidate
    return candidate


def fetch_hymenoptera(data_dir: str | Path | None = None, url: str | None = None, verbose: bool = True) -> Path:
    """Download (once) and extract the ants-vs-bees set; return the folder holding ``train/`` and ``val/``.

    The zip goes to ``data_dir/hymenoptera/hymenoptera_data.zip``. It is extracted (within the limits of
    :func:`~pipelines.download.safe_extract`) into a staging folder whose layout (train/val × ants/bees, 153 val
    images) is verified before it replaces ``extracted/``. No official checksum is published, so the zip's sha256
    is recorded in ``data_dir/hymenoptera/manifest.json`` (written atomically) only once the zip was extracted and
    validated, and checked on every later use and re-download; a wrong or truncated zip records nothing, so the
    genuine one can be placed afterwards.

    Parameters
    ----------
    data_dir : str or Path, optional
        Defaults to :func:`default_data_dir`.
    url : str, optional
        Where to download from; defaults to :data:`HYMENOPTERA_URL`.
    verbose : bool, default=True
        Show a download progress bar.

    Returns
    -------
    Path

    Raises
    ------
    DownloadError
        No network: the message names the path where the zip can be placed by hand.
    ChecksumError
        The zip differs from the one recorded in the manifest.
    ValueError
        The archive is unsafe, over a size limit or does not have the expected layout, or the manifest is corrupt;
        the message names the file and how to fix it.
    """
    url = url or HYMENOPTERA_URL
    base = (default_data_dir() if data_dir is None else Path(data_dir).expanduser()) / "hymenoptera"
    base.mkdir(parents=True, exist_ok=True)
    zip_path, manifest_path, extracted = base / "hymenoptera_data.zip", base / _MANIFEST, base / "extracted"
    with FileLock(str(base / ".lock")):
        manifest = _hymenoptera_manifest(manifest_path)
        recorded = manifest.get("sha256")
        previous = extracted / manifest["root"] if recorded is not None else None
        if previous is not None and not zip_path.exists() and _hymenoptera_problem(previous) is None:
            return previous
        if not zip_path.exists():
            try:
                download_file(url, zip_path, expected_sha256=recorded, progress=verbose)
            except DownloadError as exc:
                raise DownloadError(
                    f"the hymenoptera dataset is not on disk and could not be downloaded ({exc}). Without network, "
                    f"download {url} on another machine and copy it to {zip_path}, then run again."
                ) from exc
            except ChecksumError as exc:
                raise ChecksumError(
                    f"{exc}. It differs from the sha256 recorded in {manifest_path} on first use; "
                    "delete that manifest to accept a new version of the dataset."
                ) from exc
        actual = file_sha256(zip_path)
        if recorded is not None and actual != recorded:
            raise ChecksumError(
                f"{zip_path} has sha256 {actual}, but {manifest_path} recorded {recorded} on first use; delete the zip "
                "to download it again, or delete the manifest to accept this file"
            )
        if previous is not None and _hymenoptera_problem(previous) is None:
            return previous
        root = _extract_hymenoptera(zip_path, extracted)
        manifest = {
            "url": url,
            "sha256": actual,
            "size": zip_path.stat().st_size,
            "root": root.relative_to(extracted).as_posix(),
            "complete": True,
        }
        write_manifest(manifest_path, manifest)
    return root


def _hymenoptera_manifest(path: Path) -> dict:
    """The manifest of a validated extraction, or ``{}``; an unfinished record (older versions) is not trusted."""
    manifest = read_manifest(path)
    if not manifest.get("complete"):
        if manifest:
            logger.warning("%s records no validated extraction; checking the zip from scratch", path)
        return {}
    sha256, root = manifest.get("sha256"), manifest.get("root")
    fix = "delete it and run again (the zip is then checked from scratch and its sha256 recorded anew)"
    if not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{64}", sha256)):
        raise ValueError(f"manifest {path} is corrupt: 'sha256' must be 64 hex digits, got {sha256!r}; {fix}")
    if not isinstance(root, str) or PurePosixPath(root).is_absolute() or ".." in PurePosixPath(root).parts:
        raise ValueError(f"manifest {path} is corrupt: 'root' must be a relative folder, got {root!r}; {fix}")
    return manifest


def _extract_hymenoptera(zip_path: Path, extracted: Path) -> Path:
    """Extract into a staging folder, check the layout there, then swap it in; return the split root."""
    staging = extracted.with_name(extracted.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        safe_extract(zip_path, staging)
        root = _find_split_root(staging)
        problem = _hymenoptera_problem(root)
        if problem:
            raise ValueError(
                f"{zip_path} does not hold the expected ants-vs-bees layout: {problem}; delete it (or replace it "
                "with the genuine hymenoptera_data.zip) and run again"
            )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    relative = root.relative_to(staging)
    if extracted.exists():
        shutil.rmtree(extracted)
    os.replace(staging, extracted)
    return extracted / relative


def _find_split_root(folder: Path) -> Path:
    """``folder`` or its single subfolder, whichever holds ``train/`` and ``val/``."""
    if (folder / "train").is_dir():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))]
    return subs[0] if len(subs) == 1 and (subs[0] / "train").is_dir() else folder


def _hymenoptera_problem(root: Path) -> str | None:
    for subset in SUBSETS:
        for cls in HYMENOPTERA_CLASSES:
            if not (root / subset / cls).is_dir():
                return f"missing folder {subset}/{cls}"
    n_val = sum(len(_list_images(root / "val" / cls)) for cls in HYMENOPTERA_CLASSES)
    if n_val != HYMENOPTERA_VAL_SIZE:
        return f"val/ holds {n_val} images, expected {HYMENOPTERA_VAL_SIZE}"
    return None
