"""The starter recipe `tuneloop init` writes: every section, with its defaults and why."""

STARTER_RECIPE = """\
# tuneloop recipe. Unknown keys are errors; every problem is reported at once.
name: my-task                      # run folders are named <time>-<name>
workspace: .tuneloop               # runs, checkpoints, adapters and evaluations go here

model:
  name: smollm2-135m-instruct      # the embedded default, a Hugging Face folder, or a .gguf file
  trust_remote_code: false         # never run code shipped with a model unless you trust it

data:
  train: data/train.jsonl          # messages / Alpaca / ShareGPT / prompt-completion JSONL, or CSV
  heldout: data/heldout.jsonl      # omit to have a seeded, label-stratified split made for you
  format: auto
  # csv: {text: text, label: label}   # for CSV: which columns hold the message and the label
  split: {heldout_fraction: 0.2, seed: 0}

task:
  kind: auto                       # label | json | text; decides the metrics
  # instruction: "Classify the message. Answer with the label only."  # system prompt for all rungs

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

eval:
  max_new_tokens: 32
  batch_size: 16
"""
