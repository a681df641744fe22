#!/usr/bin/env bash
# Build TensorRT FP16 engines from the face classifier ONNX files (age, gender, emotion) with trtexec.
#
#   models/export_classifier.sh [--workspace MiB] [--out DIR] [--cache DIR] [--trtexec PATH] [MODEL.onnx ...]
#
# Without MODEL arguments it builds the three classifiers that `watus models setup` put in the model cache
# (WATUS_MODELS_CACHE_DIR, default ~/.cache/watus/models): vision/age-v1.onnx, vision/gender-v1.onnx and
# vision/emotion-yolo11n-320.onnx. Each NAME.onnx gives NAME.engine in --out (default: next to the ONNX file).
# Static shapes: batch 1 at the size the ONNX file declares (age 64, gender 32, emotion 320), the way the
# service calls them. Runs only where trtexec exists: on the robot (JetPack: /usr/src/tensorrt/bin/trtexec)
# or an x86 box with TensorRT. Engines are tied to the GPU and TensorRT version: build them on the robot.
set -euo pipefail

WORKSPACE_MIB=1024
OUT=""
CACHE="${WATUS_MODELS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/watus/models}"
TRTEXEC="${TRTEXEC:-}"
MODELS=()

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --workspace) WORKSPACE_MIB="${2:?--workspace needs a size in MiB}"; shift 2 ;;
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    --cache) CACHE="${2:?--cache needs a folder}"; shift 2 ;;
    --trtexec) TRTEXEC="${2:?--trtexec needs a path}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "export_classifier.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) MODELS+=("$1"); shift ;;
  esac
done

if ! [[ "$WORKSPACE_MIB" =~ ^[0-9]+$ ]] || [ "$WORKSPACE_MIB" -lt 64 ]; then
  echo "export_classifier.sh: --workspace must be a whole number of MiB, at least 64" >&2; exit 2
fi
if [ -z "$TRTEXEC" ]; then
  TRTEXEC="$(command -v trtexec || true)"
  [ -z "$TRTEXEC" ] && [ -x /usr/src/tensorrt/bin/trtexec ] && TRTEXEC=/usr/src/tensorrt/bin/trtexec
fi
if [ -z "$TRTEXEC" ] || [ ! -x "$TRTEXEC" ]; then
  echo "export_classifier.sh: trtexec not found (JetPack ships /usr/src/tensorrt/bin/trtexec); give --trtexec" >&2
  exit 3
fi
if [ ${#MODELS[@]} -eq 0 ]; then
  MODELS=("$CACHE/vision/age-v1.onnx" "$CACHE/vision/gender-v1.onnx" "$CACHE/vision/emotion-yolo11n-320.onnx")
fi
for model in "${MODELS[@]}"; do
  if [ ! -f "$model" ]; then
    echo "export_classifier.sh: $model not found: run \`watus models setup\` first" >&2; exit 2
  fi
  case "$model" in *.onnx) ;; *) echo "export_classifier.sh: $model is not an .onnx file" >&2; exit 2 ;; esac
done

for model in "${MODELS[@]}"; do
  dir="${OUT:-$(dirname "$model")}"
  mkdir -p "$dir"
  engine="$dir/$(basename "${model%.onnx}").engine"
  echo "==> $model -> $engine (FP16, workspace ${WORKSPACE_MIB} MiB)"
  "$TRTEXEC" --onnx="$model" --saveEngine="$engine.part" --fp16 \
    --memPoolSize=workspace:"${WORKSPACE_MIB}M" --skipInference
  mv "$engine.part" "$engine"
done
echo "==> done"
