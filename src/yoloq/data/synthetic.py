"""The built-in benchmark: a deterministic synthetic detection dataset in YOLO format.

It stands in for COCO where nothing can be downloaded. Each image holds 2-12 shapes of
8 classes (`CLASS_NAMES`: ellipse, rectangle, triangle, star, ring, cross, hexagon,
arrow; the class is the shape, never the colour) from 8 px to half the image, with
random colour, aspect, rotation and shading, on textured, noisy backgrounds with clutter
that belongs to no class. Shapes may overlap; a shape that is more than 65% hidden
(occluded by later shapes or clutter, or cut by the image border) is drawn but not
labelled. A label is the tight box of the shape's full rendered mask, clipped to the
image (the COCO convention: occluded parts count, parts outside the image do not).

Images are JPEG at quality 90: COCO is JPEG too, and a noisy 320x320 image is ~33 kB
as JPEG against ~200 kB as PNG, and encodes 30x faster (0.5 ms against 15 ms, as long
as drawing the image).

Every image has its own random stream, derived from (seed, split, index), so a dataset
is the same bytes whatever the number of workers.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw
from rich.progress import track

from yoloq.errors import YoloqError

GENERATOR_VERSION = 1
MANIFEST_NAME = "synthetic.json"
# The report split draws its images from seeds of its own (spawn key 2), so adding it
# leaves every train and val image as it was.
SPLITS = ("train", "val", "report")
IMAGE_SUFFIX = ".jpg"
JPEG_QUALITY = 90
MIN_VISIBLE_FRACTION = 0.35  # labelled only if at most 65% of the shape is hidden
MIN_OBJECT_PX = 8

# A polygon in unit coordinates (long side spans [-1, 1]) and the mask value it paints:
# 255 adds to the shape, 0 cuts a hole in it (the ring).
Polygon = tuple[np.ndarray, int]


@dataclass(frozen=True)
class SyntheticConfig:
    """What decides a synthetic dataset's content (not how fast it is written)."""

    train_images: int = 4000
    val_images: int = 500
    size: int = 320
    seed: int = 0
    report_images: int = 0

    def __post_init__(self):
        if min(self.train_images, self.val_images, self.report_images) < 0:
            raise ValueError("image counts must be >= 0")
        if self.size < 64:
            raise ValueError(f"size must be >= 64 px, got {self.size}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    def count(self, split: str) -> int:
        return {"train": self.train_images, "val": self.val_images,
                "report": self.report_images}[split]


@dataclass(frozen=True)
class RenderedObject:
    """A labelled shape: `box` is (x0, y0, x1, y1) in pixels, x1 and y1 exclusive;
    `mask` is its full rendered mask inside the image, a crop whose top-left pixel is
    `origin`; `outline` is its outer polygon in image coordinates."""

    cls: int
    box: tuple[int, int, int, int]
    mask: np.ndarray
    origin: tuple[int, int]
    visible_fraction: float
    outline: np.ndarray


@dataclass(frozen=True)
class Scene:
    image: Image.Image
    objects: list[RenderedObject]


# ---------------------------------------------------------------- shapes (unit coordinates)


def _regular(n: int, radius: float = 1.0, phase: float = np.pi / 2) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _ellipse(rng: np.random.Generator) -> list[Polygon]:
    return [(_regular(48), 255)]


def _rectangle(rng: np.random.Generator) -> list[Polygon]:
    return [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), 255)]


def _triangle(rng: np.random.Generator) -> list[Polygon]:
    apex_shift = rng.uniform(-0.6, 0.6)  # from isosceles to scalene
    return [(np.array([[-1, 1], [1, 1], [apex_shift, -1]]), 255)]


def _star(rng: np.random.Generator) -> list[Polygon]:
    points = _regular(10)
    points[1::2] *= rng.uniform(0.38, 0.55)
    return [(points, 255)]


def _ring(rng: np.random.Generator) -> list[Polygon]:
    return [(_regular(48), 255), (_regular(48, rng.uniform(0.45, 0.7)), 0)]


def _cross(rng: np.random.Generator) -> list[Polygon]:
    w = rng.uniform(0.2, 0.4)
    arm = np.array([[w, -w], [1, -w], [1, w], [w, w]])  # the right arm
    quarter_turn = np.array([[0, 1], [-1, 0]])
    arms = [arm @ np.linalg.matrix_power(quarter_turn, k) for k in range(4)]
    return [(np.concatenate(arms), 255)]


def _hexagon(rng: np.random.Generator) -> list[Polygon]:
    return [(_regular(6, phase=0.0), 255)]


def _arrow(rng: np.random.Generator) -> list[Polygon]:
    neck, shaft, head = rng.uniform(0.0, 0.4), rng.uniform(0.15, 0.3), rng.uniform(0.55, 0.9)
    points = [[-1, -shaft], [neck, -shaft], [neck, -head], [1, 0]]
    points += [[neck, head], [neck, shaft], [-1, shaft]]
    return [(np.array(points, float), 255)]


# Per class: its unit polygons, the range of its aspect ratio, its smallest size in px
# (below it a star or a ring is no longer recognisable as one).
_SHAPES: dict[str, tuple[Callable[[np.random.Generator], list[Polygon]], float, int]] = {
    "ellipse": (_ellipse, 2.0, 8),
    "rectangle": (_rectangle, 3.0, 8),
    "triangle": (_triangle, 2.0, 8),
    "star": (_star, 1.3, 12),
    "ring": (_ring, 1.8, 14),
    "cross": (_cross, 1.3, 10),
    "hexagon": (_hexagon, 1.3, 10),
    "arrow": (_arrow, 2.0, 12),
}
CLASS_NAMES = tuple(_SHAPES)  # a class id is an index in it


# ---------------------------------------------------------------- background and clutter


@lru_cache(maxsize=4)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    ys.flags.writeable = xs.flags.writeable = False
    return xs, ys


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Gradient + low-frequency colour noise + striped or checkered patches, float HxWx3."""
    xs, ys = _pixel_grid(size)
    theta = rng.uniform(0, 2 * np.pi)
    t = (xs * np.cos(theta) + ys * np.sin(theta)) / size
    t = (t - t.min()) / (t.max() - t.min())
    start, end = _random_colour(rng), _random_colour(rng)
    canvas = start + (end - start) * t[..., None]
    cells = int(rng.integers(2, 7))
    blotches = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
    blotches = Image.fromarray(blotches).resize((size, size), Image.Resampling.BICUBIC)
    canvas += (np.asarray(blotches, np.float32) - 128) * rng.uniform(0.1, 0.5)
    for _ in range(rng.integers(0, 5)):
        _add_patch(canvas, rng, xs, ys)
    return canvas


def _add_patch(canvas: np.ndarray, rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray):
    """Blend a stripes or checker texture into a random rectangle: edges and texture that
    the detector must learn to ignore."""
    size = canvas.shape[0]
    w, h = (rng.uniform(0.15, 0.6, 2) * size).astype(int)
    x0, y0 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
    px, py = xs[y0 : y0 + h, x0 : x0 + w], ys[y0 : y0 + h, x0 : x0 + w]
    period = rng.uniform(3, 24)
    if rng.random() < 0.5:
        phi = rng.uniform(0, np.pi)
        on = np.sin((px * np.cos(phi) + py * np.sin(phi)) * 2 * np.pi / period) > 0
    else:
        on = ((px // period + py // period) % 2).astype(bool)
    alpha = rng.uniform(0.25, 0.8)
    region = canvas[y0 : y0 + h, x0 : x0 + w]
    region[on] = (1 - alpha) * region[on] + alpha * _random_colour(rng)


@dataclass(frozen=True)
class _Stroke:
    method: str  # an ImageDraw method
    xy: list[tuple[float, float]]
    colour: tuple[int, int, int]
    options: dict


def _clutter(rng: np.random.Generator, size: int, count: int, thin: bool) -> list[_Stroke]:
    """Distractors of no class: lines, scribbles, arcs and (unless thin) irregular blobs."""
    kinds = ("line", "scribble", "arc") if thin else ("line", "scribble", "arc", "blob", "blob")
    strokes = []
    for _ in range(count):
        kind = kinds[rng.integers(len(kinds))]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        width = int(rng.integers(1, 3 if thin else 6))
        centre, reach = rng.uniform(0, size, 2), rng.uniform(0.05, 0.4) * size
        if kind == "line":
            xy = [tuple(centre), tuple(centre + rng.uniform(-reach, reach, 2))]
            strokes.append(_Stroke("line", xy, colour, {"width": width}))
        elif kind == "scribble":
            steps = rng.normal(0, reach / 4, (int(rng.integers(3, 8)), 2))
            xy = [tuple(p) for p in centre + np.cumsum(steps, axis=0)]
            strokes.append(_Stroke("line", xy, colour, {"width": width, "joint": "curve"}))
        elif kind == "arc":
            box = [tuple(centre - reach / 2), tuple(centre + reach / 2)]
            start = float(rng.uniform(0, 360))
            span = {"start": start, "end": start + float(rng.uniform(40, 270)), "width": width}
            strokes.append(_Stroke("arc", box, colour, span))
        else:
            xy = [tuple(p) for p in centre + _blob_outline(rng) * reach / 2]
            strokes.append(_Stroke("polygon", xy, colour, {}))
    return strokes


def _blob_outline(rng: np.random.Generator) -> np.ndarray:
    """A lumpy closed curve, r(theta) = 1 + a few harmonics of orders 3-6: curved, so
    that it is no polygon class, and lumpy, so that it is no ellipse."""
    theta = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    orders = np.arange(3, 7)[:, None]
    amplitudes = rng.uniform(0.05, 0.25, (4, 1))
    phases = rng.uniform(0, 2 * np.pi, (4, 1))
    radius = 1 + (amplitudes * np.cos(orders * theta + phases)).sum(axis=0)
    radius = np.clip(radius / radius.max(), 0.2, 1)[:, None]
    return radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _draw(image: Image.Image, strokes: list[_Stroke], fill: int | None = None):
    """Draw the strokes in their colours, or all in `fill` (for a mask)."""
    draw = ImageDraw.Draw(image)
    for s in strokes:
        getattr(draw, s.method)(s.xy, fill=s.colour if fill is None else fill, **s.options)


def _as_image(canvas: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(canvas, 0, 255).round().astype(np.uint8))


# ---------------------------------------------------------------- objects


@dataclass(frozen=True)
class _Placed:
    cls: int
    mask: np.ndarray  # full mask, cropped to the image
    origin: tuple[int, int]
    full_area: int  # including any part outside the image
    outline: np.ndarray


def _shape_polygons(rng: np.random.Generator, cls: int, size: int) -> list[Polygon]:
    """The class's polygons with random size, aspect, rotation and position, in pixels."""
    make, max_aspect, min_px = _SHAPES[CLASS_NAMES[cls]]
    long_side = np.exp(rng.uniform(np.log(MIN_OBJECT_PX), np.log(size / 2)))
    long_side = max(long_side, min_px)  # log-uniform: as many small shapes as large ones
    aspect = np.exp(rng.uniform(-np.log(max_aspect), np.log(max_aspect)))
    half = long_side / 2 * (np.array([1, aspect]) if aspect < 1 else np.array([1 / aspect, 1]))
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    centre = rng.uniform(0, size, 2)
    return [(pts * half @ rotation + centre, fill) for pts, fill in make(rng)]


def _rasterise(polygons: list[Polygon]) -> tuple[np.ndarray, tuple[int, int]]:
    """The shape's mask on its own bounding crop, and the crop's top-left pixel."""
    outer = polygons[0][0]
    x0, y0 = np.floor(outer.min(axis=0)).astype(int)
    x1, y1 = np.ceil(outer.max(axis=0)).astype(int) + 1
    canvas = Image.new("L", (int(x1 - x0), int(y1 - y0)), 0)
    draw = ImageDraw.Draw(canvas)
    for pts, fill in polygons:
        draw.polygon([(x - x0, y - y0) for x, y in pts], fill=fill)
    return np.asarray(canvas) > 0, (int(x0), int(y0))


def _object_colour(rng: np.random.Generator, behind: np.ndarray) -> np.ndarray:
    """A random colour that stands out from the mean colour `behind` the shape, so
    that every labelled shape is visible (best of a few tries)."""
    candidates = rng.uniform(0, 255, (6, 3)).astype(np.float32)
    distances = np.linalg.norm(candidates - behind, axis=1)
    good = np.flatnonzero(distances > 80)
    return candidates[good[0] if len(good) else np.argmax(distances)]


def _object_pixels(rng: np.random.Generator, colour: np.ndarray, shape: tuple[int, int]):
    """The shape's fill: its colour under a linear shading, sometimes striped."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    phi = rng.uniform(0, 2 * np.pi)
    ramp = xs * np.cos(phi) + ys * np.sin(phi)
    pixels = colour * (1 + rng.uniform(-0.35, 0.35) * (ramp - ramp.mean()))[..., None]
    if rng.random() < 0.2:
        period = rng.uniform(0.15, 0.4)
        stripes = np.sin((xs * np.sin(phi) - ys * np.cos(phi)) * 2 * np.pi / period) > 0
        pixels[stripes] = _random_colour(rng)
    return pixels


def _place_object(
    canvas: np.ndarray, owner: np.ndarray, rng: np.random.Generator, index: int
) -> _Placed | None:
    """Paint one random shape on the canvas and mark its pixels as `index` in `owner`."""
    size = canvas.shape[0]
    cls = int(rng.integers(len(CLASS_NAMES)))
    polygons = _shape_polygons(rng, cls, size)
    mask, (mx, my) = _rasterise(polygons)
    x0, y0 = max(mx, 0), max(my, 0)
    x1, y1 = min(mx + mask.shape[1], size), min(my + mask.shape[0], size)
    if x1 <= x0 or y1 <= y0:
        return None
    inside = mask[y0 - my : y1 - my, x0 - mx : x1 - mx]
    if not inside.any():
        return None
    region = canvas[y0:y1, x0:x1]
    colour = _object_colour(rng, region[inside].mean(axis=0))
    region[inside] = _object_pixels(rng, colour, inside.shape)[inside]
    owner[y0:y1, x0:x1][inside] = index
    return _Placed(cls, inside, (x0, y0), int(mask.sum()), polygons[0][0])


def _labelled(placed: _Placed, owner: np.ndarray, index: int) -> RenderedObject | None:
    """The object with its box, or None if too much of it is hidden to be labelled."""
    (x0, y0), (h, w) = placed.origin, placed.mask.shape
    visible = placed.mask & (owner[y0 : y0 + h, x0 : x0 + w] == index)
    fraction = float(visible.sum()) / placed.full_area
    rows, cols = np.flatnonzero(placed.mask.any(axis=1)), np.flatnonzero(placed.mask.any(axis=0))
    box = (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)
    if fraction < MIN_VISIBLE_FRACTION or min(box[2] - box[0], box[3] - box[1]) < 2:
        return None
    return RenderedObject(placed.cls, box, placed.mask, placed.origin, fraction, placed.outline)


# ---------------------------------------------------------------- images


def render_scene(rng: np.random.Generator, size: int = 320) -> Scene:
    """One synthetic image with its labelled objects (and their masks, for tests).

    Example: `scene = render_scene(image_rng(seed=0, split="val", index=7))`.
    """
    canvas = _background(rng, size)
    image = _as_image(canvas)
    _draw(image, _clutter(rng, size, int(rng.integers(2, 9)), thin=False))
    canvas = np.asarray(image, np.float32).copy()
    owner = np.full((size, size), -1, np.int16)  # which object shows at each pixel
    placed = [_place_object(canvas, owner, rng, k) for k in range(rng.integers(2, 13))]
    # Thin clutter in front of the objects: occluders that are not objects.
    image, occluders = _as_image(canvas), Image.new("L", (size, size), 0)
    front = _clutter(rng, size, int(rng.integers(0, 4)), thin=True)
    _draw(image, front)
    _draw(occluders, front, fill=255)
    owner[np.asarray(occluders) > 0] = -1
    canvas = np.asarray(image, np.float32)
    canvas = canvas + rng.standard_normal(canvas.shape, np.float32) * rng.uniform(0, 8)
    labelled = [_labelled(p, owner, k) for k, p in enumerate(placed) if p is not None]
    return Scene(_as_image(canvas), [o for o in labelled if o is not None])


def generate_image(
    rng: np.random.Generator, size: int = 320
) -> tuple[Image.Image, list[tuple[int, int, int, int, int]]]:
    """One synthetic RGB image and its labels as (cls, x0, y0, x1, y1) pixel boxes,
    x1 and y1 exclusive."""
    scene = render_scene(rng, size)
    return scene.image, [(o.cls, *o.box) for o in scene.objects]


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one image: independent of the order images are made in."""
    return np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(SPLITS.index(split), index))
    )


def yolo_label_lines(boxes: list[tuple[int, int, int, int, int]], size: int) -> list[str]:
    """`class cx cy w h`, normalised to the image size, 6 decimals."""
    lines = []
    for cls, x0, y0, x1, y1 in boxes:
        cx, cy, w, h = (
            (x0 + x1) / 2 / size,
            (y0 + y1) / 2 / size,
            (x1 - x0) / size,
            (y1 - y0) / size,
        )
        lines.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


# ---------------------------------------------------------------- datasets


def _write_sample(task: tuple[Path, str, int, int, int]):
    root, split, index, size, seed = task
    image, boxes = generate_image(image_rng(seed, split, index), size)
    stem = f"{index:06d}"
    image.save(root / "images" / split / f"{stem}{IMAGE_SUFFIX}", quality=JPEG_QUALITY)
    lines = yolo_label_lines(boxes, size)
    (root / "labels" / split / f"{stem}.txt").write_text("".join(f"{s}\n" for s in lines))


def _manifest(config: SyntheticConfig, complete: bool) -> dict:
    return {"generator": __name__, "version": GENERATOR_VERSION, "complete": complete,
            "image_format": IMAGE_SUFFIX[1:], **asdict(config)}  # fmt: skip


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def _write_manifest(root: Path, manifest: dict):
    tmp = root / f"{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, root / MANIFEST_NAME)  # atomic: never a half-written manifest


def _claim_root(root: Path, config: SyntheticConfig):
    """Empty our folders for a fresh dataset; refuse a non-empty folder that is not ours."""
    ours = (root / MANIFEST_NAME).is_file()
    if root.is_dir() and any(root.iterdir()) and not ours:
        raise YoloqError(f"{root} is not empty and holds no {MANIFEST_NAME}; not writing there")
    for folder in ("images", "labels"):
        shutil.rmtree(root / folder, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    # An incomplete manifest marks the folder as ours; `ensure_dataset` redoes it.
    _write_manifest(root, _manifest(config, complete=False))
    for split in SPLITS:
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)


def _write_data_yaml(root: Path, config: SyntheticConfig) -> Path:
    """Write data.yaml, with the absolute root as `path`, unless it is already so.

    With report images, the val images become the `select` split (what choices are made
    on) and the report images the `val` split (what every number is measured on)."""
    data = {"path": str(root.resolve()), "train": "images/train"}
    if config.report_images:
        data.update({"select": "images/val", "val": "images/report"})
    else:
        data["val"] = "images/val"
    data.update({"nc": len(CLASS_NAMES), "names": list(CLASS_NAMES)})
    path, text = root / "data.yaml", yaml.safe_dump(data, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def generate_dataset(
    out: str | Path,
    train_images: int = 4000,
    val_images: int = 500,
    size: int = 320,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    report_images: int = 0,
) -> Path:
    """Write the synthetic dataset under `out` (images/, labels/, data.yaml,
    synthetic.json) and return the path of data.yaml. The bytes depend on the seed and
    sizes only, not on `workers` (default: all CPU cores)."""
    config = SyntheticConfig(train_images, val_images, size, seed, report_images)
    root = Path(out)
    _claim_root(root, config)
    tasks = [(root, s, i, size, seed) for s in SPLITS for i in range(config.count(s))]
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    label = f"Synthetic dataset ({len(tasks)} images)"
    if workers == 1:
        for task in track(tasks, description=label, disable=not progress):
            _write_sample(task)
    else:
        with multiprocessing.Pool(workers) as pool:
            done = pool.imap_unordered(_write_sample, tasks, chunksize=8)
            for _ in track(done, total=len(tasks), description=label, disable=not progress):
                pass
    yaml_path = _write_data_yaml(root, config)
    _write_manifest(root, _manifest(config, complete=True))  # last: marks it finished
    return yaml_path


def ensure_dataset(
    root: str | Path,
    train_images: int = 4000,
    val_images: int = 500,
    size: int = 320,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    report_images: int = 0,
) -> Path:
    """The data.yaml of the synthetic dataset under `root`, generated only if `root`
    does not already hold a complete one made with these parameters by this version.

    Example: `data_yaml = ensure_dataset("~/.cache/yoloq/synthetic", val_images=500)`.
    """
    config = SyntheticConfig(train_images, val_images, size, seed, report_images)
    root = Path(root).expanduser()
    if _read_manifest(root) == _manifest(config, complete=True):
        return _write_data_yaml(root, config)  # rewritten only if the folder moved
    return generate_dataset(root, train_images, val_images, size, seed, workers, progress,
                            report_images)
