"""sharpv inside other tools: vLLM (:mod:`sharpv.integrations.vllm`) and lmms-eval
(:mod:`sharpv.integrations.lmms_eval`). Nothing here is imported by ``import sharpv``; each
integration imports its tool only when that tool loads it."""
