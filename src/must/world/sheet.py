"""A contact sheet of the world: for a few images of each domain, every label side by side.

Shows what ``must demo`` shows until the pipeline exists, and what the paper's Figure 4 shows
for a student's predictions: the image with its class and boxes, the segmentation overlay, the
depth map and the surface normals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from must.world.domains import DOMAINS
from must.world.render import SEGMENTATION_CLASSES, WorldImage, render_image
from must.world.scene import CATEGORIES


def palette() -> np.ndarray:
    """One RGB colour in [0, 1] per segmentation class (stuff first, then categories)."""
    from matplotlib import colormaps

    stuff = np.array([[0.55, 0.45, 0.35], [0.7, 0.7, 0.75], [0.55, 0.75, 0.95]])
    objects = colormaps["tab20"](np.linspace(0, 1, 20))[: len(CATEGORIES), :3]
    # Even tab20 entries first: neighbouring categories get clearly different hues.
    order = np.argsort(np.arange(len(CATEGORIES)) % 2, kind="stable")
    return np.concatenate([stuff, objects[order]])


def colorize_normals(normals: np.ndarray) -> np.ndarray:
    """Unit normals -> RGB (x, y, z in [-1, 1] -> [0, 1]); black where there is none."""
    valid = np.linalg.norm(normals, axis=-1, keepdims=True) > 0
    return np.where(valid, (normals + 1) / 2, 0.0).clip(0, 1)


def _panels(image: WorldImage) -> list[tuple[str, np.ndarray, str | None]]:
    from matplotlib import colormaps

    colors = palette()
    overlay = 0.4 * image.rgb / 255 + 0.6 * colors[image.segmentation]
    depth = image.depth
    valid = depth > 0
    scaled = np.where(valid, depth / max(float(depth[valid].max(initial=1e-3)), 1e-3), 0)
    depth_rgb = np.where(valid[..., None], colormaps["magma_r"](scaled)[..., :3], 1.0)
    return [(CATEGORIES[image.label], image.rgb, "boxes"), ("segmentation", overlay, None),
            (f"depth <= {depth.max():.1f} m", depth_rgb, None),
            ("normals", colorize_normals(image.normals), None)]


def sample_sheet(out_png: Path, domains: list[str] | None = None, per_domain: int = 3,
                 size: int = 96, seed: int = 0) -> Path:
    """Renders ``per_domain`` images of each domain and saves the labelled grid to ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    domains = list(DOMAINS) if domains is None else domains
    columns = 4 * per_domain
    figure, axes = plt.subplots(len(domains), columns, squeeze=False,
                                figsize=(1.45 * columns, 1.65 * len(domains)))
    colors = palette()
    for row, domain in enumerate(domains):
        for sample in range(per_domain):
            image = render_image(domain, seed, sample, size)
            for panel, (title, picture, extra) in enumerate(_panels(image)):
                axis = axes[row, 4 * sample + panel]
                axis.imshow(picture, interpolation="nearest")
                axis.set_title(title, fontsize=7)
                axis.set_xticks([])
                axis.set_yticks([])
                if extra == "boxes":
                    for (x0, y0, x1, y1), label in zip(image.boxes, image.box_labels, strict=True):
                        axis.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                                 linewidth=0.8, edgecolor=colors[3 + label]))
                if panel == 0 and sample == 0:
                    axis.set_ylabel(domain, fontsize=9)
    figure.suptitle("must world: image + class + boxes | segmentation | depth | normals "
                    f"({len(SEGMENTATION_CLASSES)} classes)", fontsize=9)
    figure.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=110)
    plt.close(figure)
    return out_png
