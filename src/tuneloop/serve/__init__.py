"""Serve what was trained: one base model, many adapters, an OpenAI-compatible HTTP API.

    engine.py      the base model, the adapter cache and the batching worker (no HTTP)
    adapters.py    adapters by name: where they are, what they were trained with, the LRU cache
    app.py         the FastAPI app: routes, API key, limits, server-sent events
    server.py      uvicorn in the foreground, or in a thread on a free loopback port
    options.py     the server's settings and their defaults
    protocol.py    request bodies and OpenAI-style error answers
    metrics.py     Prometheus metrics
    requestlog.py  the sampled JSONL log of requests and answers
    monitor.py     live requests compared with the training data (drift)

See docs/serving.md.
"""
