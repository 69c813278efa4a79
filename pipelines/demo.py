"""The embedded demo set: deterministic synthetic ant and bee scenes, generated once into a folder."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter
from tqdm.auto import tqdm

from pipelines.download import read_manifest, write_manifest

__all__ = ["DEMO_CLASSES", "DEMO_PER_CLASS", "DEMO_IMAGE_SIZE", "generate_demo"]

DEMO_CLASSES = ("ants", "bees")
DEMO_PER_CLASS = {"train": 30, "val": 30}  # subset → images per class; its order seeds the generator
DEMO_IMAGE_SIZE = 160
_DEMO_VERSION = 1
_DEMO_SEED = 20240517
_MANIFEST = "manifest.json"

logger = logging.getLogger(__name__)


def generate_demo(target: str | Path, verbose: bool = True) -> Path:
    """Generate the demo set into ``target`` (once; reused when its manifest is present and current).

    Two classes of synthetic 160 × 160 JPEG scenes, 30 train + 30 val per class, deterministic:
    "ants" — several small, dark, elongated three-segment insects with legs and antennae;
    "bees" — one to three larger yellow/black striped bodies with translucent wings.
    Both share textured backgrounds (grass, soil, foliage, sand, sky), clutter (twigs, pebbles, leaves, yellow
    flowers), rotation, scale, colour jitter, blur, noise and occlusion; about one image in eight is a hard case
    (a single pale bee half hidden by a leaf, or a lone large reddish ant).

    Parameters
    ----------
    target : str or Path
        Folder to hold ``train/{ants,bees}`` and ``val/{ants,bees}``.
    verbose : bool, default=True
        Show a progress bar while generating.

    Returns
    -------
    Path
        ``target``.
    """
    target = Path(target).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    manifest_path = target / _MANIFEST
    with FileLock(str(target.with_name(target.name + ".lock"))):
        if _current(manifest_path):
            return target
        if target.exists():
            shutil.rmtree(target)
        jobs = [
            (s_index, subset, label, i)
            for s_index, subset in enumerate(DEMO_PER_CLASS)
            for label in range(len(DEMO_CLASSES))
            for i in range(DEMO_PER_CLASS[subset])
        ]
        for s_index, subset, label, i in tqdm(jobs, desc="generating demo images", disable=not verbose):
            folder = target / subset / DEMO_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([_DEMO_SEED, s_index, label, i])
            _demo_image(rng, label).save(folder / f"{DEMO_CLASSES[label]}_{i:03d}.jpg", quality=90)
        manifest = {
            "version": _DEMO_VERSION,
            "seed": _DEMO_SEED,
            "classes": list(DEMO_CLASSES),
            "per_class": DEMO_PER_CLASS,
            "image_size": DEMO_IMAGE_SIZE,
        }
        write_manifest(manifest_path, manifest)
    return target


def _current(manifest_path: Path) -> bool:
    """Whether ``manifest_path`` records a complete generation of this version; a corrupt one means regenerate."""
    try:
        return read_manifest(manifest_path).get("version") == _DEMO_VERSION
    except ValueError as exc:
        logger.warning("%s; regenerating the demo set", exc)
        return False


_BACKGROUNDS = {
    "grass": (70, 120, 50),
    "foliage": (40, 75, 40),
    "soil": (110, 85, 60),
    "sand": (190, 170, 130),
    "sky": (140, 170, 200),
    "stone": (125, 125, 120),
}


def _demo_image(rng: np.random.Generator, label: int) -> Image.Image:
    """One synthetic scene of class ``label`` (0 ants, 1 bees)."""
    size = DEMO_IMAGE_SIZE
    image = _demo_background(rng, size)
    for _ in range(int(rng.integers(2, 8))):
        _paste(image, _clutter_sprite(rng), rng)
    hard = rng.random() < 0.125
    if label == 0:
        if hard:
            sprites = [_ant_sprite(rng, rng.uniform(44, 60), reddish=True) for _ in range(int(rng.integers(1, 3)))]
        else:
            sprites = [_ant_sprite(rng, rng.uniform(14, 34)) for _ in range(int(rng.integers(2, 7)))]
    else:
        if hard:
            sprites = [_bee_sprite(rng, rng.uniform(22, 30), pale=True)]
        else:
            sprites = [_bee_sprite(rng, rng.uniform(34, 60)) for _ in range(int(rng.integers(1, 4)))]
    centres = [_paste(image, sprite, rng) for sprite in sprites]
    if hard and label == 1:
        _paste(image, _leaf_sprite(rng, rng.uniform(16, 24)), rng, centre=centres[0])
    for _ in range(int(rng.integers(0, 3))):
        _paste(image, _clutter_sprite(rng), rng)
    image = image.convert("RGB")
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.2)))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, rng.uniform(2, 9), (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _demo_background(rng: np.random.Generator, size: int) -> Image.Image:
    """A textured background: base colour, low-frequency blotches, fine noise, and grass blades or speckles."""
    base = np.array(list(_BACKGROUNDS.values())[int(rng.integers(len(_BACKGROUNDS)))], dtype=np.float32)
    base += rng.normal(0, 15, 3)
    grid = int(rng.integers(3, 7))
    coarse = rng.uniform(0, 255, (grid, grid, 1)) + rng.normal(0, 25, (grid, grid, 3))
    blotches = Image.fromarray(np.uint8(np.clip(coarse, 0, 255))).resize((size, size), Image.BICUBIC)
    pixels = base + (np.asarray(blotches, dtype=np.float32) - 127.5) * rng.uniform(0.15, 0.45)
    pixels += rng.normal(0, rng.uniform(4, 14), (size, size, 1))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGBA")
    draw = ImageDraw.Draw(image)
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(20, 80))):
            x, y = rng.uniform(0, size, 2)
            length, angle = rng.uniform(8, 30), rng.uniform(-0.6, 0.6) - math.pi / 2
            shade = tuple(int(v) for v in np.clip(base + rng.normal(0, 30, 3), 0, 255))
            draw.line([(x, y), (x + length * math.cos(angle), y + length * math.sin(angle))], fill=shade, width=1)
    else:
        for _ in range(int(rng.integers(30, 120))):
            x, y, r = *rng.uniform(0, size, 2), rng.uniform(0.5, 2.5)
            shade = tuple(int(v) for v in np.clip(base + rng.normal(0, 45, 3), 0, 255))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=shade)
    return image


def _canvas(length: float, scale: int = 3) -> tuple[Image.Image, ImageDraw.ImageDraw, float]:
    """A transparent square canvas drawn at ``scale`` × the final size (downsampled later for anti-aliasing)."""
    side = int(math.ceil(length * 1.4 * scale)) + 4
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    return canvas, ImageDraw.Draw(canvas), side / 2


def _finish(canvas: Image.Image, rng: np.random.Generator, scale: int = 3) -> Image.Image:
    side = max(1, canvas.width // scale)
    sprite = canvas.resize((side, side), Image.LANCZOS)
    return sprite.rotate(float(rng.uniform(0, 360)), resample=Image.BICUBIC, expand=True)


def _ant_sprite(rng: np.random.Generator, length: float, reddish: bool = False) -> Image.Image:
    """A dark ant seen from above, body along the x axis: gaster, petiole, thorax, head, six legs, two antennae."""
    s = 3
    canvas, draw, c = _canvas(length, s)
    L = length * s
    if reddish:
        colour = (int(rng.integers(130, 180)), int(rng.integers(50, 80)), int(rng.integers(20, 40)), 255)
    else:
        v = int(rng.integers(10, 60))
        colour = (v + int(rng.integers(0, 30)), v, v, 255)
    w = L * rng.uniform(0.16, 0.22)
    segments = [(-0.5, -0.18, 1.0), (-0.16, -0.1, 0.45), (-0.1, 0.2, 0.65), (0.22, 0.42, 0.85)]
    for start, end, width in segments:
        draw.ellipse([c + start * L, c - w * width, c + end * L, c + w * width], fill=colour)
    stroke = max(1, int(L * 0.025))
    for k, x in enumerate((-0.05, 0.05, 0.15)):
        for sign in (-1, 1):
            knee = (c + x * L + (k - 1) * 0.08 * L, c + sign * L * 0.2)
            foot = (knee[0] + (k - 1) * 0.12 * L + rng.normal(0, 0.03) * L, c + sign * L * 0.33)
            draw.line([(c + x * L, c), knee, foot], fill=colour, width=stroke)
    for sign in (-1, 1):
        elbow = (c + 0.55 * L, c + sign * 0.12 * L)
        tip = (c + 0.68 * L, c + sign * rng.uniform(0.18, 0.28) * L)
        draw.line([(c + 0.4 * L, c + sign * 0.03 * L), elbow, tip], fill=colour, width=stroke)
    return _finish(canvas, rng, s)


def _bee_sprite(rng: np.random.Generator, length: float, pale: bool = False) -> Image.Image:
    """A bee seen from above: striped yellow/black abdomen, dark head, translucent wings."""
    s = 3
    canvas, draw, c = _canvas(length, s)
    L = length * s
    w = L * rng.uniform(0.26, 0.34)
    yellow = np.array([rng.integers(215, 256), rng.integers(160, 215), rng.integers(10, 70)])
    if pale:
        yellow = (yellow + np.array([160, 150, 130])) / 2
    yellow = tuple(int(v) for v in yellow) + (255,)
    black = (int(rng.integers(15, 50)),) * 3 + (255,)
    body = Image.new("L", canvas.size, 0)
    ImageDraw.Draw(body).ellipse([c - 0.5 * L, c - w, c + 0.3 * L, c + w], fill=255)
    stripes = Image.new("RGBA", canvas.size, yellow)
    stripe_draw = ImageDraw.Draw(stripes)
    period = L * rng.uniform(0.13, 0.18)
    x = c - 0.5 * L + period * rng.uniform(0.3, 0.7)
    while x < c + 0.3 * L:
        stripe_draw.rectangle([x, 0, x + period * 0.45, canvas.height], fill=black)
        x += period
    canvas.paste(stripes, (0, 0), body)
    draw.ellipse([c + 0.25 * L, c - w * 0.6, c + 0.48 * L, c + w * 0.6], fill=black)
    wing = (int(rng.integers(200, 240)),) * 3 + (int(rng.integers(90, 160)),)
    wings = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    wing_draw = ImageDraw.Draw(wings)
    for sign in (-1, 1):
        y0 = c + sign * w * 0.4
        y1 = c + sign * (w * 0.4 + L * rng.uniform(0.32, 0.42))
        wing_draw.ellipse([c - 0.15 * L, min(y0, y1), c + 0.15 * L, max(y0, y1)], fill=wing)
    canvas.alpha_composite(wings)
    return _finish(canvas, rng, s)


def _leaf_sprite(rng: np.random.Generator, length: float) -> Image.Image:
    s = 3
    canvas, draw, c = _canvas(length, s)
    L = length * s
    green = (int(rng.integers(30, 90)), int(rng.integers(90, 160)), int(rng.integers(20, 70)), 255)
    draw.ellipse([c - 0.5 * L, c - 0.2 * L, c + 0.5 * L, c + 0.2 * L], fill=green)
    draw.line([(c - 0.5 * L, c), (c + 0.5 * L, c)], fill=tuple(v // 2 for v in green[:3]) + (255,), width=s)
    return _finish(canvas, rng, s)


def _clutter_sprite(rng: np.random.Generator) -> Image.Image:
    """Distractors common to both classes: twigs (dark, elongated), pebbles, leaves, yellow-centred flowers."""
    kind = int(rng.integers(4))
    if kind == 2:
        return _leaf_sprite(rng, rng.uniform(14, 34))
    s = 3
    length = rng.uniform(12, 40)
    canvas, draw, c = _canvas(length, s)
    L = length * s
    if kind == 0:
        brown = (int(rng.integers(50, 100)), int(rng.integers(35, 70)), int(rng.integers(20, 45)), 255)
        draw.line([(c - 0.5 * L, c), (c + 0.5 * L, c + rng.normal(0, 0.05) * L)], fill=brown, width=int(L * 0.06) + 1)
        draw.line([(c, c), (c + 0.2 * L, c - 0.2 * L)], fill=brown, width=int(L * 0.04) + 1)
    elif kind == 1:
        grey = (int(rng.integers(90, 190)),) * 3 + (255,)
        draw.ellipse([c - 0.3 * L, c - 0.2 * L, c + 0.3 * L, c + 0.2 * L], fill=grey)
    else:
        petal = [(255, 255, 255), (240, 170, 200), (200, 160, 230)][int(rng.integers(3))]
        n_petals = int(rng.integers(5, 9))
        for k in range(n_petals):
            angle = 2 * math.pi * k / n_petals
            px, py = c + 0.28 * L * math.cos(angle), c + 0.28 * L * math.sin(angle)
            draw.ellipse([px - 0.13 * L, py - 0.13 * L, px + 0.13 * L, py + 0.13 * L], fill=petal + (255,))
        draw.ellipse([c - 0.14 * L, c - 0.14 * L, c + 0.14 * L, c + 0.14 * L], fill=(240, 200, 30, 255))
    return _finish(canvas, rng, s)


def _paste(
    image: Image.Image, sprite: Image.Image, rng: np.random.Generator, centre: tuple[float, float] | None = None
) -> tuple[float, float]:
    """Alpha-composite ``sprite`` at a random (or given) centre; sprites may extend past the border."""
    if centre is None:
        centre = tuple(rng.uniform(0.1, 0.9, 2) * image.width)
        offset = (0.0, 0.0)
    else:
        offset = tuple(rng.normal(0, 6, 2))
    x = int(round(centre[0] + offset[0] - sprite.width / 2))
    y = int(round(centre[1] + offset[1] - sprite.height / 2))
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    layer.paste(sprite, (x, y))
    image.alpha_composite(layer)
    return centre
