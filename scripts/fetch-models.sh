#!/usr/bin/env bash
# Fetches the PP-OCRv4 models the `ocr` guest uses, from the PyPI wheel of
# rapidocr-onnxruntime 1.4.4, into models/ at the repository root:
#
#   models/ch_PP-OCRv4_det_infer.onnx          text detection
#   models/ch_PP-OCRv4_rec_infer.onnx          text recognition
#   models/ch_ppocr_mobile_v2.0_cls_infer.onnx angle classifier (not used by ocr)
#   models/ppocr_keys.txt                      the rec model's character list
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

# 1. The wheel.
mkdir -p "$cache" "$models"
wheel=$cache/$WHEEL_NAME
if [[ -f $wheel && $(sha256 "$wheel") == "$WHEEL_SHA256" ]]; then
  echo "wheel: $wheel (cached, sha256 ok)"
else
  rm -f "$wheel"
  echo "wheel: downloading rapidocr-onnxruntime==1.4.4 from PyPI into $cache"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$cache" "rapidocr-onnxruntime==1.4.4" ||
    die "pip could not download rapidocr-onnxruntime==1.4.4; is PyPI reachable (network, proxy, PIP_INDEX_URL)?"
  [[ -f $wheel ]] || die "pip did not produce $wheel"
  got=$(sha256 "$wheel")
  if [[ $got != "$WHEEL_SHA256" ]]; then
    rm -f "$wheel"
    die "$WHEEL_NAME has sha256 $got, expected $WHEEL_SHA256; refusing to use it"
  fi
  echo "wheel: sha256 ok"
fi

# 2. The models.
for entry in "${MODELS[@]}"; do
  read -r name want <<<"$entry"
  out=$models/$name
  if [[ -f $out && $(sha256 "$out") == "$want" ]]; then
    echo "model: $out (present, sha256 ok)"
    continue
  fi
  "$python" - "$wheel" "rapidocr_onnxruntime/models/$name" "$out.part" <<'EOF' ||
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
    die "cannot extract $name from $wheel"
  got=$(sha256 "$out.part")
  if [[ $got != "$want" ]]; then
    rm -f "$out.part"
    die "$name from the wheel has sha256 $got, expected $want"
  fi
  mv "$out.part" "$out"
  echo "model: $out (extracted, sha256 ok)"
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
