"""Detect objects with an SSD net: ``convnet run --detect``.

Each image is resized to the net's input size (no crop: SSD sees the whole image), scaled to
0..255 BGR, mean subtracted and multiplied by ``scale`` (Caffe's Transformer order: raw scale,
mean, input scale; MobileNet-SSD uses mean 127.5 and scale 0.007843, the SSD fork's own models
mean 104,117,123 and scale 1). The rows of the net's DetectionOutput top with a score of at least
``threshold`` become boxes in the original image's pixels; ``draw`` writes them onto a copy.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convnet_io.errors import ConvnetError
from convnet_io.graph import inference_view
from convnet_io.tools.classify import data_input
from convnet_io.tools.prefetch import expand_folders
from convnet_io.tools.preprocess import (
    RAW_SCALE,
    RGB_TO_BGR,
    ImageError,
    load_image,
    prepare_mean,
    resize_image,
    to_blob,
)


@dataclass(frozen=True)
class Detection:
    label: int
    name: str | None
    score: float
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in image pixels

    def to_json(self) -> dict:
        return {"label": self.label, "name": self.name, "score": self.score, "box": list(self.box)}


@dataclass
class ImageDetections:
    path: str
    size: tuple[int, int] = (0, 0)  # width, height
    detections: list[Detection] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict:
        return {"path": self.path, "width": self.size[0], "height": self.size[1],
                "detections": [d.to_json() for d in self.detections]}


def detection_output(net) -> str:
    """The value the net's (last) DetectionOutput layer writes."""
    nodes = [n for n in inference_view(net.graph).nodes if n.type == "DetectionOutput"]
    if not nodes:
        raise ConvnetError("--detect needs a net with a DetectionOutput layer (an SSD net)")
    return nodes[-1].tops[0]


def rows_to_detections(rows: np.ndarray, width: int, height: int, threshold: float,
                       labels: Sequence[str] | None = None) -> list[Detection]:
    """DetectionOutput rows (image, label, score, xmin, ymin, xmax, ymax in [0, 1]) of one image as
    pixel boxes, clipped to the image, best first."""
    out = []
    for row in np.asarray(rows, dtype=np.float64).reshape(-1, 7):
        label, score = int(row[1]), float(row[2])
        if label < 0 or score < threshold:
            continue
        x0, x1 = (float(np.clip(v * width, 0, width)) for v in (row[3], row[5]))
        y0, y1 = (float(np.clip(v * height, 0, height)) for v in (row[4], row[6]))
        name = labels[label] if labels is not None and 0 <= label < len(labels) else None
        out.append(Detection(label, name, score, (x0, y0, x1, y1)))
    return sorted(out, key=lambda d: -d.score)


def detect(net, images: Sequence[str | os.PathLike], mean=None, scale: float = 1.0, threshold: float = 0.5,
           labels: Sequence[str] | None = None) -> list[ImageDetections]:
    """Run the SSD net on each image; a bad image gives an entry with ``error``, not an exception."""
    output = detection_output(net)
    images = expand_folders(images)  # a folder stands for the image files in it
    input_id, (channels, h, w) = data_input(net)
    mean = prepare_mean(mean, (h, w), channels) if mean is not None else None
    results = []
    for path in images:
        try:
            image = load_image(path, color=channels == 3)
        except ImageError as e:
            results.append(ImageDetections(str(path), error=e.reason))
            continue
        height, width = image.shape[:2]
        blob = to_blob(resize_image(image, (h, w))[None], mean, RAW_SCALE,
                       RGB_TO_BGR if channels == 3 else None)
        if scale != 1.0:
            blob *= np.float32(scale)
        rows = net.forward({input_id: blob}, [output])[output]
        results.append(ImageDetections(str(path), (width, height),
                                       rows_to_detections(rows, width, height, threshold, labels)))
    return results


def draw(path: str | os.PathLike, detections: Sequence[Detection], out: str | os.PathLike) -> None:
    """The image with each box and its label and score drawn on it, written to ``out``."""
    from PIL import Image, ImageDraw

    from convnet_io.atomic import write_bytes_atomic

    with Image.open(path) as img:
        img = img.convert("RGB")
    pen = ImageDraw.Draw(img)
    for d in detections:
        pen.rectangle(d.box, outline=(255, 0, 0), width=max(1, round(min(img.size) / 200)))
        caption = f"{d.name if d.name is not None else d.label} {d.score:.2f}"
        pen.text((d.box[0] + 2, d.box[1] + 1), caption, fill=(255, 255, 0))
    import io

    buffer = io.BytesIO()
    suffix = Path(out).suffix.lower().lstrip(".") or "png"
    try:
        img.save(buffer, format={"jpg": "JPEG", "jpeg": "JPEG"}.get(suffix, suffix.upper()))
    except (KeyError, ValueError, OSError) as e:
        raise ConvnetError(f"{out}: cannot write the image: {e}") from None
    write_bytes_atomic(out, buffer.getvalue())


def drawn_path(out: str | os.PathLike, image: str | os.PathLike, many: bool) -> Path:
    """Where ``--draw OUT`` puts an image's drawing: OUT itself for one image, else OUT/<name>."""
    out = Path(out)
    if many or out.is_dir():
        return out / f"{Path(image).stem}_detections.png"
    return out
