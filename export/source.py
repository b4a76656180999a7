"""What an export starts from, read once: a checkpoint or an ONNX file, its contract metadata,
and the samples the gates and the INT8 calibration use, drawn only when a stage asks for them.

:class:`ExportSource` opens ``model.pt`` (the model and its checkpoint dict, loaded once) or
``model.onnx`` (its contract metadata; torch is never imported on that path). It then hands out

* :meth:`ExportSource.check_samples`: the parity samples (``--check-data DIR``, else the first
  ``n`` images of the model's own test split, else random inputs, and the report says why);
* :meth:`ExportSource.test_split`: the whole labelled test split (the INT8 accuracy report);
* :meth:`ExportSource.calibration_set`: the INT8 calibration images (``--calib-data DIR``, else
  a seeded subset of the training split).

The checkpoint only *names* its dataset. A built-in one is read from its default place,
read-only: the config's ``data`` folder, ``data_root``, ``download`` flag and generator settings
are never followed, so a crafted checkpoint cannot make export read a folder of its choosing,
generate images or download anything. Other data comes through ``--check-data`` /
``--calib-data``. crowd_synth, an image folder in that cache, is listed once per split and only
the images drawn are decoded, each at most once (at paper size the splits hold 20,000 PNGs, an
int8 export uses the 6,000 test images and 512 training images); the other built-in sets are
arrays already and load whole, once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from edge import contract as C
from export import ExportInputError
from export.parity import Samples, folder_samples, random_samples, uint8_samples

CALIBRATION_SEED = 0          # the training images a calibration draws are the same every run


def read_contract_metadata(onnx_path) -> Dict[str, Any]:
    """The decoded contract metadata (``edge_students.*`` keys, :mod:`edge.contract`) of an ONNX
    file, read from its protobuf by the runtime's own reader (edge/onnx_wire.py: no ``onnx``
    package, no torch). A missing or unreadable file, or one lacking the contract's keys, raises
    :class:`ExportInputError` naming it."""
    from edge.onnx_wire import model_metadata

    path = Path(onnx_path)
    try:
        return C.decode_metadata(model_metadata(path))
    except FileNotFoundError as e:
        raise ExportInputError(str(e)) from None
    except ValueError as e:
        message = str(e) if str(path) in str(e) else f"{path}: {e}"
        raise ExportInputError(message) from None


class _NoData(Exception):
    """The checkpoint has no built-in data export may read; the message says why."""


def _folder(root, pre: C.Preprocess, n: int, flag: str, seed: int = 0) -> Samples:
    try:
        return folder_samples(root, pre, n, seed)
    except FileNotFoundError as e:
        raise ExportInputError(f"{flag}: {e}") from None


def _check_size(data_size: Sequence[int], model_size: Sequence[int]) -> None:
    if tuple(data_size) != tuple(model_size):
        raise _NoData(f"its data now has size {tuple(data_size)}, model {model_size}")


def _crowd_synth_split(cfg: Dict[str, Any], name: str, model_size) -> _FolderSplit:
    """A split of the crowd_synth folder in the default cache, listed, nothing decoded yet; never
    generated here (that is training's job)."""
    from train.data.crowd_synth import PAPER_TRAIN_PER_CLASS, VERSIONS, cache_folder, is_complete
    from train.data.folder import list_classes, split_files

    per_class, seed = cfg.get("synth_size") or PAPER_TRAIN_PER_CLASS, cfg.get("synth_seed") or 0
    version = cfg.get("synth_version", 2)            # runs from before v3 did not record it
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (per_class, seed)):
        raise ValueError(f"crowd_synth size/seed {per_class!r}/{seed!r} are not ints")
    if version not in VERSIONS:
        raise ValueError(f"crowd_synth version {version!r} in the checkpoint is not one of {VERSIONS}")
    folder = cache_folder(per_class, seed, version=version)
    if not is_complete(folder, per_class, seed, version):
        raise FileNotFoundError(f"crowd_synth v{version} (seed {seed}, {per_class}/class) is not "
                                f"generated at {folder}; pass --check-data DIR")
    # crowd_synth's own default size (train/data/builtin.py) when the run did not set one
    size = int(cfg.get("input_size") or 128)
    _check_size((size, size), model_size)
    probe = C.Preprocess(size=(size, size), mean=(0.0,) * 3, std=(1.0,) * 3)  # resize only
    files = split_files(folder / name, list_classes(folder / "train"))
    return _FolderSplit(files, probe, f"{folder.name}/{name}")


class _ArraySplit:
    """A split already in memory (uint8 NCHW, labels)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(list(idx), dtype=np.int64)
        return self.x[idx], self.y[idx]


class _FolderSplit:
    """A split of an image folder: its (file, label) list, each image decoded when first taken,
    with train's own decoder and resize (train/data/folder.py), and kept."""

    def __init__(self, files: List[Tuple[Path, int]], probe: C.Preprocess, where: str) -> None:
        self.files, self.probe, self.where = files, probe, where
        self._decoded: Dict[int, np.ndarray] = {}     # file index -> uint8 CHW
        self._corrupt: Set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def take(self, idx: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
        """The decodable images among files ``idx``, in that order, and their labels."""
        from train.data import DataError
        from train.data.folder import decode_files

        idx = [int(i) for i in idx]
        todo = [i for i in idx if i not in self._decoded and i not in self._corrupt]
        if todo:
            # decode_files keeps each pair's second item with its image: here the file's index
            try:
                x, kept, _ = decode_files([(self.files[i][0], i) for i in todo], self.probe,
                                          desc=f"decode {self.where}", where=self.where)
            except DataError:                        # not one of them decodes
                x, kept = np.empty((0,)), np.empty((0,), np.int64)
            else:
                x, kept = x.numpy(), kept.numpy()
            self._decoded.update(zip(kept.tolist(), x))
            self._corrupt.update(set(todo) - set(kept.tolist()))
        good = [i for i in idx if i in self._decoded]
        if not good:
            raise ExportInputError(f"{self.where}: none of the {len(idx)} images drawn decodes")
        return (np.stack([self._decoded[i] for i in good]),
                np.array([self.files[i][1] for i in good], dtype=np.int64))


_Split = Union[_ArraySplit, _FolderSplit]


class ExportSource:
    """A checkpoint or an exported ONNX, opened once; samples are drawn from it on demand."""

    def __init__(self, path: Path, *, checkpoint: Optional[Dict[str, Any]] = None, model=None,
                 metadata: Optional[Dict[str, Any]] = None) -> None:
        self.path = path
        self.checkpoint = checkpoint       # the checkpoint dict (model.pt only)
        self.model = model                 # the rebuilt nn.Module (model.pt only)
        self.metadata = metadata           # the decoded contract metadata (ONNX only)
        self._own: Dict[str, Tuple[Optional[_Split], Optional[str]]] = {}
        self._arrays = None                # a built-in dataset that loads as arrays, once

    # ----------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path) -> "ExportSource":
        """``model.pt`` or ``model.onnx``, by its suffix (``python -m export.trt``)."""
        path = Path(path)
        if path.suffix == ".pt":
            return cls.from_checkpoint(path)
        if path.suffix == ".onnx":
            return cls.from_onnx(path)
        raise ExportInputError(f"{path}: expected a .pt checkpoint or an .onnx file")

    @classmethod
    def from_checkpoint(cls, path) -> "ExportSource":
        """The model and its checkpoint; any unusable file raises :class:`ExportInputError`."""
        import zipfile

        from train.checkpoint import CheckpointError, load_model

        path = Path(path)
        if path.suffix == ".onnx":
            raise ExportInputError(f"{path} is an ONNX file; export.onnx takes a checkpoint "
                                   "(model.pt) and `python -m export.trt model.onnx` builds "
                                   "engines from ONNX")
        if path.is_file() and not zipfile.is_zipfile(path):
            raise ExportInputError(f"{path} is not a PyTorch checkpoint (torch.save writes a zip "
                                   "archive; this file is not one: truncated or another format?)")
        try:
            model, ckpt = load_model(path)
        except CheckpointError as e:
            raise ExportInputError(str(e)) from None
        except (RuntimeError, KeyError, TypeError, ValueError) as e:  # state dict / kwargs mismatch
            raise ExportInputError(f"{path}: cannot rebuild the model from the checkpoint: "
                                   f"{e}") from None
        return cls(path, checkpoint=ckpt, model=model)

    @classmethod
    def from_onnx(cls, path) -> "ExportSource":
        path = Path(path)
        return cls(path, metadata=read_contract_metadata(path))

    # ----------------------------------------------------------------------- what it is
    @property
    def preprocess(self) -> C.Preprocess:
        recipe = self.checkpoint["preprocess"] if self.checkpoint is not None \
            else self.metadata[C.META_PREPROCESS]
        return C.Preprocess.from_dict(recipe)

    def fp32_parent(self) -> Path:
        """The fp32 ONNX this (int8/fp16) ONNX was made from, else the file itself.

        A derived ONNX records its parent's sha256 (``source_onnx_sha256``); the parent is the
        file export.trt writes beside it (``model.int8.onnx`` -> ``model.onnx``), taken only
        when its sha256 is that one: a re-exported ``model.onnx`` is not this model's parent.
        """
        want = (self.metadata or {}).get(C.META_SOURCE_ONNX_SHA256)
        parent = self.path.with_name(self.path.name.split(".")[0] + ".onnx")
        if want and parent != self.path and parent.is_file():
            from edge.files import file_sha256

            if file_sha256(parent) == want:
                return parent
        return self.path

    # ----------------------------------------------------------------------- samples
    def check_samples(self, n: int, check_data=None, seed: int = 0) -> Samples:
        """``n`` parity samples: ``check_data``, else the first ``n`` of the model's own test
        split, else random inputs (the report says why)."""
        pre = self.preprocess
        if check_data:
            return _folder(check_data, pre, n, "--check-data", seed)
        if self.checkpoint is None:
            return random_samples(pre, n, seed, "an .onnx without --check-data")
        split, why = self._own_split("test")
        if split is None:
            return random_samples(pre, n, seed, why)
        x, y = split.take(range(min(n, len(split))))
        return uint8_samples(x, y, pre, f"the {self.checkpoint['config'].get('dataset', '?')} "
                                        "test split")

    def test_split(self) -> Optional[Samples]:
        """The model's whole labelled test split, or None when it has none here."""
        if self.checkpoint is None:
            return None
        split, _ = self._own_split("test")
        if split is None:
            return None
        x, y = split.take(range(len(split)))
        return uint8_samples(x, y, self.preprocess, "the model's test split")

    def calibration_set(self, n: int, calib_data=None) -> Tuple[np.ndarray, str]:
        """``(float32 NCHW, where)``: up to ``n`` images of ``calib_data``, else a seeded subset
        of the training split; :class:`ExportInputError` when neither is available."""
        pre = self.preprocess
        if calib_data:
            found = _folder(calib_data, pre, n, "--calib-data")
            return found.x, found.source             # the source names any corrupt files
        if self.checkpoint is None:
            raise ExportInputError("int8 from an fp32 .onnx needs --calib-data DIR "
                                   "(or pass the .pt, or a Q/DQ .onnx)")
        split, why = self._own_split("train")
        if split is None:
            raise ExportInputError(f"int8 calibration: {why}; pass --calib-data DIR")
        idx = np.random.default_rng(CALIBRATION_SEED).permutation(len(split))[:n]
        x, _ = split.take(np.sort(idx))
        calib = uint8_samples(x, None, pre, "train").x
        return calib, f"{len(calib)} images of the training split"

    def _own_split(self, name: str) -> Tuple[Optional[_Split], Optional[str]]:
        """The checkpoint's own split ``name``, opened once, or ``(None, why)``."""
        if name not in self._own:
            try:
                self._own[name] = (self._open_split(name), None)
            except _NoData as e:
                self._own[name] = (None, str(e))
            except Exception as e:  # noqa: BLE001  any failure to reload data means: no real samples
                self._own[name] = (None, f"its data could not be loaded: {type(e).__name__}: "
                                         f"{str(e)[:200]}")
        return self._own[name]

    def _open_split(self, name: str) -> _Split:
        ckpt = self.checkpoint
        cfg = ckpt.get("config")
        if not isinstance(cfg, dict) or not cfg.get("dataset"):
            raise _NoData("the checkpoint records no dataset")
        if cfg.get("data") or cfg.get("dataset") == "folder":
            raise _NoData("it was trained on an image folder: pass --check-data DIR")
        size = cfg.get("input_size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"input_size {size!r} in the checkpoint is not a positive int")
        if cfg["dataset"] == "crowd_synth":
            return _crowd_synth_split(cfg, name, ckpt["input_size"])
        if self._arrays is None:
            from train.data import build_dataset

            data = build_dataset(str(cfg["dataset"]), root=None, download=False, input_size=size)
            _check_size(data.input_size, ckpt["input_size"])
            self._arrays = data
        x, y = (self._arrays.train_x, self._arrays.train_y) if name == "train" \
            else (self._arrays.test_x, self._arrays.test_y)
        return _ArraySplit(x.numpy(), y.numpy())
