"""CenterFace as a TensorRT `.engine` (the robot): deserialised with the `tensorrt` module, buffers in torch.

Build the engine on the robot from the ONNX file of `watus models setup`, at the size the service uses
(the head region is fitted into the engine's static input, so a square one suits it):

    trtexec --onnx=centerface.onnx --saveEngine=centerface.engine --fp16 --shapes=input.1:1x3x256x256

Both `tensorrt` (JetPack's python3-libnvinfer) and CUDA torch (the Jetson wheel, which the robot's venv
has for the Ultralytics engine) are imported only here, when such a file is configured. An engine with
a dynamic input gets its shape set per call. The TensorRT 8.5+ tensor API (`execute_async_v3`) is used.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vision.errors import ModelLoadError

log = logging.getLogger(__name__)

_CHANNELS = (1, 2, 2, 10)


class TensorRTRunner:
    """One execution context on its own CUDA stream; calls take turns (a context is not thread-safe)."""

    def __init__(self, path: Path) -> None:
        try:
            import tensorrt as trt
            import torch
        except ImportError as e:
            raise ModelLoadError(f"a .engine face detector ({path}, WATUS_VISION_FACE_DETECTOR_MODEL) needs the "
                                 f"`tensorrt` module and CUDA torch ({e}); elsewhere use the ONNX file of "
                                 "`watus models setup`") from e
        if not torch.cuda.is_available():
            raise ModelLoadError(f"{path} is a TensorRT engine but torch sees no CUDA GPU here")
        self._torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ModelLoadError(f"TensorRT could not load {path}: an engine only runs on the GPU and TensorRT "
                                 "version it was built with; build it again on this machine")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        # Outputs keep the ONNX graph's order: heatmap, scale, offset, landmarks.
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        channels = [int(engine.get_tensor_shape(n)[1]) for n in outputs]
        if len(inputs) != 1 or tuple(channels) != _CHANNELS:
            raise ModelLoadError(f"{path} is not a CenterFace engine: inputs {inputs}, output channels {channels}")
        dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        try:
            self._dtypes = {n: dtypes[engine.get_tensor_dtype(n)] for n in names}
        except KeyError as e:
            raise ModelLoadError(f"{path}: tensors must be float32 or float16 (got {e})") from e
        shape = tuple(int(d) for d in engine.get_tensor_shape(inputs[0]))
        self.fixed_size: tuple[int, int] | None = (shape[2], shape[3]) if min(shape) > 0 else None
        self._engine: Any = engine
        self._context: Any = engine.create_execution_context()
        self._input, self._outputs = inputs[0], outputs
        self._stream = torch.cuda.Stream()
        self._lock = threading.Lock()
        self.path = path

    def run(self, blob: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        torch = self._torch
        with self._lock, torch.cuda.stream(self._stream):
            x = torch.from_numpy(blob).to("cuda", dtype=self._dtypes[self._input]).contiguous()
            if self.fixed_size is None:
                self._context.set_input_shape(self._input, tuple(x.shape))
            self._context.set_tensor_address(self._input, x.data_ptr())
            outs = []
            for name in self._outputs:
                out = torch.empty(tuple(self._context.get_tensor_shape(name)), dtype=self._dtypes[name], device="cuda")
                self._context.set_tensor_address(name, out.data_ptr())
                outs.append(out)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError(f"TensorRT failed to run {self.path}")
            self._stream.synchronize()
            return [o.float().cpu().numpy() for o in outs]

    def info(self) -> dict[str, object]:
        return {"engine": "tensorrt", "input": list(self.fixed_size) if self.fixed_size else "dynamic"}
