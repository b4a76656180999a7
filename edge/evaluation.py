"""Judge labelled photos one by one and report: the library behind ``python -m edge.evaluate``.

Each image is judged on its own by :class:`edge.judge.Judge` (no smoothing across unrelated
photos), so the numbers are those of the runtime's per-frame verdict. The report has per-class
accuracy, balanced accuracy, ROC-AUC of the calibrated score, the confusion matrix, a breakdown by
group (:func:`edge.labelled.group_of`), per-image rows for a CSV, and a contact sheet of the
errors (numpy and OpenCV only).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from edge.judge import Judge, Judgement, Predict
from edge.labelled import LabelledImage, by_group
from edge.metrics import summarize
from edge.preprocess import as_bgr_or_gray, decode_bgr

THUMB_W, THUMB_H = 240, 180          # contact-sheet cell (image part), pixels
CAPTION_H = 34


@dataclass
class Row:
    image: LabelledImage
    judgement: Optional[Judgement]     # None: the file could not be decoded
    error: Optional[str] = None
    thumb: Optional[np.ndarray] = None  # kept for wrong verdicts only (the contact sheet)

    @property
    def correct(self) -> bool:
        return self.judgement is not None and int(self.judgement.crowd) == self.image.truth


def judge_images(images: Sequence[LabelledImage], judge: Judge, predict: Predict,
                 score_map: Optional[Predict] = None, thumbs: bool = True,
                 progress=None, per_image: Optional[Mapping[str, Judge]] = None) -> List[Row]:
    """One :class:`Row` per image, in order; undecodable files are rows with an error. An image
    whose ``rel`` is in ``per_image`` is judged by that judge (its own camera), the rest by
    ``judge``."""
    per_image = per_image or {}
    rows: List[Row] = []
    for i, im in enumerate(images):
        img = decode_bgr(im.path)
        if img is None:
            rows.append(Row(im, None, "undecodable"))
            continue
        try:
            img = as_bgr_or_gray(img)
            j = per_image.get(im.rel, judge).judge(img, predict, score_map)
        except ValueError as e:              # an image shape the contract cannot take
            rows.append(Row(im, None, f"preprocess: {e}"))
            continue
        row = Row(im, j)
        if thumbs and not row.correct:
            row.thumb = thumbnail(img, j)
        rows.append(row)
        if progress is not None:
            progress(i + 1, len(images))
    return rows


# ------------------------------------------------------------------------------ report
def _judged(rows: Sequence[Row]) -> List[Row]:
    return [r for r in rows if r.judgement is not None]


def _summary(rows: Sequence[Row]) -> Dict[str, Any]:
    y = [r.image.truth for r in rows]
    return summarize(y, [int(r.judgement.crowd) for r in rows], [r.judgement.score for r in rows])


def report(rows: Sequence[Row], group_by: str, positive: str, negative: str) -> Dict[str, Any]:
    """The whole evaluation as one JSON-able dict (NaN-free: undefined metrics are null)."""
    ok = _judged(rows)
    if not ok:
        raise ValueError("no image could be decoded and judged")
    per_class: Dict[str, Dict[str, Any]] = {}
    for label in sorted({r.image.label for r in ok}):
        sel = [r for r in ok if r.image.label == label]
        per_class[label] = {"n": len(sel), "accuracy": round(sum(r.correct for r in sel) / len(sel), 6)}
    groups = {}
    for name, idx in by_group([r.image for r in ok], group_by).items():
        sel = [ok[i] for i in idx]
        s = _summary(sel)
        groups[name] = {k: s[k] for k in ("n", "n_positive", "accuracy", "balanced_accuracy", "roc_auc")}
    return {"metrics": _summary(ok), "confusion_labels": [positive, negative],
            "per_class": per_class, "group_by": group_by, "groups": groups,
            "errors": [r.image.rel for r in ok if not r.correct],
            "unreadable": {r.image.rel: r.error for r in rows if r.judgement is None}}


def csv_text(rows: Sequence[Row], group_by: str, class_names: Sequence[str]) -> str:
    """Per-image predictions: path, label, group, verdict, score, evidence, mode details."""
    from edge.labelled import group_of

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "truth", "group", "verdict", "correct", "score", "evidence",
                "tile_px", "heat_max", "heat_mean"] + [f"p_{c}" for c in class_names] + ["error"])
    for r in rows:
        j = r.judgement
        base = [r.image.rel, r.image.label, r.image.truth, group_of(r.image, group_by)]
        if j is None:
            w.writerow(base + [""] * (7 + len(class_names)) + [r.error])
            continue
        probs = [f"{float(p):.5f}" for p in j.probs] if j.probs is not None else [""] * len(class_names)
        heat = [f"{j.heat.max:.5f}", f"{j.heat.mean:.5f}"] if j.heat is not None else ["", ""]
        w.writerow(base + [int(j.crowd), int(r.correct), f"{j.score:.5f}", f"{j.evidence:.5f}",
                           j.tile_px if j.tile_px is not None else ""] + heat + probs + [""])
    return buf.getvalue()


def format_report(rep: Dict[str, Any]) -> str:
    """A short text summary for the terminal."""
    m = rep["metrics"]
    pos, neg = rep["confusion_labels"]
    cm = m["confusion"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [f"{m['n']} images ({m['n_positive']} {pos}, {m['n_negative']} other): balanced accuracy "
             f"{fmt(m['balanced_accuracy'])}, ROC-AUC {fmt(m['roc_auc'])}, accuracy {fmt(m['accuracy'])}",
             "per class: " + ", ".join(f"{k} {v['accuracy']:.3f} ({v['n']})" for k, v in rep["per_class"].items()),
             f"confusion (rows truth, columns verdict; {pos}, {neg}): {cm[0]} {cm[1]}",
             f"by {rep['group_by']}:"]
    for name, g in rep["groups"].items():
        lines.append(f"  {name:<32} n={g['n']:<4} accuracy {fmt(g['accuracy'])}  "
                     f"balanced {fmt(g['balanced_accuracy'])}")
    if rep["unreadable"]:
        lines.append(f"{len(rep['unreadable'])} file(s) could not be judged (listed in the JSON)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ contact sheet
def thumbnail(img: np.ndarray, j: Judgement) -> np.ndarray:
    """The image in a THUMB_W x THUMB_H cell (aspect kept, grey bands), heat blended in."""
    import cv2

    from edge.contract import fit_to_size

    bgr = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img
    cell = fit_to_size(bgr, (THUMB_H, THUMB_W), "letterbox", (64, 64, 64))
    if j.heat is not None and j.heat.grid.size:
        s = min(THUMB_H / img.shape[0], THUMB_W / img.shape[1])
        nh, nw = max(1, int(round(img.shape[0] * s))), max(1, int(round(img.shape[1] * s)))
        top, left = (THUMB_H - nh) // 2, (THUMB_W - nw) // 2
        heat = cv2.resize(np.clip(j.heat.grid * 255, 0, 255).astype(np.uint8), (nw, nh),
                          interpolation=cv2.INTER_NEAREST)
        inner = cell[top:top + nh, left:left + nw]
        cell[top:top + nh, left:left + nw] = cv2.addWeighted(
            inner, 0.6, cv2.applyColorMap(heat, cv2.COLORMAP_JET), 0.4, 0)
    return cell


def contact_sheet(rows: Sequence[Row], positive: str, limit: int = 48, cols: int = 6) -> np.ndarray:
    """The wrong verdicts as a grid of captioned thumbnails (BGR); a one-cell note when none."""
    import cv2

    wrong = [r for r in rows if r.thumb is not None][:limit]
    if not wrong:
        sheet = np.full((THUMB_H + CAPTION_H, THUMB_W * 2, 3), 255, np.uint8)
        cv2.putText(sheet, "no wrong verdicts", (12, THUMB_H // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
                    (0, 120, 0), 2, cv2.LINE_AA)
        return sheet
    n_rows = -(-len(wrong) // cols)
    cw, ch = THUMB_W + 4, THUMB_H + CAPTION_H + 4
    sheet = np.full((n_rows * ch, min(cols, len(wrong)) * cw, 3), 255, np.uint8)
    for k, r in enumerate(wrong):
        y, x = (k // cols) * ch, (k % cols) * cw
        sheet[y:y + THUMB_H, x:x + THUMB_W] = r.thumb
        said = positive if r.judgement.crowd else f"not {positive}"
        name = r.image.rel if len(r.image.rel) <= 34 else "..." + r.image.rel[-31:]
        for line, text in enumerate((name, f"{r.image.label}: said {said}, score {r.judgement.score:.2f}")):
            cv2.putText(sheet, text, (x + 2, y + THUMB_H + 13 + 15 * line), cv2.FONT_HERSHEY_SIMPLEX,
                        0.38, (0, 0, 160) if line else (0, 0, 0), 1, cv2.LINE_AA)
    return sheet
