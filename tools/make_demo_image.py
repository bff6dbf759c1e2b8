#!/usr/bin/env python3
"""Draw a deterministic synthetic 320x240 colour test image: ``make_demo_image.py OUT.png``.

The demo classifies it because users do not have the shared sample photos. The same
picture (byte for byte, as PNG) comes out on every run: colour gradients, a few filled
shapes and a checkerboard patch, no randomness and no fonts.
"""
from __future__ import annotations

import sys

import numpy as np

WIDTH, HEIGHT = 320, 240


def make_demo_image():
    """The demo picture as a Pillow RGB image."""
    from PIL import Image, ImageDraw

    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    r = 255.0 * x / (WIDTH - 1)
    g = 255.0 * y / (HEIGHT - 1)
    b = 127.5 + 127.5 * np.sin((x + y) / 40.0)
    rgb = np.clip(np.rint(np.stack([r, g, b], axis=2)), 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB")

    draw = ImageDraw.Draw(img)
    draw.ellipse((30, 40, 130, 140), fill=(250, 200, 40), outline=(20, 20, 20), width=3)
    draw.rectangle((180, 30, 290, 110), fill=(30, 90, 200), outline=(255, 255, 255), width=2)
    draw.polygon([(160, 220), (230, 130), (300, 220)], fill=(200, 40, 60))
    for i in range(6):  # a small checkerboard
        for j in range(6):
            if (i + j) % 2 == 0:
                draw.rectangle((40 + 10 * j, 170 + 10 * i, 49 + 10 * j, 179 + 10 * i), fill=(0, 0, 0))
    draw.line((0, HEIGHT - 1, WIDTH - 1, 0), fill=(255, 255, 255), width=2)
    return img


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: make_demo_image.py OUT.png", file=sys.stderr)
        return 2
    make_demo_image().save(argv[0])
    print(f"wrote {argv[0]}: {WIDTH}x{HEIGHT} synthetic test image")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
