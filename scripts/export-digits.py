#!/usr/bin/env python3
"""Export scikit-learn's bundled 8x8 digits (1,797 images, 10 classes) as the
CSV files `weft train` reads: tests/data/digits/{train,test}.csv.

Each row is the 64 pixels scaled to [0, 1] (the data set's 0..16 divided by
16), then the digit. The held-out split is a fixed, stratified quarter
(scikit-learn's train_test_split, random_state=0). The CSVs are committed,
so the tests need no scikit-learn; this script is how they were made:

    python3 -m venv /tmp/skl && /tmp/skl/bin/pip install scikit-learn
    /tmp/skl/bin/python scripts/export-digits.py
"""
import os

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

out = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "digits")
os.makedirs(out, exist_ok=True)
x, y = load_digits(return_X_y=True)
x_train, x_test, y_train, y_test = train_test_split(
    x, y, test_size=0.25, random_state=0, stratify=y
)
header = ",".join(f"p{i}" for i in range(64)) + ",label\n"
for name, xs, ys in [("train", x_train, y_train), ("test", x_test, y_test)]:
    with open(os.path.join(out, f"{name}.csv"), "w") as f:
        f.write(header)
        for row, label in zip(xs, ys):
            f.write(",".join(f"{v / 16:g}" for v in row) + f",{label}\n")
print(f"{len(y_train)} training and {len(y_test)} test rows in {os.path.normpath(out)}")
