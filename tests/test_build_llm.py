"""models/build_llm.py (`watus models build-llm`): argument checks, exact commands, the manifest.

`convert_checkpoint.py` and `trtllm-build` exist only where TensorRT-LLM is installed, which needs an
NVIDIA GPU (the Orin, or an x86 CUDA box). Here they are fake executables made in tmp_path: a fake
examples/ tree whose converters write a TensorRT-LLM checkpoint, and a `trtllm-build` on PATH that
writes an engine folder. They record their arguments, so the tests see exactly what a real build would
be given. The test at the end runs against the real tools, only where `tensorrt_llm` imports.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tests.helpers import ROOT


def _load_build_llm() -> ModuleType:
    """models/ is a folder of recipes, not an installed package: load the file the way the CLI does."""
    spec = importlib.util.spec_from_file_location("build_llm", ROOT / "models" / "build_llm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_llm"] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


bl = _load_build_llm()
MANIFEST_FILE: str = bl.MANIFEST_FILE
BuildError: type[Exception] = bl.BuildError
build_llm, build_llm_command, plan_build = bl.build_llm, bl.build_llm_command, bl.plan_build
list_recipes, load_recipe = bl.list_recipes, bl.load_recipe

FAKE_CONVERTER = """\
import argparse, json, pathlib
p = argparse.ArgumentParser()
p.add_argument("--model_dir", required=True)
p.add_argument("--output_dir", required=True)
p.add_argument("--dtype")
p.add_argument("--use_weight_only", action="store_true")
p.add_argument("--weight_only_precision")
p.add_argument("--per_group", action="store_true")
p.add_argument("--group_size", type=int)
a = p.parse_args()
out = pathlib.Path(a.output_dir)
out.mkdir(parents=True, exist_ok=True)
algo = {"int4": "W4A16", "int4_gptq": "W4A16_GPTQ"}[a.weight_only_precision]
(out / "config.json").write_text(json.dumps({"architecture": "LlamaForCausalLM", "dtype": a.dtype,
                                             "quantization": {"quant_algo": algo, "group_size": a.group_size}}))
(out / "rank0.safetensors").write_bytes(b"weights")
print("fake convert_checkpoint:", vars(a))
"""

FAKE_BUILDER = """\
import argparse, json, os, pathlib, sys
p = argparse.ArgumentParser()
for flag in ("--checkpoint_dir", "--output_dir", "--gemm_plugin", "--use_paged_context_fmha"):
    p.add_argument(flag)
for flag in ("--max_batch_size", "--max_input_len", "--max_seq_len", "--max_num_tokens"):
    p.add_argument(flag, type=int)
a = p.parse_args()
if os.environ.get("FAKE_TRTLLM_BUILD_FAILS"):
    print("[TensorRT-LLM][ERROR] out of memory while building")
    sys.exit(3)
ckpt = json.loads(pathlib.Path(a.checkpoint_dir, "config.json").read_text())
out = pathlib.Path(a.output_dir)
out.mkdir(parents=True, exist_ok=True)
build = {k: v for k, v in vars(a).items() if k.startswith("max_") and v is not None}
(out / "config.json").write_text(json.dumps({"version": "0.12.0", "pretrained_config": ckpt, "build_config": build}))
(out / "rank0.engine").write_bytes(b"x" * 1000)
print("fake trtllm-build:", vars(a))
"""


def _checkpoint(path: Path, arch: str = "LlamaForCausalLM", quant: dict[str, object] | None = None,
                positions: int = 8192) -> Path:
    path.mkdir(parents=True)
    config: dict[str, object] = {"architectures": [arch], "max_position_embeddings": positions}
    if quant is not None:
        config["quantization_config"] = quant
    (path / "config.json").write_text(json.dumps(config))
    (path / "model-00001-of-00002.safetensors").write_bytes(b"w")
    (path / "tokenizer.json").write_text("{}")
    (path / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast"}')
    (path / "generation_config.json").write_text('{"eos_token_id": [128001, 128009]}')
    return path


GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False}


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake examples/ (llama and qwen converters) and a fake trtllm-build first on PATH; returns examples/."""
    examples = tmp_path / "TensorRT-LLM" / "examples"
    for family in ("llama", "qwen"):
        (examples / family).mkdir(parents=True)
        (examples / family / "convert_checkpoint.py").write_text(FAKE_CONVERTER)
    (examples.parent / "tensorrt_llm").mkdir()
    (examples.parent / "tensorrt_llm" / "version.py").write_text('__version__ = "0.12.0"\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    builder = bin_dir / "trtllm-build"
    builder.write_text(f"#!{sys.executable}\n{FAKE_BUILDER}")
    builder.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    return examples


# -- recipes and argument checks -----------------------------------------------------------------------------


def test_recipes() -> None:
    assert {"llama-3-8b-instruct", "qwen2.5-7b-instruct"} <= set(list_recipes())
    llama, qwen = load_recipe("llama-3-8b-instruct"), load_recipe("qwen2.5-7b-instruct")
    assert (llama.family, llama.architectures) == ("llama", ("LlamaForCausalLM",))
    assert (qwen.family, qwen.architectures) == ("qwen", ("Qwen2ForCausalLM",))
    assert llama.expected["int4"]["decode_tok_s"] == 35.9 and llama.expected["int4"]["context_ms"] == 91
    for r in (llama, qwen):
        assert r.dtype == "float16" and r.max_input_len < r.max_seq_len
    with pytest.raises(BuildError, match="llama-3-8b-instruct"):
        load_recipe("mistral")


@pytest.mark.parametrize(("change", "message"), [
    (lambda ck: shutil.rmtree(ck), "checkpoint folder not found"),
    (lambda ck: (ck / "config.json").unlink(), "has no config.json"),
    (lambda ck: (ck / "model-00001-of-00002.safetensors").unlink(), "holds no weights"),
    (lambda ck: (ck / "tokenizer.json").unlink(), "has no tokenizer"),
    (lambda ck: (ck / "config.json").write_text('{"architectures": ["Qwen2ForCausalLM"]}'), "pick the matching"),
    (lambda ck: (ck / "config.json").write_text("{not json"), "unreadable"),
])
def test_checkpoint_checks(tmp_path: Path, change: Callable[[Path], object], message: str) -> None:
    ck = _checkpoint(tmp_path / "ck")
    change(ck)
    with pytest.raises(BuildError, match=message):
        plan_build(ck, tmp_path / "engine", strict_tools=False)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_input_len": 4096, "max_seq_len": 4096}, "must be below max_seq_len"),
    ({"max_input_len": 5000, "max_seq_len": 4096}, "must be below max_seq_len"),
    ({"max_batch_size": 300}, "max_batch_size must be within"),
    ({"max_seq_len": 16384}, "exceeds the model's max_position_embeddings 8192"),
    ({"max_num_tokens": 100}, "max_num_tokens must be within"),
    ({"quantization": "int8"}, "quantization must be auto"),
    ({"quantization": "int4_gptq"}, "int4_gptq needs a GPTQ checkpoint"),
    ({"recipe": "nope"}, "no recipe"),
])
def test_argument_checks(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    ck = _checkpoint(tmp_path / "ck")
    with pytest.raises(BuildError, match=message):
        plan_build(ck, tmp_path / "engine", strict_tools=False, **kwargs)


def test_quantisation_follows_the_checkpoint(tmp_path: Path) -> None:
    gptq = _checkpoint(tmp_path / "gptq", quant={**GPTQ, "group_size": 64})
    plan = plan_build(gptq, tmp_path / "e1", strict_tools=False)
    assert plan.quantization == "int4_gptq" and plan.group_size == 64
    assert plan.convert.argv[-4:] == ("int4_gptq", "--per_group", "--group_size", "64")
    with pytest.raises(BuildError, match="already GPTQ"):
        plan_build(gptq, tmp_path / "e2", quantization="int4", strict_tools=False)
    awq = _checkpoint(tmp_path / "awq", quant={"quant_method": "awq", "bits": 4})
    with pytest.raises(BuildError, match="'awq'"):
        plan_build(awq, tmp_path / "e3", strict_tools=False)
    eight = _checkpoint(tmp_path / "eight", quant={**GPTQ, "bits": 8})
    with pytest.raises(BuildError, match="8-bit"):
        plan_build(eight, tmp_path / "e4", strict_tools=False)
    with pytest.raises(BuildError, match="must not be, contain or sit inside the checkpoint folder"):
        plan_build(gptq, gptq / "engine", strict_tools=False)
    with pytest.raises(BuildError, match="work folder"):
        plan_build(gptq, tmp_path / "e5", work_dir=gptq, strict_tools=False)
    with pytest.raises(BuildError, match="engine folder"):
        plan_build(gptq, tmp_path, strict_tools=False)


def test_missing_tools_fail_a_real_run_but_not_a_dry_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    ck = _checkpoint(tmp_path / "ck")
    with pytest.raises(BuildError, match=r"convert_checkpoint\.py not found"):
        build_llm(ck, tmp_path / "engine", examples_dir=tmp_path / "nowhere")
    result = build_llm(ck, tmp_path / "engine", examples_dir=tmp_path / "nowhere", dry_run=True)
    assert any("trtllm-build not found" in w for w in result.plan.warnings)
    assert not (tmp_path / "engine").exists()


# -- the exact commands ------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", ["llama-3-8b-instruct", "qwen2.5-7b-instruct"])
@pytest.mark.parametrize("quant", ["int4", "int4_gptq"])
def test_dry_run_commands(tmp_path: Path, tools: Path, recipe: str, quant: str) -> None:
    family, arch = ("llama", "LlamaForCausalLM") if recipe.startswith("llama") else ("qwen", "Qwen2ForCausalLM")
    ck = _checkpoint(tmp_path / "hf", arch=arch, quant=GPTQ if quant == "int4_gptq" else None, positions=32768)
    out = tmp_path / "engines" / f"{recipe}-{quant}"
    work = f"{out}.tllm_checkpoint"
    plan = build_llm(ck, out, recipe=recipe, quantization=quant, examples_dir=tools, python="python3",
                     dry_run=True).plan
    converter = tools / family / "convert_checkpoint.py"
    convert = (f"cd {tools / family} && python3 {converter} --model_dir {ck} --output_dir {work} --dtype float16 "
               f"--use_weight_only --weight_only_precision {quant}")
    if quant == "int4_gptq":
        convert += " --per_group --group_size 128"
    build = (f"{tools.parent.parent / 'bin' / 'trtllm-build'} --checkpoint_dir {work} --output_dir {out} "
             "--gemm_plugin float16 --max_batch_size 4 --max_input_len 3072 --max_seq_len 4096 "
             "--use_paged_context_fmha enable")
    assert [c.shell() for c in plan.commands] == [convert, build]
    assert plan.tokenizer_files == ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]

    # The same through the Typer command, as `watus models build-llm ... --dry-run` prints it.
    app = typer.Typer()
    app.command()(build_llm_command)
    r = CliRunner().invoke(app, [str(ck), "-o", str(out), "--recipe", recipe, "--quantization", quant,
                                 "--examples-dir", str(tools), "--python", "python3", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert convert in r.output.splitlines() and build in r.output.splitlines()
    assert not out.exists()


def test_cli_reports_errors_without_a_traceback(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(build_llm_command)
    r = CliRunner().invoke(app, [str(tmp_path / "none"), "-o", str(tmp_path / "e"), "--dry-run"])
    assert r.exit_code == 1 and "checkpoint folder not found" in r.output


def test_limits_override_the_recipe(tmp_path: Path, tools: Path) -> None:
    ck = _checkpoint(tmp_path / "hf")
    plan = plan_build(ck, tmp_path / "e", examples_dir=tools, max_batch_size=1, max_input_len=1024,
                      max_seq_len=2048, max_num_tokens=4096)
    argv = plan.build.argv
    assert argv[argv.index("--max_batch_size") + 1] == "1" and argv[argv.index("--max_seq_len") + 1] == "2048"
    assert argv[-2:] == ("--max_num_tokens", "4096")


# -- a run with the fake tools -----------------------------------------------------------------------------


def test_build_writes_engine_tokenizer_manifest_and_log(tmp_path: Path, tools: Path) -> None:
    ck = _checkpoint(tmp_path / "hf" / "Meta-Llama-3-8B-Instruct")
    out = tmp_path / "engines" / "llama-3-8b-instruct-int4"
    steps: list[str] = []
    result = build_llm(ck, out, examples_dir=tools, progress=steps.append)
    assert len(steps) == 3 and steps[-1].startswith("engine ready")
    # The engine's own config.json stays; the tokenizer files sit next to it.
    engine_config = json.loads((out / "config.json").read_text())
    assert engine_config["build_config"] == {"max_batch_size": 4, "max_input_len": 3072, "max_seq_len": 4096}
    for name in ("rank0.engine", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).is_file(), name
    assert not (tmp_path / "engines" / "llama-3-8b-instruct-int4.tllm_checkpoint").exists()

    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest == result.manifest
    assert manifest["model"] == "Meta-Llama-3-8B-Instruct" and manifest["recipe"] == "llama-3-8b-instruct"
    assert manifest["source_checkpoint"] == str(ck) and manifest["source_architectures"] == ["LlamaForCausalLM"]
    assert manifest["quantization"] == "int4" and manifest["dtype"] == "float16" and manifest["group_size"] is None
    assert manifest["build_flags"] == {"gemm_plugin": "float16", "use_paged_context_fmha": "enable",
                                       "max_batch_size": 4, "max_input_len": 3072, "max_seq_len": 4096}
    assert manifest["commands"]["convert_checkpoint"] == list(result.plan.convert.argv)
    assert manifest["commands"]["trtllm_build"] == list(result.plan.build.argv)
    assert set(manifest["versions"]) >= {"tensorrt_llm", "tensorrt", "torch", "transformers", "cuda"}
    assert manifest["versions"]["convert_checkpoint_source"] == "0.12.0"
    assert manifest["engine"]["files"] == {"rank0.engine": 1000} and manifest["engine"]["quant_algo"] == "W4A16"
    assert manifest["tokenizer_files"] == ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]
    assert manifest["host"] == socket.gethostname() and "cpu" in manifest["machine"]
    assert datetime.fromisoformat(manifest["date"]).tzinfo is not None
    assert set(manifest["seconds"]) == {"convert_checkpoint", "trtllm_build"}

    log_text = (out / manifest["log"]).read_text()
    assert f"$ {result.plan.convert.shell()}" in log_text and f"$ {shlex.join(result.plan.build.argv)}" in log_text
    assert "fake convert_checkpoint:" in log_text and "fake trtllm-build:" in log_text

    # What the LLM server sees of it.
    from trt_server.engines.hf_tokenizer import has_tokenizer_files
    from trt_server.engines.trtllm import engine_limits, read_manifest, resolve_engine_dir

    assert resolve_engine_dir(out) == out
    assert read_manifest(out) == manifest and has_tokenizer_files(out)
    assert engine_limits(engine_config, 2048) == (2048, 2048)


def test_gptq_build_and_rebuilds(tmp_path: Path, tools: Path) -> None:
    ck = _checkpoint(tmp_path / "hf", arch="Qwen2ForCausalLM", quant=GPTQ, positions=32768)
    out = tmp_path / "engine"
    work = tmp_path / "work"
    result = build_llm(ck, out, recipe="qwen2.5-7b-instruct", examples_dir=tools, work_dir=work,
                       keep_checkpoint=True)
    assert result.manifest is not None
    assert result.manifest["quantization"] == "int4_gptq" and result.manifest["group_size"] == 128
    assert result.manifest["engine"]["quant_algo"] == "W4A16_GPTQ"
    assert result.manifest["source_quantization_config"] == GPTQ
    assert (work / "rank0.safetensors").is_file()  # --keep-checkpoint
    with pytest.raises(BuildError, match="--overwrite"):
        build_llm(ck, out, recipe="qwen2.5-7b-instruct", examples_dir=tools)
    build_llm(ck, out, recipe="qwen2.5-7b-instruct", examples_dir=tools, overwrite=True)
    assert (out / MANIFEST_FILE).is_file()

    mine = tmp_path / "my-files"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (mine / "config.json").write_text("{}")
    with pytest.raises(BuildError, match="refusing to empty"):
        build_llm(ck, mine, recipe="qwen2.5-7b-instruct", examples_dir=tools, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    # A folder holding another HF checkpoint is never emptied either.
    other = _checkpoint(tmp_path / "other-hf")
    with pytest.raises(BuildError, match="refusing to empty"):
        build_llm(ck, other, recipe="qwen2.5-7b-instruct", examples_dir=tools, overwrite=True)
    assert (other / "model-00001-of-00002.safetensors").is_file()


def test_a_failing_tool_reports_its_output(tmp_path: Path, tools: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ck = _checkpoint(tmp_path / "hf")
    monkeypatch.setenv("FAKE_TRTLLM_BUILD_FAILS", "1")
    with pytest.raises(BuildError, match=r"trtllm-build failed with exit code 3 \(full log: .*build_llm.log\)"
                       r":\n.*out of memory while building"):
        build_llm(ck, tmp_path / "engine", examples_dir=tools)
    assert not (tmp_path / "engine" / MANIFEST_FILE).exists()
    # Fixed, the same folder builds again (what a failed build left counts as ours to replace).
    monkeypatch.delenv("FAKE_TRTLLM_BUILD_FAILS")
    with pytest.raises(BuildError, match="--overwrite"):
        build_llm(ck, tmp_path / "engine", examples_dir=tools)
    build_llm(ck, tmp_path / "engine", examples_dir=tools, overwrite=True)
    assert (tmp_path / "engine" / MANIFEST_FILE).is_file()


# -- the real tools ----------------------------------------------------------------------------------------


@pytest.mark.trtllm
@pytest.mark.skipif(importlib.util.find_spec("tensorrt_llm") is None,
                    reason="tensorrt_llm is not installed (it needs an NVIDIA GPU: the Orin, or an x86 CUDA box)")
def test_the_real_tools_take_these_flags() -> None:
    """`trtllm-build` and the installed examples' converters accept every flag the recipes pass."""
    plan_python = sys.executable
    builder = shutil.which("trtllm-build") or str(Path(plan_python).parent / "trtllm-build")
    help_text = subprocess.run([builder, "--help"], capture_output=True, text=True, timeout=300, check=True).stdout
    for flag in ("--checkpoint_dir", "--gemm_plugin", "--max_batch_size", "--max_input_len", "--max_seq_len",
                 "--use_paged_context_fmha", "--max_num_tokens"):
        assert flag in help_text, flag
    examples = bl.find_examples_dir(None)
    if examples is None:
        pytest.skip("no TensorRT-LLM examples/ in /opt/TensorRT-LLM or ~/TensorRT-LLM")
    for family in ("llama", "qwen"):
        text = subprocess.run([plan_python, str(examples / family / "convert_checkpoint.py"), "--help"],
                              capture_output=True, text=True, timeout=300, check=True, cwd=examples / family).stdout
        for flag in ("--use_weight_only", "--weight_only_precision", "int4_gptq", "--per_group", "--group_size"):
            assert flag in text, (family, flag)
