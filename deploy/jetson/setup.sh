#!/usr/bin/env bash
# Prepare a Jetson AGX Orin (JetPack 6.1+/L4T r36.4, CUDA 12.6, TensorRT 10.3) to run Watus on the GPU:
#   sudo deploy/jetson/setup.sh --trtllm-wheel PATH|URL   # NVIDIA's TensorRT-LLM 0.12.0-jetson wheel
#   sudo deploy/jetson/setup.sh --build-trtllm            # or build it from the v0.12.0-jetson branch
#   deploy/jetson/setup.sh --check                        # only check the platform and the venv
# Run it before deploy/install.sh: it creates the venv that install.sh then fills with Watus.
# What it does, in order, each step skipped when already done (the script is idempotent):
#   1. checks L4T/JetPack (/etc/nv_tegra_release, dpkg nvidia-l4t-core), CUDA and TensorRT versions;
#      refuses on anything but a Jetson with L4T r36.4+ unless --force;
#   2. power: MAX-N (nvpmodel -m 0) and jetson_clocks (--no-maxn, --no-clocks; --persist-clocks adds a
#      unit that runs jetson_clocks at every boot);
#   3. apt prerequisites and cuSPARSELt (as NVIDIA's TensorRT-LLM Jetson guide lists them);
#   4. the venv (--system-site-packages, so JetPack's python3-libnvinfer `tensorrt` is importable) with
#      the v0.12.0-jetson branch's own pins (requirements-jetson.txt): numpy<2 (1.26.1), the JetPack 6.1
#      torch 2.5.0a0 wheel, nvidia-modelopt~=0.15.0, before anything else can pull another torch;
#   5. TensorRT-LLM 0.12.0-jetson (the wheel, or the source build with --cuda_architectures 87
#      -DENABLE_MULTI_DEVICE=0; first checks that pip sees `tensorrt`, which build_wheel.py needs) and
#      its examples/ (the converters `watus models build-llm` runs);
#   6. CTranslate2 with CUDA (faster-whisper) and onnxruntime-gpu (vision classifiers, Silero VAD);
#   7. optional: --vision-tools (a tool venv with CUDA torch, ultralytics and onnxscript for
#      `watus models export-yolo`), --jtop (jetson-stats);
#   8. checks what the venv can import on the GPU, and prints the container alternative.
# Options:
#   --dry-run            print every command instead of running it (probing still reads the system)
#   --check              check the platform and the venv, change nothing (exit 5 if something is missing)
#   --force              go on although this is not a supported Jetson (for dry runs elsewhere)
#   --venv DIR           the services' venv (default /opt/watus/venv, the one deploy/install.sh uses)
#   --index-url URL      pip index with JetPack 6 / CUDA 12.6 wheels (default $JETSON_INDEX_DEFAULT below)
#   --trtllm-wheel W     install TensorRT-LLM from this wheel file or URL
#   --build-trtllm       build TensorRT-LLM from the v0.12.0-jetson branch (about 1-2 hours on an Orin)
#   --trtllm-src DIR     TensorRT-LLM sources and examples (default /opt/TensorRT-LLM)
#   --no-maxn --no-clocks --persist-clocks   power settings (see 2.)
#   --no-python          skip steps 3-6 (only the checks and the power settings)
#   --no-speech          skip CTranslate2 and onnxruntime-gpu
#   --vision-tools [DIR] tool venv for YOLO/classifier exports (default DIR /opt/watus/tools)
#   --jtop               install jetson-stats (jtop) system-wide
#   --containers         print the jetson-containers alternative and exit
# Exit status: 0 ok, 2 bad usage, 3 not a Jetson, 4 unsupported JetPack/L4T, 5 problems found (see above).
# Tests: WATUS_JETSON_ROOT=DIR reads etc/nv_tegra_release, usr/local/cuda/... and proc/device-tree/model
# under DIR instead of /; the tools it asks (dpkg-query, nvcc, nvpmodel, uname) are looked up on PATH.
set -euo pipefail

JETSON_INDEX_DEFAULT="https://pypi.jetson-ai-lab.io/jp6/cu126"
TRTLLM_REPO="https://github.com/NVIDIA/TensorRT-LLM.git"
TRTLLM_BRANCH="v0.12.0-jetson"
CUSPARSELT_SCRIPT="https://raw.githubusercontent.com/pytorch/pytorch/9b424aac1d70f360479dd919d6b7933b5a9181ac/.ci/docker/common/install_cusparselt.sh"
CLOCKS_UNIT="/etc/systemd/system/watus-jetson-clocks.service"
# The v0.12.0-jetson branch's requirements-jetson.txt pins this torch (JetPack 6.1, CUDA 12.6, Python 3.10),
# nvidia-modelopt~=0.15.0 and numpy<2; its scripts/build_wheel.py reinstalls requirements-dev-jetson.txt
# (which includes it) before building, replacing any other torch. So the venv gets exactly these, first.
TORCH_WHEEL="https://developer.download.nvidia.com/compute/redist/jp/v61/pytorch/torch-2.5.0a0+872d972e41.nv24.08.17622132-cp310-cp310-linux_aarch64.whl"
TORCH_VERSION="2.5.0a0+872d972e41"
MODELOPT_PIN="nvidia-modelopt~=0.15.0"
NUMPY_VERSION="1.26.1"  # NVIDIA's Jetson guide; within the branch's numpy<2

ROOT="${WATUS_JETSON_ROOT:-}"
DRY=0
CHECK=0
FORCE=0
VENV="/opt/watus/venv"
INDEX="$JETSON_INDEX_DEFAULT"
TRTLLM_WHEEL=""
BUILD_TRTLLM=0
TRTLLM_SRC="/opt/TensorRT-LLM"
MAXN=1
CLOCKS=1
PERSIST_CLOCKS=0
PYTHON_STACK=1
SPEECH=1
TOOLS_VENV=""
JTOP=0
CONTAINERS=0
PROBLEMS=0

usage() { sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; }
die() { local code="$1"; shift; printf 'setup.sh: %s\n' "$*" >&2; exit "$code"; }
say() { printf '==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*"; }
problem() { printf 'problem: %s\n' "$*"; PROBLEMS=$((PROBLEMS + 1)); }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --check) CHECK=1; shift ;;
    --force) FORCE=1; shift ;;
    --venv) VENV="${2:?--venv needs a directory}"; shift 2 ;;
    --index-url) INDEX="${2:?--index-url needs a URL}"; shift 2 ;;
    --trtllm-wheel) TRTLLM_WHEEL="${2:?--trtllm-wheel needs a wheel file or URL}"; shift 2 ;;
    --build-trtllm) BUILD_TRTLLM=1; shift ;;
    --trtllm-src) TRTLLM_SRC="${2:?--trtllm-src needs a directory}"; shift 2 ;;
    --no-maxn) MAXN=0; shift ;;
    --no-clocks) CLOCKS=0; shift ;;
    --persist-clocks) PERSIST_CLOCKS=1; shift ;;
    --no-python) PYTHON_STACK=0; shift ;;
    --no-speech) SPEECH=0; shift ;;
    --vision-tools)
      if [ $# -gt 1 ] && [ "${2#--}" = "$2" ]; then TOOLS_VENV="$2"; shift 2; else TOOLS_VENV="/opt/watus/tools"; shift; fi ;;
    --jtop) JTOP=1; shift ;;
    --containers) CONTAINERS=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die 2 "unknown option $1 (see --help)" ;;
  esac
done
if [ -n "$TRTLLM_WHEEL" ] && [ "$BUILD_TRTLLM" = 1 ]; then
  die 2 "--trtllm-wheel and --build-trtllm exclude each other"
fi
if [ -n "$TRTLLM_WHEEL" ] && [[ "$TRTLLM_WHEEL" != *://* ]] && [ ! -f "$TRTLLM_WHEEL" ] && [ "$DRY" = 0 ]; then
  die 2 "wheel not found: $TRTLLM_WHEEL"
fi
PY="$VENV/bin/python"

# ---- running commands ------------------------------------------------------------------------------

run() {  # run a command, or print it under --dry-run
  if [ "$DRY" = 1 ]; then
    printf '[dry-run]'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}
run_sh() {  # a shell line (pipes, cd, globs): printed as written under --dry-run
  if [ "$DRY" = 1 ]; then printf '[dry-run] %s\n' "$1"; else bash -c "$1"; fi
}
have() { command -v "$1" >/dev/null 2>&1; }
venv_has() {  # venv_has "python statement": true when the venv's python runs it
  [ -x "$PY" ] && "$PY" -c "$1" >/dev/null 2>&1
}
pip_tensorrt() {  # the `tensorrt` line of the venv's pip freeze (JetPack's python3-libnvinfer), if any
  [ -x "$PY" ] && "$PY" -m pip freeze 2>/dev/null | grep -Ei '^tensorrt *(==|@)' | head -n 1
}

# ---- probing (read-only; also under --dry-run) -----------------------------------------------------

L4T_VERSION=""; L4T_SOURCE=""; JETPACK=""; CUDA_VERSION=""; CUDA_SOURCE=""; TRT_VERSION=""; TRT_SOURCE=""
ARCH=""; BOARD=""

probe_l4t() {
  local release="$ROOT/etc/nv_tegra_release" line major rev pkg
  if [ -r "$release" ]; then
    line="$(head -n 1 "$release")"
    major="$(printf '%s\n' "$line" | sed -n 's/^# R\([0-9][0-9]*\) (release), REVISION: \([0-9.]*\),.*/\1/p')"
    rev="$(printf '%s\n' "$line" | sed -n 's/^# R\([0-9][0-9]*\) (release), REVISION: \([0-9.]*\),.*/\2/p')"
    if [ -n "$major" ] && [ -n "$rev" ]; then
      L4T_VERSION="$major.$rev"; L4T_SOURCE="$release"
      return
    fi
    warn "unreadable $release: $line"
  fi
  if have dpkg-query; then
    pkg="$(dpkg-query -W -f='${Version}' nvidia-l4t-core 2>/dev/null || true)"
    if [ -n "$pkg" ]; then
      L4T_VERSION="${pkg%%-*}"; L4T_SOURCE="dpkg nvidia-l4t-core $pkg"
    fi
  fi
}

jetpack_for() {  # L4T version -> JetPack release
  case "$1" in
    36.4.0|36.4) echo "6.1" ;;
    36.4.3) echo "6.2" ;;
    36.4.4) echo "6.2.1" ;;
    36.4.*) echo "6.2.x" ;;
    36.3*) echo "6.0" ;;
    36.2*) echo "6.0 DP" ;;
    35.*) echo "5.x" ;;
    38.*) echo "7.x (Thor)" ;;
    *) echo "unknown" ;;
  esac
}

probe_cuda() {
  local json="$ROOT/usr/local/cuda/version.json" nvcc="" out
  if [ -r "$json" ]; then
    CUDA_VERSION="$(sed -n '/"cuda"[[:space:]]*:/,/}/s/.*"version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$json" | head -n 1)"
    if [ -n "$CUDA_VERSION" ]; then CUDA_SOURCE="$json"; return; fi
  fi
  if have nvcc; then nvcc="$(command -v nvcc)"; elif [ -x "$ROOT/usr/local/cuda/bin/nvcc" ]; then nvcc="$ROOT/usr/local/cuda/bin/nvcc"; fi
  if [ -n "$nvcc" ]; then
    out="$("$nvcc" --version 2>/dev/null || true)"
    CUDA_VERSION="$(printf '%s\n' "$out" | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1)"
    [ -n "$CUDA_VERSION" ] && CUDA_SOURCE="$nvcc --version"
  fi
  return 0
}

probe_tensorrt() {
  local pkg ver
  if have dpkg-query; then
    for pkg in libnvinfer10 libnvinfer8; do
      ver="$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true)"
      if [ -n "$ver" ]; then TRT_VERSION="${ver%%-*}"; TRT_SOURCE="dpkg $pkg $ver"; return; fi
    done
  fi
  ver="$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)"
  if [ -n "$ver" ]; then TRT_VERSION="$ver"; TRT_SOURCE="python3 -c 'import tensorrt'"; fi
  return 0
}

probe() {
  ARCH="$(uname -m)"
  BOARD=""
  if [ -r "$ROOT/proc/device-tree/model" ]; then BOARD="$(tr -d '\0' < "$ROOT/proc/device-tree/model")"; fi
  probe_l4t
  probe_cuda
  probe_tensorrt
  JETPACK="$(jetpack_for "$L4T_VERSION")"
}

# Sets PLATFORM to ok | unsupported | not_jetson and prints why.
assess_platform() {
  say "platform"
  info "board:     ${BOARD:-unknown}"
  info "arch:      $ARCH"
  if [ -n "$L4T_VERSION" ]; then
    info "L4T:       $L4T_VERSION (from $L4T_SOURCE) -> JetPack $JETPACK"
  else
    info "L4T:       none (no $ROOT/etc/nv_tegra_release, no nvidia-l4t-core package)"
  fi
  info "CUDA:      ${CUDA_VERSION:-not found}${CUDA_SOURCE:+ (from $CUDA_SOURCE)}   [expected 12.6]"
  info "TensorRT:  ${TRT_VERSION:-not found}${TRT_SOURCE:+ (from $TRT_SOURCE)}   [expected 10.3]"
  PLATFORM="ok"
  if [ -z "$L4T_VERSION" ] || [ "$ARCH" != "aarch64" ]; then
    PLATFORM="not_jetson"
    return
  fi
  local major="${L4T_VERSION%%.*}" rest="${L4T_VERSION#*.}" minor
  minor="${rest%%.*}"
  case "$minor" in ''|*[!0-9]*) PLATFORM="unsupported"; return ;; esac
  if [ "$major" != 36 ] || [ "$minor" -lt 4 ]; then
    PLATFORM="unsupported"
    return
  fi
  if [ "$minor" -gt 4 ]; then
    warn "L4T $L4T_VERSION is newer than the r36.4 (JetPack 6.1/6.2) TensorRT-LLM 0.12.0-jetson was made for"
  fi
  case "$CUDA_VERSION" in
    12.6|12.6.*) ;;
    "") warn "CUDA not found: install JetPack's CUDA (sudo apt install nvidia-jetpack), then run this again" ;;
    *) warn "CUDA $CUDA_VERSION: JetPack 6.1/6.2 ships 12.6, which the TensorRT-LLM 0.12.0-jetson wheel is built for" ;;
  esac
  case "$TRT_VERSION" in
    10.*) ;;
    "") warn "TensorRT not found: install JetPack's TensorRT (sudo apt install nvidia-jetpack), then run this again" ;;
    *) warn "TensorRT $TRT_VERSION: TensorRT-LLM 0.12.0-jetson needs TensorRT 10.3 (JetPack 6.1/6.2)" ;;
  esac
}

refuse_or_force() {
  case "$PLATFORM" in
    ok) printf 'ok: Jetson with L4T %s (JetPack %s)\n' "$L4T_VERSION" "$JETPACK" ;;
    not_jetson)
      if [ "$FORCE" = 1 ]; then warn "this is not a Jetson (aarch64 + L4T); going on because of --force"; return; fi
      printf 'refusing: this is not a Jetson (arch %s, %s). Watus runs here with the CPU defaults (./install.sh);\n' \
        "$ARCH" "${L4T_VERSION:+L4T $L4T_VERSION}${L4T_VERSION:-no /etc/nv_tegra_release}" >&2
      printf 'this script prepares a Jetson AGX Orin. Use --force to go on anyway (sensible only with --dry-run).\n' >&2
      exit 3 ;;
    unsupported)
      if [ "$FORCE" = 1 ]; then warn "L4T $L4T_VERSION (JetPack $JETPACK) is unsupported; going on because of --force"; return; fi
      printf 'refusing: L4T %s (JetPack %s) is not supported: TensorRT-LLM 0.12.0-jetson needs JetPack 6.1 or newer\n' \
        "$L4T_VERSION" "$JETPACK" >&2
      printf '(L4T r36.4, CUDA 12.6, TensorRT 10.3). Flash JetPack 6.2 with SDK Manager (or upgrade r36.x with apt,\n' >&2
      printf 'see docs/jetson.md), then run this again. --force goes on regardless.\n' >&2
      exit 4 ;;
  esac
}

# ---- steps -------------------------------------------------------------------------------------------

step_power() {
  say "power: MAX-N and clocks"
  if [ "$MAXN" = 1 ]; then
    local mode=""
    if have nvpmodel; then mode="$(nvpmodel -q 2>/dev/null | tail -n 1 | tr -d '[:space:]' || true)"; fi
    if [ "$mode" = 0 ]; then info "already in power mode 0 (MAX-N)"
    else run nvpmodel -m 0; fi
  fi
  if [ "$CLOCKS" = 1 ]; then run jetson_clocks; fi
  if [ "$PERSIST_CLOCKS" = 1 ]; then
    local unit
    unit="$(printf '%s\n' "[Unit]" "Description=Lock Jetson clocks at their maximum for Watus (jetson_clocks)" \
      "After=nvpmodel.service" "" "[Service]" "Type=oneshot" "ExecStart=/usr/bin/jetson_clocks" "" \
      "[Install]" "WantedBy=multi-user.target")"
    if [ -f "$CLOCKS_UNIT" ] && [ "$(cat "$CLOCKS_UNIT")" = "$unit" ]; then
      info "$CLOCKS_UNIT already installed"
    elif [ "$DRY" = 1 ]; then
      printf '[dry-run] write %s:\n%s\n' "$CLOCKS_UNIT" "$unit"
    else
      printf '%s\n' "$unit" > "$CLOCKS_UNIT"
    fi
    run systemctl daemon-reload
    run systemctl enable watus-jetson-clocks.service
  fi
}

step_apt() {
  say "apt prerequisites"
  local pkgs=(python3-pip python3-venv libopenblas-dev git git-lfs ccache) missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" = 0 ]; then info "all installed: ${pkgs[*]}"
  else
    run apt-get update
    run apt-get install -y "${missing[@]}"
  fi
  if [ -e "$ROOT/usr/local/cuda/lib64/libcusparseLt.so" ]; then info "cuSPARSELt already installed"
  else
    # PyTorch 2.x on JetPack 6 needs cuSPARSELt; NVIDIA's TensorRT-LLM Jetson guide installs it this way.
    run_sh "cd \"\$(mktemp -d)\" && wget -q $CUSPARSELT_SCRIPT && CUDA_VERSION=12.6 bash ./install_cusparselt.sh"
  fi
}

step_venv() {
  say "venv $VENV"
  if [ -x "$PY" ]; then
    info "exists"
    if ! grep -qs '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg"; then
      warn "$VENV was made without --system-site-packages: JetPack's tensorrt is not importable there."
      warn "fix: set include-system-site-packages = true in $VENV/pyvenv.cfg (or remove the venv and run this again)"
    fi
  else
    run mkdir -p "$(dirname "$VENV")"
    run python3 -m venv --system-site-packages "$VENV"
  fi
  run "$PY" -m pip install --upgrade pip
  if venv_has "import numpy; assert numpy.__version__ == '$NUMPY_VERSION'"; then info "numpy $NUMPY_VERSION present"
  else run "$PY" -m pip install "numpy==$NUMPY_VERSION"; fi
  # The branch's torch before anything that depends on it: PyPI's aarch64 torch has no CUDA for the Orin's
  # integrated GPU (pip would pick it to satisfy tensorrt_llm), and build_wheel.py would swap any other torch
  # for this one, breaking what was built against it.
  if venv_has "import torch; assert torch.__version__.startswith('$TORCH_VERSION') and torch.cuda.is_available()"; then
    info "torch $TORCH_VERSION (the branch's JetPack 6.1 wheel) with CUDA present"
  else run "$PY" -m pip install --index-url "$INDEX" "$TORCH_WHEEL" "numpy<2"; fi
  if venv_has 'import modelopt; assert modelopt.__version__.startswith("0.15.")'; then info "nvidia-modelopt 0.15 present"
  else run "$PY" -m pip install --index-url "$INDEX" "$MODELOPT_PIN" "numpy<2"; fi
}

check_pip_sees_tensorrt() {  # $1: what needs it. False (and a problem) when the venv's pip lists no tensorrt
  local line
  line="$(pip_tensorrt || true)"
  if [ -n "$line" ]; then info "pip sees JetPack's TensorRT: $line"; return 0; fi
  if [ ! -x "$PY" ]; then
    info "no venv yet (dry run): $1 needs \`$PY -m pip freeze | grep -i '^tensorrt'\` to list tensorrt"
    return 0
  fi
  problem "the venv's pip does not see tensorrt ($PY -m pip freeze lists none), and $1 needs it"
  info "make JetPack's TensorRT Python package visible to the venv: sudo apt install python3-libnvinfer"
  info "python3-libnvinfer-dev, with the venv made by python3 -m venv --system-site-packages (or set"
  info "include-system-site-packages = true in $VENV/pyvenv.cfg); then \`$PY -m pip freeze | grep -i '^tensorrt'\` lists it"
  return 1
}

step_trtllm() {
  say "TensorRT-LLM 0.12.0-jetson"
  if venv_has 'import tensorrt_llm, sys; sys.exit(not tensorrt_llm.__version__.startswith("0.12"))' \
     && [ -z "$TRTLLM_WHEEL" ] && [ "$BUILD_TRTLLM" = 0 ]; then
    info "already installed in $VENV"
  elif [ -n "$TRTLLM_WHEEL" ]; then
    # Otherwise pip looks for the wheel's tensorrt requirement on the index instead of keeping JetPack's.
    check_pip_sees_tensorrt "installing the wheel" || true
    run "$PY" -m pip install --index-url "$INDEX" "$TRTLLM_WHEEL"
  elif [ "$BUILD_TRTLLM" = 1 ]; then
    local src py
    src="$(printf '%q' "$TRTLLM_SRC")"; py="$(printf '%q' "$PY")"
    # build_wheel.py stops unless `pip freeze` lists tensorrt: better to know before the clone and the build.
    if ! check_pip_sees_tensorrt "scripts/build_wheel.py"; then
      if [ "$DRY" = 0 ]; then die 5 "not building TensorRT-LLM until the venv's pip sees tensorrt (see above)"; fi
      info "(a real run stops here)"
    fi
    if [ ! -d "$TRTLLM_SRC/.git" ]; then run git clone "$TRTLLM_REPO" "$TRTLLM_SRC"; fi
    # NVIDIA's steps for the Jetson branch (README4Jetson.md), with the venv's Python. build_wheel.py first
    # reinstalls requirements-dev-jetson.txt: with step 4's pins already in place that changes nothing.
    run_sh "cd $src && git checkout $TRTLLM_BRANCH"
    run_sh "cd $src && git lfs pull"
    run_sh "cd $src && $py scripts/build_wheel.py --clean --cuda_architectures 87 -DENABLE_MULTI_DEVICE=0 --build_type Release --benchmarks --use_ccache"
    run_sh "cd $src && $py -m pip install --index-url $(printf '%q' "$INDEX") build/tensorrt_llm-*.whl"
  else
    warn "TensorRT-LLM is not installed and neither --trtllm-wheel nor --build-trtllm was given: the LLM server"
    warn "can only run llama.cpp (WATUS_LLM_ENGINE=llamacpp) until it is"
  fi
  # The converters of `watus models build-llm` live in the sources' examples/, not in the wheel.
  if [ -d "$TRTLLM_SRC/examples/llama" ]; then info "examples in $TRTLLM_SRC/examples"
  else run git clone --depth 1 --branch "$TRTLLM_BRANCH" "$TRTLLM_REPO" "$TRTLLM_SRC"; fi
}

step_speech() {
  say "CTranslate2 with CUDA (faster-whisper) and onnxruntime-gpu"
  if venv_has 'import ctranslate2, sys; sys.exit(ctranslate2.get_cuda_device_count() < 1)'; then
    info "CTranslate2 with CUDA present"
  else
    run "$PY" -m pip install --index-url "$INDEX" ctranslate2
  fi
  if venv_has 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())'; then
    info "onnxruntime with CUDA present"
  else
    run "$PY" -m pip install --index-url "$INDEX" onnxruntime-gpu
  fi
  # faster-whisper requires `onnxruntime`; pip then installs PyPI's CPU build over the GPU one (same module).
  # Re-running this script after deploy/install.sh repairs that.
  if [ -x "$PY" ] && "$PY" -m pip show onnxruntime >/dev/null 2>&1; then
    warn "the CPU onnxruntime package shadows onnxruntime-gpu: replacing it"
    run "$PY" -m pip uninstall -y onnxruntime
    run "$PY" -m pip install --index-url "$INDEX" --force-reinstall --no-deps onnxruntime-gpu
  fi
}

step_vision_tools() {
  local tpy="$TOOLS_VENV/bin/python"
  say "vision export tools in $TOOLS_VENV (CUDA torch + ultralytics + onnxscript)"
  if [ ! -x "$tpy" ]; then run python3 -m venv --system-site-packages "$TOOLS_VENV"; fi
  if [ -x "$tpy" ] && "$tpy" -c 'import torch, ultralytics, onnxscript; assert torch.cuda.is_available()' >/dev/null 2>&1
  then
    info "torch with CUDA, ultralytics and onnxscript present"
  else
    run "$tpy" -m pip install --index-url "$INDEX" torch torchvision
    # Ultralytics exports ONNX through onnxscript on torch >= 2.7 and would pip-install it mid-export
    # (which fails on an offline robot): installed here with the rest.
    run "$tpy" -m pip install --index-url "$INDEX" "numpy<2" ultralytics onnx onnxslim onnxscript
  fi
  info "set WATUS_MODELS_TOOL_PYTHON=$tpy for watus models setup / export-yolo"
}

step_jtop() {
  say "jtop (jetson-stats)"
  if have jtop; then info "already installed"; return; fi
  run python3 -m pip install -U jetson-stats
  run systemctl restart jtop.service
}

verify() {  # what the venv can do on the GPU; counts problems
  say "check $VENV"
  if [ ! -x "$PY" ]; then problem "no venv at $VENV (run this script without --check)"; return; fi
  local name stmt
  while IFS='|' read -r name stmt; do
    if "$PY" -c "$stmt" >/dev/null 2>&1; then info "ok       $name"; else problem "$name"; fi
  done <<EOF
tensorrt (JetPack's python3-libnvinfer)|import tensorrt
torch with CUDA|import torch; assert torch.cuda.is_available()
torch is the branch's JetPack 6.1 wheel $TORCH_VERSION (did a later install replace it?)|import torch; assert torch.__version__.startswith("$TORCH_VERSION")
numpy < 2 (TensorRT-LLM 0.12 and that torch are built against numpy 1.x)|import numpy; assert int(numpy.__version__.split(".")[0]) < 2
tensorrt_llm 0.12|import tensorrt_llm; assert tensorrt_llm.__version__.startswith("0.12")
ctranslate2 sees the GPU|import ctranslate2; assert ctranslate2.get_cuda_device_count() > 0
onnxruntime has CUDAExecutionProvider|import onnxruntime as o; assert "CUDAExecutionProvider" in o.get_available_providers()
EOF
  if [ -n "$(pip_tensorrt || true)" ]; then info "ok       pip sees tensorrt (installs that require it keep JetPack's)"
  else problem "pip sees no tensorrt: $PY -m pip freeze | grep -i '^tensorrt' lists nothing (deploy/jetson/README.md, step 4)"; fi
  if "$PY" -m pip show onnxruntime >/dev/null 2>&1; then
    problem "the CPU onnxruntime package is installed next to onnxruntime-gpu (run this script again to fix)"
  fi
  [ -d "$TRTLLM_SRC/examples/llama" ] || problem "no TensorRT-LLM examples in $TRTLLM_SRC/examples (needed by watus models build-llm)"
}

print_containers() {
  cat <<EOF
==> the container alternative (jetson-containers)
    NVIDIA's Jetson AI Lab images carry TensorRT-LLM, CUDA torch, CTranslate2 and onnxruntime built for
    JetPack 6; autotag picks the image that matches this L4T:
      git clone https://github.com/dusty-nv/jetson-containers
      bash jetson-containers/install.sh
      jetson-containers run \$(autotag tensorrt_llm)            # e.g. dustynv/tensorrt_llm:0.12-r36.4.0
      jetson-containers run \$(autotag faster-whisper)
    To build an engine in the container (its examples are in /opt/TensorRT-LLM/examples):
      jetson-containers run -v /opt/watus:/opt/watus -v /var/lib/watus:/var/lib/watus \\
        dustynv/tensorrt_llm:0.12-r36.4.0 \\
        bash -c 'pip install "/opt/watus/src[trtllm]" && watus models build-llm \\
                 /var/lib/watus/hf/Meta-Llama-3-8B-Instruct -o /var/lib/watus/engines/llama-3-8b-instruct-int4'
    The systemd units of deploy/systemd run the venv, not a container. With containers, the LLM server is
      docker run --runtime nvidia --network host -v /opt/watus:/opt/watus -v /var/lib/watus:/var/lib/watus \\
        --env-file /etc/watus/watus.env dustynv/tensorrt_llm:0.12-r36.4.0 \\
        bash -c 'pip install "/opt/watus/src[trtllm]" && python3 -m trt_server'
EOF
}

# ---- main --------------------------------------------------------------------------------------------

if [ "$CONTAINERS" = 1 ]; then print_containers; exit 0; fi
probe
assess_platform
refuse_or_force
if [ "$CHECK" = 1 ]; then
  verify
  if [ "$PROBLEMS" -gt 0 ]; then printf '%d problem(s)\n' "$PROBLEMS"; exit 5; fi
  say "all checks passed"
  exit 0
fi
if [ "$DRY" = 0 ] && [ "$(id -u)" -ne 0 ]; then die 2 "run as root (sudo), or with --dry-run / --check"; fi
if [ "$MAXN" = 1 ] || [ "$CLOCKS" = 1 ] || [ "$PERSIST_CLOCKS" = 1 ]; then step_power; fi
if [ "$PYTHON_STACK" = 1 ]; then
  step_apt
  step_venv
  step_trtllm
  if [ "$SPEECH" = 1 ]; then step_speech; fi
fi
if [ -n "$TOOLS_VENV" ]; then step_vision_tools; fi
if [ "$JTOP" = 1 ]; then step_jtop; fi
if [ "$DRY" = 0 ] && [ "$PYTHON_STACK" = 1 ]; then verify; fi
print_containers
say "next: sudo deploy/install.sh --extras trtllm, then build the engine (docs/jetson.md)"
if [ "$PROBLEMS" -gt 0 ]; then printf '%d problem(s) left: see above\n' "$PROBLEMS"; exit 5; fi
say "done"
