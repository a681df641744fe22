"""trt_server: an OpenAI-compatible LLM server over TensorRT-LLM (robot) or llama.cpp (everywhere else)."""
