#!/usr/bin/env python3
r"""Render testdata/sample.png: a few lines of clear English text for OCR tests.

Needs Pillow and the DejaVu fonts (Debian/Ubuntu: fonts-dejavu-core).

    python3 make_sample.py            # writes sample.png next to this script

expected.txt holds the lines rapidocr-onnxruntime 1.4.4 reads from the image
(default settings, angle classifier included), made in this directory with:

    python3 -m venv /tmp/venv
    /tmp/venv/bin/pip install rapidocr-onnxruntime==1.4.4 onnxruntime==1.32.0 \
        opencv-python-headless
    /tmp/venv/bin/python -c 'from rapidocr_onnxruntime import RapidOCR; \
        r, _ = RapidOCR()("sample.png"); print("\n".join(t for _, t, _ in r))' \
        > expected.txt
"""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
LINES = [
    ("DejaVuSans-Bold.ttf", 36, "Weft Sample Page"),
    ("DejaVuSans.ttf", 28, "The quick brown fox jumps over the lazy dog."),
    ("DejaVuSans.ttf", 28, "Total due: 42.50 EUR (invoice 2024-118)"),
    ("DejaVuSerif.ttf", 28, "WebAssembly runs models on the host."),
    ("DejaVuSansCondensed.ttf", 28, "Parcel 7731 shipped on 12 May 2025"),
]
WIDTH, MARGIN, SPACING = 800, 30, 24


def main() -> None:
    fonts = [ImageFont.truetype(str(FONT_DIR / name), size) for name, size, _ in LINES]
    heights = [f.getbbox(text)[3] for f, (_, _, text) in zip(fonts, LINES)]
    height = 2 * MARGIN + sum(heights) + SPACING * (len(LINES) - 1)
    # Grayscale keeps the PNG small; OCR pipelines convert it to 3 channels.
    img = Image.new("L", (WIDTH, height), 255)
    draw = ImageDraw.Draw(img)
    y = MARGIN
    for font, h, (_, _, text) in zip(fonts, heights, LINES):
        draw.text((MARGIN, y), text, font=font, fill=0)
        y += h + SPACING
    out = Path(__file__).with_name("sample.png")
    img.save(out, optimize=True)
    print(f"wrote {out} ({img.width}x{img.height}, {out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
