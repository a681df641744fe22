"""The foundation every Watus process shares, and nothing else.

Settings base and ports, `serve()`, API errors, timing and turn ids, metrics helpers, logging, memory
watch, the model store, machine telemetry, the sentence cutter, and the typed wire contracts between
the processes (`watus.core.wire`). It imports no service (`trt_server`, `vision`, `audio`) and no agent
code; import-linter checks that in CI.
"""
