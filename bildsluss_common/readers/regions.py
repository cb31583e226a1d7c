"""Where a picture may show a patient label: cheap, on the grey reduced decode (R4).

A middle picture of a photo series is read by barcode only, unless something in
it looks like a label: then that place is read fully (barcode at full
resolution, then OCR of the crop), and a label that still reads as nothing is a
refusal, never a silent pass (:mod:`agent.card.identify`). This module only
says where to look. It is biased to find: a false find costs an OCR of a crop
(tenths of a second), a miss could archive another patient's picture.

What a printed label looks like to it, on a grey copy about 1000 px wide
(:func:`find_label_regions`; a 12 MP JPEG's reduced decode is 2000 px wide and
is halved once more, so the whole search costs a few milliseconds):

* **paper**: cells (8x8 px) that are bright and flat, brighter than most of
  the picture (a white sticker on skin; on a close-up of the label, most of the
  picture is paper and the bar is the paper's own brightness);
* **ink on paper**: cells with a dark stroke next to paper-bright pixels
  (letters, digits, bars);
* a **region** is a connected group of paper and ink cells (gaps of one cell
  closed) of label size that holds enough ink cells, in a few rows or more
  (text lines, a barcode): a bright patch of glare has no ink, a hair on skin
  has no paper.

The barcode locator's patches (:func:`bildsluss_common.readers.barcode.locate`,
already computed by the cheap barcode pass) are the other kind of find; the
identify stage merges both.
"""
from __future__ import annotations

import dataclasses

# Imported here, not where used: the identify stage's worker processes import
# every reader before they are confined (agent/card/workers.py), and a confined
# worker may no longer read the installation's files.
import cv2  # opencv-python-headless: a project dependency
import numpy as np

# Long side, in pixels, of the copy the search works on.
WORK_SIDE = 1000
# Side of one cell, in work pixels.
CELL = 6
# A label is at least this wide, in pixels of the full picture (a 12 MP frame's
# smallest readable label is about 450 px wide; a 2 MP card's about 250 px).
MIN_LABEL_PX = 160
# Ink: a stroke at least this much darker than the paper around it.
INK_CONTRAST = 45
# Fewest ink cells in a region, and fewest rows of cells with ink. Measured on
# the identity benchmark's 12 MP frames (cells of 24 px there): the smallest
# labels (450 px wide, blurred, glare, +-30 degrees) have 118-260 ink cells in
# 11-22 rows; a hair or a mole beside a patch of glare on skin up to 35 in 2-9.
# 30 cells is a label about 230 px wide on 12 MP (a printed number about 20 px
# high, at the limit of what OCR reads).
MIN_INK_CELLS = 30
MIN_INK_ROWS = 5


@dataclasses.dataclass(frozen=True)
class LabelRegion:
    """A place in a picture that may be a printed label.

    ``box`` is (x, y, width, height) in the pixels of the full picture;
    ``ink_rows`` how many rows of cells hold ink (text lines show as several);
    ``score`` how label-like (ink cells on paper), for ordering.
    """

    box: tuple[int, int, int, int]
    ink_cells: int
    paper_cells: int
    ink_rows: int
    score: float


def find_label_regions(grey: np.ndarray, *, scale: float = 1.0, limit: int = 4) -> list[LabelRegion]:
    """Label-like regions of a grey picture, most label-like first (at most ``limit``).

    ``grey`` is an 8-bit grey array (the identify stage's reduced decode);
    ``scale`` maps its pixels to the full picture's, so that boxes refer to the
    full picture. Never raises for an odd image: a tiny or flat one has none.
    """
    if grey.ndim != 2 or min(grey.shape) < 4 * CELL:
        return []
    h, w = grey.shape
    factor = max(1, int(round(max(h, w) / WORK_SIDE)))
    small: np.ndarray = cv2.resize(grey, (w // factor, h // factor), interpolation=cv2.INTER_AREA) \
        if factor > 1 else grey
    sh, sw = small.shape
    gh, gw = sh // CELL, sw // CELL
    if gh < 3 or gw < 3:
        return []
    # Per-cell maximum and minimum: a CELL x CELL dilation (erosion) anchored at
    # the cell's corner, sampled once per cell (numpy's reshape-max is 20x slower).
    kernel = np.ones((CELL, CELL), np.uint8)
    hi = cv2.dilate(small, kernel, anchor=(0, 0))[: gh * CELL: CELL, : gw * CELL: CELL].astype(np.int16)
    lo = cv2.erode(small, kernel, anchor=(0, 0))[: gh * CELL: CELL, : gw * CELL: CELL].astype(np.int16)
    # The paper's brightness is judged over a 3x3-cell window (an ink cell's own
    # maximum may be the edge of a letter); brighter than most of the picture.
    hi3 = cv2.dilate(hi.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.int16)
    median = float(np.median(hi))
    bright = max(110.0, min(median + 12.0, 215.0))
    paper = (lo >= bright) & (hi - lo <= 40)
    ink = (hi3 >= bright) & (hi3 - lo >= INK_CONTRAST)
    # An ink cell counts only next to paper: a dark hair on skin is not print.
    near_paper = cv2.dilate(paper.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    ink &= near_paper
    closed = cv2.morphologyEx((paper | ink).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    px = CELL * factor * scale  # full-picture pixels per cell
    min_cells = max(2, int(MIN_LABEL_PX / px))
    found: list[LabelRegion] = []
    for i in range(1, n):
        x, y, cw, ch, _area = (int(v) for v in stats[i])
        if max(cw, ch) < min_cells or min(cw, ch) < max(2, min_cells // 4):
            continue
        mask = labels[y:y + ch, x:x + cw] == i
        n_ink = int((ink[y:y + ch, x:x + cw] & mask).sum())
        n_paper = int((paper[y:y + ch, x:x + cw] & mask).sum())
        rows = int((ink[y:y + ch, x:x + cw] & mask).any(axis=1).sum())
        if n_ink < MIN_INK_CELLS or n_paper < MIN_INK_CELLS // 3 or rows < MIN_INK_ROWS:
            continue
        # A margin of two cells: the sticker's edge and the ends of text lines.
        x0, y0 = max(0, x - 2), max(0, y - 2)
        x1, y1 = min(gw, x + cw + 2), min(gh, y + ch + 2)
        box = (int(x0 * px), int(y0 * px), int((x1 - x0) * px), int((y1 - y0) * px))
        found.append(LabelRegion(box=box, ink_cells=n_ink, paper_cells=n_paper, ink_rows=rows,
                                 score=float(min(n_ink, n_paper))))
    found.sort(key=lambda r: -r.score)
    return found[:limit]


def middle_inside(position: tuple[int, int, int, int], box: tuple[int, int, int, int]) -> bool:
    """Whether the middle of ``position`` lies in ``box`` (both x, y, w, h, the same pixels)."""
    cx, cy = position[0] + position[2] / 2, position[1] + position[3] / 2
    return box[0] <= cx <= box[0] + box[2] and box[1] <= cy <= box[1] + box[3]
