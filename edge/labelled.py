"""Labelled frames for evaluation and validation: ``DIR/<class>/...`` (any depth below the class
folder), a top-level folder per label.

A top-level folder named like one of the model's classes carries that label; ``--map
FOLDER=CLASS`` labels other folders (e.g. ``crowd_ground=crowd``); folders that are neither are
skipped and reported (e.g. ``borderline``). Hidden folders and files are ignored. Truth is binary:
the positive class (crowd) or not.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from edge.files import images_in, images_under

GROUP_BY = ("folder", "prefix")


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    rel: str            # path relative to the data folder, with forward slashes
    label: str          # the class (after --map)
    truth: int          # 1: the positive class


@dataclass
class Listing:
    images: List[LabelledImage]
    skipped_folders: Dict[str, int]     # folder -> images in it (neither a class nor mapped)
    loose_files: int                    # images directly in the data folder (no class folder)


def parse_map(pairs: Optional[Sequence[str]], class_names: Sequence[str]) -> Dict[str, str]:
    """``["crowd_ground=crowd", ...]`` -> {folder: class}; ValueError names a bad pair."""
    out: Dict[str, str] = {}
    for pair in pairs or ():
        folder, sep, cls = str(pair).partition("=")
        folder, cls = folder.strip(), cls.strip()
        if not sep or not folder or not cls or "/" in folder:
            raise ValueError(f"--map {pair!r}: expected FOLDER=CLASS (a top-level folder of the data)")
        if cls not in class_names:
            raise ValueError(f"--map {pair!r}: {cls!r} is not one of the model's classes {list(class_names)}")
        out[folder] = cls
    return out


def list_labelled(root, class_names: Sequence[str], positive: str,
                  mapping: Optional[Mapping[str, str]] = None) -> Listing:
    """Every labelled image under ``root``; ValueError (naming the folder) when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data folder not found: {root}")
    mapping = dict(mapping or {})
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    missing = sorted(set(mapping) - {p.name for p in folders})
    if missing:
        raise ValueError(f"--map names folder(s) {', '.join(missing)} that {root} does not have")
    images: List[LabelledImage] = []
    skipped: Dict[str, int] = {}
    for folder in folders:
        label = mapping.get(folder.name, folder.name if folder.name in class_names else None)
        files = images_under(folder)
        if label is None:
            skipped[folder.name] = len(files)
            continue
        images += [LabelledImage(f, f.relative_to(root).as_posix(), label, int(label == positive))
                   for f in files]
    loose = len(images_in(root))
    if not images:
        raise ValueError(f"no labelled images in {root}: expected {root}/<class>/... with <class> one "
                         f"of {list(class_names)} (or --map FOLDER=CLASS); found folders "
                         f"{[p.name for p in folders] or 'none'}")
    return Listing(images, skipped, loose)


def notes(listing: Listing, root) -> List[str]:
    """What was left out, one line each (printed once, recorded in reports)."""
    out = [f"skipped folder {name}/ ({n} images): neither a class of the model nor --map'ped"
           for name, n in listing.skipped_folders.items()]
    if listing.loose_files:
        out.append(f"skipped {listing.loose_files} image(s) directly in {root}: no class folder")
    return out


def group_of(image: LabelledImage, how: str) -> str:
    """``folder``: the folder the image sits in, relative to the data folder; ``prefix``: its file
    name up to the second underscore (``aerial_dronergbt_plaza.png`` -> ``aerial_dronergbt``)."""
    if how not in GROUP_BY:
        raise ValueError(f"--group-by {how!r} not in {GROUP_BY}")
    if how == "folder":
        return image.rel.rsplit("/", 1)[0]
    stem = Path(image.rel).stem
    parts = stem.split("_")
    return "_".join(parts[:2]) if len(parts) > 2 else stem


def by_group(images: Sequence[LabelledImage], how: str) -> Dict[str, List[int]]:
    """Group name -> indices into ``images``, groups sorted by name."""
    groups: Dict[str, List[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(group_of(im, how), []).append(i)
    return dict(sorted(groups.items()))

