"""Validation on real frames while training, and the decision rule chosen on them.

``--val-data DIR`` holds full frames of any size in class folders (``DIR/<class>/...``, as
``python -m edge.evaluate`` reads them). Every frame is judged by the runtime's own judge
(:class:`edge.judge.Judge`), with the PyTorch model wrapped as its predict function, in the
runtime's modes: ``classify`` (whole frame, the model's resize policy) and ``heatmap`` (tiles at
the training ground scale, sized from the camera flags or the default camera; the tiles path,
which every exported model runs). The numbers are those of the model's current decision rule;
:meth:`RealValidation.calibrate` then chooses the rule's thresholds on the same judgements
(balanced accuracy, ties to higher crowd recall: :mod:`edge.metrics`).

Prepared inputs are kept between epochs while they fit in :data:`CACHE_BYTES` (a few dozen
1080p frames do); beyond that the frames are decoded again each epoch. Nothing here draws random
numbers, so a resumed run stays bit-identical.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from edge.contract import DecisionRule, ModelInfo
from edge.judge import Camera, Judge, Judgement, Prepared
from edge.labelled import LabelledImage, list_labelled, notes, parse_map
from edge.metrics import calibrate_classify, calibrate_heatmap, heat_area, summarize
from edge.preprocess import as_bgr_or_gray, decode_bgr

VAL_MODES = ("both", "heatmap", "classify")
CACHE_BYTES = 256 << 20


class TorchPredictor:
    """A PyTorch model as the judge's predict function: float32 NCHW numpy in, logits out."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device

    @torch.no_grad()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device)).float().cpu().numpy()

    @torch.no_grad()
    def score_map(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        return self.model.score_map(t).float().cpu().numpy()


def modes_of(val_mode: str) -> Tuple[str, ...]:
    if val_mode not in VAL_MODES:
        raise ValueError(f"--val-mode {val_mode!r} not in {VAL_MODES}")
    return ("heatmap", "classify") if val_mode == "both" else (val_mode,)


@dataclass
class ValResult:
    judgements: Dict[str, List[Judgement]]     # mode -> one per decoded frame, in frame order
    metrics: Dict[str, Dict[str, object]]      # mode -> balanced accuracy, ROC-AUC, recalls, n
    truth: np.ndarray                          # [N] 1 = crowd, for the decoded frames

    @property
    def score(self) -> Tuple[float, float]:
        """(mean balanced accuracy, mean ROC-AUC) over the modes: what --select-best val ranks."""
        bacc = [m["balanced_accuracy"] for m in self.metrics.values()]
        auc = [m["roc_auc"] if m["roc_auc"] is not None else 0.0 for m in self.metrics.values()]
        return float(np.mean(bacc)), float(np.mean(auc))


class RealValidation:
    """The frames of ``root`` and one judge per mode; ``run(model)`` judges them all."""

    def __init__(self, root, info: ModelInfo, val_mode: str = "both", camera: Camera = Camera(),
                 mapping: Sequence[str] = (), positive: str = "crowd", impl: str = "tiles",
                 cameras: Optional[Mapping[str, Camera]] = None) -> None:
        """``cameras``: per-frame cameras (path relative to ``root`` -> Camera, as
        :func:`edge.cameras.read_cameras` reads them) for the heatmap; other frames use ``camera``."""
        if positive not in info.class_names:
            raise ValueError(f"--val-data judges the {positive!r} class, which this model does not "
                             f"have (classes {list(info.class_names)})")
        self.root = root
        listing = list_labelled(root, info.class_names, positive, parse_map(mapping, info.class_names))
        self.images: List[LabelledImage] = listing.images
        self.truth = np.array([im.truth for im in self.images])
        if self.truth.all() or not self.truth.any():
            raise ValueError(f"--val-data {root} needs frames of both classes ({int(self.truth.sum())} "
                             f"{positive}, {int((1 - self.truth).sum())} other)")
        pos = list(info.class_names).index(positive)
        modes = modes_of(val_mode)
        self.judges = {m: Judge(info, m, positive=pos, rule=info.decision, camera=camera, impl=impl)
                       for m in modes}
        cameras = dict(cameras or {}) if "heatmap" in modes else {}
        own = {cam: Judge(info, "heatmap", positive=pos, rule=info.decision, camera=cam, impl=impl)
               for cam in sorted(set(cameras.values()), key=repr)}
        # per frame: mode -> its judge (a heatmap frame with a camera of its own gets that one)
        self._frame_judges: List[Dict[str, Judge]] = [
            {m: (own[cameras[im.rel]] if m == "heatmap" and im.rel in cameras else j)
             for m, j in self.judges.items()} for im in self.images]
        used = list({id(j): j for fj in self._frame_judges for j in fj.values()}.values())
        self.notes = list(dict.fromkeys(n for j in used for n in j.notes)) + notes(listing, root)
        self._cache: Optional[List[Optional[Dict[str, Prepared]]]] = None
        self._cache_ok = True
        decoded = self.truth[[i for i, p in enumerate(self._prepared()) if p is not None]]
        if decoded.all() or not decoded.any():       # checked now, not after the first epoch
            raise ValueError(f"--val-data {root}: the decodable frames are not of both classes "
                             f"({int(decoded.sum())} {positive}, {int((1 - decoded).sum())} other)")

    def _prepared(self) -> List[Optional[Dict[str, Prepared]]]:
        """Per frame: mode -> prepared input (None: undecodable); cached while small enough."""
        if self._cache is not None:
            return self._cache
        out: List[Optional[Dict[str, Prepared]]] = []
        for im, judges in zip(self.images, self._frame_judges):
            img = decode_bgr(im.path)
            if img is None:
                out.append(None)
                continue
            img = as_bgr_or_gray(img)
            out.append({m: j.prepare(img) for m, j in judges.items()})
        size = sum(p.x.nbytes for d in out if d for p in d.values())
        if self._cache_ok and size <= CACHE_BYTES:
            self._cache = out
        else:
            self._cache_ok = False
        return out

    def run(self, model: nn.Module, device: torch.device,
            rule: Optional[DecisionRule] = None) -> ValResult:
        """Every frame judged by ``model`` under ``rule`` (default: the model info's rule)."""
        was_training = model.training
        model.eval()
        predict = TorchPredictor(model, device)
        ruled: Dict[int, Judge] = {}          # id(judge) -> it under ``rule``

        def under_rule(j: Judge) -> Judge:
            if rule is None:
                return j
            if id(j) not in ruled:
                ruled[id(j)] = j.with_rule(rule)
            return ruled[id(j)]

        judged: Dict[str, List[Judgement]] = {m: [] for m in self.judges}
        keep: List[int] = []
        for i, prepared in enumerate(self._prepared()):
            if prepared is None:
                continue
            keep.append(i)
            for m, j in self._frame_judges[i].items():
                j = under_rule(j)
                judged[m].append(j.decide(j.run(prepared[m], predict, predict.score_map), prepared[m]))
        model.train(was_training)
        if not keep:
            raise ValueError(f"--val-data {self.root}: no frame could be decoded")
        y = self.truth[keep]
        metrics = {}
        for m, js in judged.items():
            s = summarize(y, [int(j.crowd) for j in js], [j.score for j in js])
            metrics[m] = {k: s[k] for k in ("n", "balanced_accuracy", "roc_auc", "recall_positive",
                                             "recall_negative")}
        return ValResult(judged, metrics, y)

    def rescore(self, result: ValResult, rule: DecisionRule) -> Dict[str, Dict[str, object]]:
        """The metrics of ``result`` under another rule, without running the model again."""
        out = {}
        for m, js in result.judgements.items():
            if m == "classify":
                ev = [j.evidence for j in js]
                crowd, score = [e >= rule.classify_threshold for e in ev], [rule.classify_score(e) for e in ev]
            else:
                ev = [heat_area(j.heat, rule) for j in js]
                crowd, score = [e >= rule.min_area for e in ev], [rule.heatmap_score(e) for e in ev]
            s = summarize(result.truth, [int(c) for c in crowd], score)
            out[m] = {k: s[k] for k in ("n", "balanced_accuracy", "roc_auc", "recall_positive",
                                        "recall_negative")}
        return out

    def calibrate(self, result: ValResult, base: DecisionRule, note: str = "") -> DecisionRule:
        """The rule whose thresholds maximise balanced accuracy on these frames (per mode judged;
        the other thresholds stay those of ``base``), with its source."""
        y = result.truth
        changes, said = {}, []
        if "heatmap" in result.judgements:
            t, c = calibrate_heatmap(y, [j.heat for j in result.judgements["heatmap"]], base=base)
            changes.update(threshold=t, min_area=c.threshold)
            said.append(f"heatmap {c.balanced_accuracy:.3f}")
        if "classify" in result.judgements:
            c = calibrate_classify(y, [j.evidence for j in result.judgements["classify"]])
            changes.update(classify_threshold=c.threshold)
            said.append(f"classify {c.balanced_accuracy:.3f}")
        heat = self.judges.get("heatmap")
        own = sum(fj["heatmap"] is not heat for fj in self._frame_judges) if heat is not None else 0
        where = (f"; heatmap ({heat.impl}) tiling {heat.tiling.to_dict()}" if heat is not None else "") \
            + (f", {own} frames at their own camera" if own else "")
        source = (f"calibrated on {self.root}: {len(y)} frames ({int(y.sum())} crowd), balanced "
                  f"accuracy {', '.join(said)}" + where
                  + (f"; {note}" if note else ""))
        return base.replace(**changes, source=source)
