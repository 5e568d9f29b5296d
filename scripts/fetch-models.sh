#!/usr/bin/env bash
# Fetches the PP-OCRv4 models the `ocr` guest uses, from the PyPI wheel of
# rapidocr-onnxruntime 1.4.4, and MediaPipe's TFLite models, from its
# 0.10.14 wheel, into models/ at the repository root:
#
#   models/ch_PP-OCRv4_det_infer.onnx          text detection
#   models/ch_PP-OCRv4_rec_infer.onnx          text recognition
#   models/ch_ppocr_mobile_v2.0_cls_infer.onnx angle classifier (not used by ocr)
#   models/ppocr_keys.txt                      the rec model's character list
#   models/tflite/*.tflite                     MediaPipe 0.10.14's TFLite models
#
# Every download and file is checked against the sha256 pinned below. Safe to
# run again: files that are already right are left alone.
#
# Environment:
#   WEFT_WHEEL_CACHE  where the wheel is kept (default: $HOME/.cache/weft/wheels)
#   WEFT_MODELS_DIR   where the models go (default: <repo>/models)
#   PYTHON            the Python 3 to run pip with (default: python3)
set -euo pipefail

WHEEL_NAME=rapidocr_onnxruntime-1.4.4-py3-none-any.whl
WHEEL_SHA256=971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf
# File in the wheel, sha256.
MODELS=(
  "ch_PP-OCRv4_det_infer.onnx d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"
  "ch_PP-OCRv4_rec_infer.onnx 48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"
  "ch_ppocr_mobile_v2.0_cls_infer.onnx e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"
)
REC_MODEL=ch_PP-OCRv4_rec_infer.onnx
# MediaPipe's published TFLite models (float16 weights behind DEQUANTIZE;
# PRELU; one with a custom operator), for the TFLite front end's tests.
MEDIAPIPE_VERSION=0.10.14
MEDIAPIPE_WHEEL=mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
MEDIAPIPE_SHA256=a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4
TFLITE_MODELS=(
  "face_detection/face_detection_short_range.tflite bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"
  "hand_landmark/hand_landmark_lite.tflite 048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6"
  "iris_landmark/iris_landmark.tflite d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f"
  "palm_detection/palm_detection_lite.tflite e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18"
  "selfie_segmentation/selfie_segmentation.tflite 9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"
)
KEYS=ppocr_keys.txt

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${WEFT_WHEEL_CACHE:-$HOME/.cache/weft/wheels}
models=${WEFT_MODELS_DIR:-$repo/models}
python=${PYTHON:-python3}

die() {
  echo "fetch-models: $*" >&2
  exit 1
}

command -v "$python" >/dev/null ||
  die "$python not found; install Python 3 (with pip) or set PYTHON=/path/to/python3"
"$python" -m pip --version >/dev/null 2>&1 ||
  die "pip is not available for $python; install it (e.g. apt-get install python3-pip) or set PYTHON"

sha256() {
  "$python" - "$1" <<'EOF'
import hashlib, sys
with open(sys.argv[1], "rb") as f:
    print(hashlib.file_digest(f, "sha256").hexdigest() if hasattr(hashlib, "file_digest")
          else hashlib.sha256(f.read()).hexdigest())
EOF
}

# Download a wheel (pip, no dependencies) into the cache and check it.
fetch_wheel() {
  local spec=$1 name=$2 want=$3 wheel=$cache/$2
  shift 3
  if [[ -f $wheel && $(sha256 "$wheel") == "$want" ]]; then
    echo "wheel: $wheel (cached, sha256 ok)"
    return
  fi
  rm -f "$wheel"
  echo "wheel: downloading $spec from PyPI into $cache"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: "$@" \
    --dest "$cache" "$spec" ||
    die "pip could not download $spec; is PyPI reachable (network, proxy, PIP_INDEX_URL)?"
  [[ -f $wheel ]] || die "pip did not produce $wheel"
  local got
  got=$(sha256 "$wheel")
  if [[ $got != "$want" ]]; then
    rm -f "$wheel"
    die "$name has sha256 $got, expected $want; refusing to use it"
  fi
  echo "wheel: sha256 ok"
}

# Extract one member of a wheel to a file and check it.
extract() {
  local wheel=$1 member=$2 out=$3 want=$4
  if [[ -f $out && $(sha256 "$out") == "$want" ]]; then
    echo "model: $out (present, sha256 ok)"
    return
  fi
  mkdir -p "$(dirname "$out")"
  "$python" - "$wheel" "$member" "$out.part" <<'EOF' ||
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
    die "cannot extract $member from $wheel"
  local got
  got=$(sha256 "$out.part")
  if [[ $got != "$want" ]]; then
    rm -f "$out.part"
    die "$member from the wheel has sha256 $got, expected $want"
  fi
  mv "$out.part" "$out"
  echo "model: $out (extracted, sha256 ok)"
}

# 1. The wheel.
mkdir -p "$cache" "$models"
wheel=$cache/$WHEEL_NAME
fetch_wheel "rapidocr-onnxruntime==1.4.4" "$WHEEL_NAME" "$WHEEL_SHA256"

# 2. The models.
for entry in "${MODELS[@]}"; do
  read -r name want <<<"$entry"
  extract "$wheel" "rapidocr_onnxruntime/models/$name" "$models/$name" "$want"
done

# 2b. TensorFlow Lite models from MediaPipe's wheel (its CPython 3.11
# manylinux build, whatever Python runs pip: the .tflite files are the same).
fetch_wheel "mediapipe==$MEDIAPIPE_VERSION" "$MEDIAPIPE_WHEEL" "$MEDIAPIPE_SHA256" \
  --python-version 3.11 --platform manylinux2014_x86_64 --implementation cp --abi cp311
for entry in "${TFLITE_MODELS[@]}"; do
  read -r member want <<<"$entry"
  extract "$cache/$MEDIAPIPE_WHEEL" "mediapipe/modules/$member" "$models/tflite/$(basename "$member")" "$want"
done

# 3. The character list, stored in the rec model's ONNX metadata under
# `character`. ModelProto.metadata_props is field 14, a StringStringEntryProto
# with key = 1 and value = 2; walking the protobuf needs no onnx package.
"$python" - "$models/$REC_MODEL" "$models/$KEYS" <<'EOF' || die "cannot extract the character list from $REC_MODEL"
import sys

def varint(buf, pos):
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7

def fields(buf):
    """Yields (field number, wire type, value) of one protobuf message."""
    pos = 0
    while pos < len(buf):
        tag, pos = varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value

model_path, keys_path = sys.argv[1:]
with open(model_path, "rb") as f:
    model = memoryview(f.read())
character = None
for number, wire, value in fields(model):
    if number == 14 and wire == 2:
        entry = {n: bytes(v).decode("utf-8") for n, w, v in fields(value) if w == 2}
        if entry.get(1) == "character":
            character = entry.get(2, "")
if character is None:
    sys.exit(f"{model_path} has no 'character' metadata")
# rapidocr reads the list with str.splitlines().
lines = character.splitlines()
text = "\n".join(lines) + "\n"
try:
    with open(keys_path, encoding="utf-8") as f:
        unchanged = f.read() == text
except FileNotFoundError:
    unchanged = False
if not unchanged:
    with open(keys_path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
state = "present, unchanged" if unchanged else "written"
print(f"keys: {keys_path} ({state}, {len(lines)} characters; the rec model has {len(lines) + 2} classes)")
EOF

echo "done: models in $models"
