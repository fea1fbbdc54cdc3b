"""What runs inside a task process: `python -m offload.workers <id>` for LLM and agent tasks.

Nothing here is imported by the CLI; the provider SDKs are imported only by the worker.
"""

__all__: list[str] = []
