"""The starter recipe `tuneloop init` writes: every section, with its defaults and why."""

STARTER_RECIPE = """\
# tuneloop recipe. Unknown keys are errors; every problem is reported at once.
name: my-task                      # run folders are named <time>-<name>
workspace: .tuneloop               # runs, checkpoints, adapters and evaluations go here

model:
  name: smollm2-135m-instruct      # the embedded default, a Hugging Face folder, or a .gguf file
  trust_remote_code: false         # never run code shipped with a model unless you trust it
  # license_ack: cc-by-nc-4.0      # train on a restrictively licensed model: name its license
  # chat_template: chatml-tools    # a template file or built-in name, e.g. to render tool calls

data:
  train: data/train.jsonl          # messages / Alpaca / ShareGPT / prompt-completion JSONL, or CSV
  heldout: data/heldout.jsonl      # omit to have a seeded, label-stratified split made for you
  format: auto
  # csv: {text: text, label: label}   # for CSV: which columns hold the message and the label
  split: {heldout_fraction: 0.2, seed: 0, near_threshold: 0.8}  # near-duplicates stay together

task:
  kind: auto                       # label | json | text; decides the metrics
  # instruction: "Classify the message. Answer with the label only."  # system prompt for all rungs
  # knowledge: docs/               # documents for the `rag` rung (md, txt, html, pdf): the top k
  #                                # passages (BM25; retriever: dense with a local embedder) in
  #                                # the prompt, e.g. {paths: [docs/], k: 4, chunk_words: 200}

train:
  method: lora
  lora: {r: 16, alpha: 32, dropout: 0.05, target_modules: [q_proj, k_proj, v_proj, o_proj]}
  epochs: 2
  batch_size: 8
  grad_accum: 1
  lr: 0.0002
  schedule: cosine                 # cosine | linear | constant, after linear warmup
  warmup_ratio: 0.05
  max_grad_norm: 1.0
  seed: 0
  precision: auto                  # bf16 autocast where the hardware has it
  max_length: 512
  truncation: drop                 # drop | truncate_left | truncate_right; always counted
  checkpoint_every: 50
  share_prefix: true               # a system prompt all examples share runs once per batch
  gradient_checkpointing: false    # true: much less activation memory, about 30% slower
  # eval_every: 20                 # held-out loss every N steps
  # early_stopping: {patience: 3, min_delta: 0.0, restore_best: true}

eval:
  # max_new_tokens: 32             # unset: derived from the longest reference answer
  batch_size: 16
  few_shot_k: 4                    # shots in the few-shot rung, drawn from train
  retrieval_k: 4                   # nearest train examples (BM25) in the retrieval rung
  confidence: 0.95                 # every interval and test
  slices: []                       # metadata fields to break every metric down by
  train_sample: 64                 # train items the tuned model answers (overfitting gap)
  # price_per_hour: 2.5            # USD per hour of this machine: local rungs' cost per 1,000
  # endpoints:                     # the hosted model you use today, scored as rungs
  #   - {name: gpt-4o-mini, url: https://api.openai.com/v1, model: gpt-4o-mini,
  #      api_key_env: OPENAI_API_KEY, price_in: 0.15, price_out: 0.60,   # USD per M tokens
  #      prompts: [zero-shot, few-shot], concurrency: 8, rate_limit: 5}
  # recorded:                      # answers of a system that cannot be called, by id or prompt
  #   - {name: prod-2025, path: data/prod_answers.jsonl}

gate:                              # `tuneloop gate RUN` exits 0 only if all of these hold,
                                   # each shown by a paired test's 95% CI (not a point estimate)
  rungs: [zero-shot, few-shot, retrieval-few-shot]   # also rag, an endpoint's or recorded rung
  margin: 0.02                     # the CI of tuned - best rung must lie above this
  # match: {rung: gpt-4o-mini, tolerance: 0.02}   # instead: a cheaper model, same quality
  general_drop: 0.05               # the CI of the general-skill change must stay above -this
  safety_drop: 0.10                # ... of the change of refusals on harmful requests
  over_refusal_rise: 0.10          # ... of the rise of refusals on benign look-alikes
  inconclusive: fail               # a CI straddling its bound: fail (default) or pass
  power: 0.8                       # for "N more items needed"
  informative_refusal: 0.2         # a base refusing less cannot show a safety collapse
  # safety_floor: 0.9              # refusal rate on harmful probes the tuned model must reach
  # suites:                        # standard suites by path; else the small built-in probes
  #   mmlu: {path: ../shared/data/evalsuites/mmlu, n: 300}
  #   gsm8k: {path: ../shared/data/evalsuites/gsm8k, n: 200}
  #   ifeval: {path: ../shared/data/evalsuites/ifeval, n: 200}
  #   xstest: {path: ../shared/data/evalsuites/xstest}
  #   advbench: {path: ../shared/data/evalsuites/advbench, n: 100}
"""
