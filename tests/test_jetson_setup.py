"""deploy/jetson/setup.sh: platform checks and the commands it would run, without a Jetson.

The script reads its release files under `WATUS_JETSON_ROOT` and asks `dpkg-query`, `nvpmodel` and
`uname` from PATH, so a fake root and small fake tools stand in for an Orin on L4T r36.4 (supported),
one on r35 (JetPack 5: refused) and this machine (not a Jetson: refused). Everything else runs under
`--dry-run`, which prints each command instead of running it; a fake venv python answers the script's
`python -c` probes and `pip freeze`, as the real one would with or without JetPack's TensorRT visible.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

SETUP = ROOT / "deploy" / "jetson" / "setup.sh"
INDEX = "https://pypi.jetson-ai-lab.io/jp6/cu126"
#: What the v0.12.0-jetson branch's requirements-jetson.txt pins.
TORCH_WHEEL = ("https://developer.download.nvidia.com/compute/redist/jp/v61/pytorch/"
               "torch-2.5.0a0+872d972e41.nv24.08.17622132-cp310-cp310-linux_aarch64.whl")

R36_4 = ("# R36 (release), REVISION: 4.4, GCID: 41062509, BOARD: generic, EABI: aarch64, DATE: Mon Jun 16 16:07:13 "
         "UTC 2025\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n")
R35 = ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 "
       "UTC 2023\n")
CUDA_JSON = '{\n   "cuda" : {\n      "name" : "CUDA SDK",\n      "version" : "%s"\n   },\n   "cuda_cccl" : {\n' \
            '      "name" : "CUDA C++ Core Compute Libraries",\n      "version" : "12.6.37"\n   }\n}\n'


def _fake_tool(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _fake_jetson(tmp_path: Path, release: str | None, cuda: str, packages: dict[str, str],
                 power_mode: str = "0") -> tuple[Path, Path]:
    """A fake / (release file, CUDA version.json, board name) and fake tools; returns (root, bin)."""
    root, bin_dir = tmp_path / "root", tmp_path / "bin"
    (root / "etc").mkdir(parents=True)
    (root / "usr" / "local" / "cuda").mkdir(parents=True)
    (root / "proc" / "device-tree").mkdir(parents=True)
    bin_dir.mkdir()
    if release is not None:
        (root / "etc" / "nv_tegra_release").write_text(release)
    (root / "usr" / "local" / "cuda" / "version.json").write_text(CUDA_JSON % cuda)
    (root / "proc" / "device-tree" / "model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")
    _fake_tool(bin_dir, "uname", 'if [ "$1" = -m ]; then echo aarch64; else exec /bin/uname "$@"; fi\n')
    cases = "".join(f"  *'{pkg}'*) echo '{ver}' ;;\n" for pkg, ver in packages.items())
    # `-f '${Status}' pkg` (apt step): every package counts as installed; `-f '${Version}' pkg`: the table.
    _fake_tool(bin_dir, "dpkg-query",
               'case "$*" in\n  *Status*) echo "install ok installed"; exit 0 ;;\nesac\n'
               f'case "$*" in\n{cases}  *) exit 1 ;;\nesac\n')
    _fake_tool(bin_dir, "nvpmodel", f'echo "NV Power Mode: MAXN"; echo {power_mode}\n')
    return root, bin_dir


def _setup(*args: str, root: Path | None = None, bin_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if root is not None:
        env["WATUS_JETSON_ROOT"] = str(root)
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return subprocess.run(["bash", str(SETUP), *args], capture_output=True, text=True, env=env, timeout=60,
                          check=False)


def _fake_venv(venv: Path, *, fails: str = "", freeze: str = "tensorrt==10.3.0") -> Path:
    """A venv whose python passes every `-c` probe except those containing `fails`, and whose `pip freeze`
    prints `freeze`; `pip show onnxruntime` (the CPU package) finds nothing."""
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("include-system-site-packages = true\n")
    probe = f'  *{fails}*) exit 1 ;;\n' if fails else ""
    _fake_tool(venv / "bin", "python",
               f'case "$*" in\n  *"pip show"*) exit 1 ;;\n  *"pip freeze"*) printf "%s\\n" "{freeze}"; exit 0 ;;\n'
               f'{probe}esac\nexit 0\n')
    return venv


@pytest.fixture
def orin(tmp_path: Path) -> tuple[Path, Path]:
    return _fake_jetson(tmp_path, R36_4, "12.6.68", {"nvidia-l4t-core": "36.4.4-20250616085344",
                                                     "libnvinfer10": "10.3.0.30-1+cuda12.5"})


def test_syntax() -> None:
    r = subprocess.run(["bash", "-n", str(SETUP)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "set -euo pipefail" in SETUP.read_text()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt install shellcheck)")
def test_shellcheck_clean() -> None:
    r = subprocess.run(["shellcheck", str(SETUP)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_r36_4_is_supported_and_dry_run_prints_every_step(orin: tuple[Path, Path], tmp_path: Path) -> None:
    root, bin_dir = orin
    venv, src = tmp_path / "venv", tmp_path / "trtllm"
    r = _setup("--dry-run", "--venv", str(venv), "--trtllm-src", str(src), "--trtllm-wheel",
               "/tmp/tensorrt_llm-0.12.0-cp310-cp310-linux_aarch64.whl", "--vision-tools", str(tmp_path / "tools"),
               "--jtop", root=root, bin_dir=bin_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "board:     NVIDIA Jetson AGX Orin Developer Kit" in out
    assert f"L4T:       36.4.4 (from {root}/etc/nv_tegra_release) -> JetPack 6.2.1" in out
    assert "CUDA:      12.6.68" in out and "TensorRT:  10.3.0.30 (from dpkg libnvinfer10" in out
    assert "ok: Jetson with L4T 36.4.4 (JetPack 6.2.1)" in out
    assert "warning" not in out
    # Power: the fake nvpmodel already reports mode 0; clocks are always set.
    assert "already in power mode 0 (MAX-N)" in out and "[dry-run] nvpmodel" not in out
    assert "[dry-run] jetson_clocks" in out
    # cuSPARSELt as NVIDIA's guide installs it; the venv sees JetPack's tensorrt.
    assert ("[dry-run] cd \"$(mktemp -d)\" && wget -q https://raw.githubusercontent.com/pytorch/pytorch/"
            "9b424aac1d70f360479dd919d6b7933b5a9181ac/.ci/docker/common/install_cusparselt.sh && CUDA_VERSION=12.6 "
            "bash ./install_cusparselt.sh") in out
    py = venv / "bin" / "python"
    lines = out.splitlines()
    wheel = "/tmp/tensorrt_llm-0.12.0-cp310-cp310-linux_aarch64.whl"
    # The branch's pins, in this order, then TensorRT-LLM, then what does not depend on torch.
    ordered = [
        f"[dry-run] python3 -m venv --system-site-packages {venv}",
        f"[dry-run] {py} -m pip install numpy==1.26.1",
        f"[dry-run] {py} -m pip install --index-url {INDEX} {TORCH_WHEEL} numpy\\<2",
        f"[dry-run] {py} -m pip install --index-url {INDEX} nvidia-modelopt~=0.15.0 numpy\\<2",
        f"[dry-run] {py} -m pip install --index-url {INDEX} {wheel}",
        f"[dry-run] git clone --depth 1 --branch v0.12.0-jetson https://github.com/NVIDIA/TensorRT-LLM.git {src}",
        f"[dry-run] {py} -m pip install --index-url {INDEX} ctranslate2",
        f"[dry-run] {py} -m pip install --index-url {INDEX} onnxruntime-gpu",
    ]
    missing = [line for line in ordered if line not in lines]
    assert not missing, (missing, out)
    positions = [lines.index(line) for line in ordered]
    assert positions == sorted(positions)
    tools = tmp_path / "tools" / "bin" / "python"
    for expected in (
        f"[dry-run] {tools} -m pip install --index-url {INDEX} torch torchvision",
        # Ultralytics needs onnxscript for ONNX export on torch >= 2.7; offline it cannot fetch it itself.
        f"[dry-run] {tools} -m pip install --index-url {INDEX} numpy\\<2 ultralytics onnx onnxslim onnxscript",
        "[dry-run] python3 -m pip install -U jetson-stats",
    ):
        assert expected in lines, expected
    # No unpinned torch for the services' venv: build_wheel.py would replace it.
    assert f"{py} -m pip install --index-url {INDEX} torch\n" not in out
    assert f"no venv yet (dry run): installing the wheel needs `{py} -m pip freeze | grep -i '^tensorrt'`" in out
    assert "jetson-containers run $(autotag tensorrt_llm)" in out and "dustynv/tensorrt_llm:0.12-r36.4.0" in out
    assert not venv.exists() and not src.exists(), "dry run created files"


def test_build_from_source_uses_the_seed_commands(orin: tuple[Path, Path], tmp_path: Path) -> None:
    root, bin_dir = orin
    venv, src = tmp_path / "venv", tmp_path / "TensorRT-LLM"
    r = _setup("--dry-run", "--build-trtllm", "--venv", str(venv), "--trtllm-src", str(src), "--no-speech",
               root=root, bin_dir=bin_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    py = venv / "bin" / "python"
    expected = [
        f"[dry-run] git clone https://github.com/NVIDIA/TensorRT-LLM.git {src}",
        f"[dry-run] cd {src} && git checkout v0.12.0-jetson",
        f"[dry-run] cd {src} && git lfs pull",
        f"[dry-run] cd {src} && {py} scripts/build_wheel.py --clean --cuda_architectures 87 -DENABLE_MULTI_DEVICE=0 "
        "--build_type Release --benchmarks --use_ccache",
        f"[dry-run] cd {src} && {py} -m pip install --index-url {INDEX} build/tensorrt_llm-*.whl",
    ]
    lines = r.stdout.splitlines()
    positions = [lines.index(line) for line in expected]
    assert positions == sorted(positions)
    # The pins come before the build, whose build_wheel.py reinstalls the branch's requirements.
    assert lines.index(f"[dry-run] {py} -m pip install --index-url {INDEX} nvidia-modelopt~=0.15.0 numpy\\<2") \
        < positions[0]
    assert "ctranslate2" not in r.stdout  # --no-speech


def test_build_checks_that_pip_sees_tensorrt_first(orin: tuple[Path, Path], tmp_path: Path) -> None:
    """build_wheel.py stops unless `pip freeze` lists tensorrt: the script says so before cloning or building."""
    root, bin_dir = orin
    src = tmp_path / "TensorRT-LLM"
    venv = _fake_venv(tmp_path / "venv", freeze="numpy==1.26.1")  # tensorrt importable, not seen by pip
    r = _setup("--dry-run", "--build-trtllm", "--venv", str(venv), "--trtllm-src", str(src), "--no-speech",
               root=root, bin_dir=bin_dir)
    assert r.returncode == 5, r.stdout + r.stderr
    out = r.stdout
    assert ("problem: the venv's pip does not see tensorrt "
            f"({venv}/bin/python -m pip freeze lists none), and scripts/build_wheel.py needs it") in out
    assert "sudo apt install python3-libnvinfer" in out and "--system-site-packages" in out
    assert f"include-system-site-packages = true in {venv}/pyvenv.cfg" in out
    assert out.index("(a real run stops here)") < out.index("git clone https://github.com/NVIDIA/TensorRT-LLM.git")
    assert "problem(s) left" in out

    visible = _fake_venv(tmp_path / "venv2", freeze="tensorrt==10.3.0")
    r = _setup("--dry-run", "--build-trtllm", "--venv", str(visible), "--trtllm-src", str(src), "--no-speech",
               root=root, bin_dir=bin_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pip sees JetPack's TensorRT: tensorrt==10.3.0" in r.stdout and "problem" not in r.stdout
    # tensorrt_llm (also "^tensorrt") does not count as TensorRT.
    other = _fake_venv(tmp_path / "venv3", freeze="tensorrt_llm==0.12.0")
    r = _setup("--dry-run", "--build-trtllm", "--venv", str(other), "--trtllm-src", str(src), "--no-speech",
               root=root, bin_dir=bin_dir)
    assert r.returncode == 5 and "the venv's pip does not see tensorrt" in r.stdout


def test_check_finds_a_replaced_torch_numpy_2_and_an_invisible_tensorrt(orin: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    root, bin_dir = orin
    src = tmp_path / "trtllm"
    (src / "examples" / "llama").mkdir(parents=True)
    cases = {"2.5.0a0+872d972e41": "problem: torch is the branch's JetPack 6.1 wheel 2.5.0a0+872d972e41",
             "< 2": "problem: numpy < 2"}
    for i, (fails, message) in enumerate(cases.items()):
        venv = _fake_venv(tmp_path / f"venv{i}", fails=fails)
        r = _setup("--check", "--venv", str(venv), "--trtllm-src", str(src), root=root, bin_dir=bin_dir)
        assert r.returncode == 5 and message in r.stdout, r.stdout
    venv = _fake_venv(tmp_path / "venv-no-trt", freeze="")
    r = _setup("--check", "--venv", str(venv), "--trtllm-src", str(src), root=root, bin_dir=bin_dir)
    assert r.returncode == 5 and "problem: pip sees no tensorrt" in r.stdout
    assert "1 problem(s)" in r.stdout  # the imports themselves all work


def test_done_steps_are_skipped(orin: tuple[Path, Path], tmp_path: Path) -> None:
    """Idempotence: a venv where every import works and existing examples make no install commands."""
    root, bin_dir = orin
    venv = _fake_venv(tmp_path / "venv")  # every probe passes, pip sees JetPack's tensorrt
    src = tmp_path / "trtllm"
    (src / "examples" / "llama").mkdir(parents=True)
    (root / "usr" / "local" / "cuda" / "lib64").mkdir()
    (root / "usr" / "local" / "cuda" / "lib64" / "libcusparseLt.so").write_text("")
    r = _setup("--dry-run", "--venv", str(venv), "--trtllm-src", str(src), root=root, bin_dir=bin_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for line in ("all installed:", "cuSPARSELt already installed", "numpy 1.26.1 present",
                 "torch 2.5.0a0+872d972e41 (the branch's JetPack 6.1 wheel) with CUDA present",
                 "nvidia-modelopt 0.15 present", "already installed in", f"examples in {src}/examples",
                 "CTranslate2 with CUDA present", "onnxruntime with CUDA present"):
        assert line in out, line
    dry = [line for line in out.splitlines() if line.startswith("[dry-run]")]
    assert dry == ["[dry-run] jetson_clocks", f"[dry-run] {venv}/bin/python -m pip install --upgrade pip"]

    r = _setup("--check", "--venv", str(venv), "--trtllm-src", str(src), root=root, bin_dir=bin_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all checks passed" in r.stdout and "ok       onnxruntime has CUDAExecutionProvider" in r.stdout
    assert "ok       torch is the branch's JetPack 6.1 wheel" in r.stdout and "ok       pip sees tensorrt" in r.stdout

    tools = tmp_path / "tools"
    _fake_venv(tools)
    r = _setup("--dry-run", "--no-python", "--vision-tools", str(tools), root=root, bin_dir=bin_dir)
    assert "torch with CUDA, ultralytics and onnxscript present" in r.stdout


def test_check_reports_a_missing_venv(orin: tuple[Path, Path], tmp_path: Path) -> None:
    root, bin_dir = orin
    r = _setup("--check", "--venv", str(tmp_path / "none"), "--trtllm-src", str(tmp_path / "src"),
               root=root, bin_dir=bin_dir)
    assert r.returncode == 5, r.stdout + r.stderr
    assert f"problem: no venv at {tmp_path / 'none'}" in r.stdout


def test_r35_is_refused_unless_forced(tmp_path: Path) -> None:
    root, bin_dir = _fake_jetson(tmp_path, R35, "11.4.19", {"nvidia-l4t-core": "35.4.1-20230801124926",
                                                            "libnvinfer8": "8.5.2-1+cuda11.4"})
    r = _setup("--dry-run", root=root, bin_dir=bin_dir)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "L4T:       35.4.1" in r.stdout and "JetPack 5.x" in r.stdout
    assert "refusing: L4T 35.4.1 (JetPack 5.x) is not supported" in r.stderr
    assert "JetPack 6.1 or newer" in r.stderr and "[dry-run]" not in r.stdout

    r = _setup("--dry-run", "--force", "--venv", str(tmp_path / "venv"), "--no-python", root=root, bin_dir=bin_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning: L4T 35.4.1 (JetPack 5.x) is unsupported; going on because of --force" in r.stdout


def test_r36_3_jetpack_6_0_is_refused(tmp_path: Path) -> None:
    root, bin_dir = _fake_jetson(tmp_path, R36_4.replace("REVISION: 4.4", "REVISION: 3.0"), "12.2.140",
                                 {"libnvinfer8": "8.6.2.3-1+cuda12.2"})
    r = _setup("--dry-run", root=root, bin_dir=bin_dir)
    assert r.returncode == 4 and "(JetPack 6.0) is not supported" in r.stderr


def test_l4t_from_dpkg_when_the_release_file_is_missing(tmp_path: Path) -> None:
    root, bin_dir = _fake_jetson(tmp_path, None, "12.6.68", {"nvidia-l4t-core": "36.4.3-20250107174145",
                                                             "libnvinfer10": "10.3.0.30-1+cuda12.5"})
    r = _setup("--check", "--venv", str(tmp_path / "none"), root=root, bin_dir=bin_dir)
    assert "L4T:       36.4.3 (from dpkg nvidia-l4t-core 36.4.3-20250107174145) -> JetPack 6.2" in r.stdout
    assert "ok: Jetson with L4T 36.4.3 (JetPack 6.2)" in r.stdout


def test_a_fake_root_without_l4t_is_not_a_jetson(tmp_path: Path) -> None:
    root, bin_dir = _fake_jetson(tmp_path, None, "12.6.68", {})
    r = _setup("--dry-run", root=root, bin_dir=bin_dir)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "refusing: this is not a Jetson" in r.stderr and "[dry-run]" not in r.stdout


@pytest.mark.skipif(Path("/etc/nv_tegra_release").exists(), reason="this machine is a Jetson")
def test_this_machine_is_refused_clearly() -> None:
    r = _setup("--dry-run")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "refusing: this is not a Jetson" in r.stderr and "--force" in r.stderr
    assert "L4T:       none" in r.stdout


def test_usage_errors() -> None:
    assert _setup("--bogus").returncode == 2
    r = _setup("--build-trtllm", "--trtllm-wheel", "x.whl")
    assert r.returncode == 2 and "exclude each other" in r.stderr
    r = _setup("--containers")
    assert r.returncode == 0 and "bash jetson-containers/install.sh" in r.stdout
