"""Exports of a run that load elsewhere with the same behaviour, each verified on the way out.

    run.py     `tuneloop export`: what to write, the probes, the checks, export.json
    merge.py   adapter folded into the base weights; logits compared
    gguf.py    our GGUF converter for Llama-family models (f16, q8_0) and reading it back
    ollama.py  the chat template as an Ollama Go TEMPLATE, and the Modelfile
    vllm.py    the checks vLLM makes when it loads a LoRA adapter, and its serve command
    portable.py  config and tokenizer files transformers 4.5x and 5.x read alike; the task
               instruction in the chat template

See docs/serving.md.
"""
