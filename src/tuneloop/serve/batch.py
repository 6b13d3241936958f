"""A running batch: rows that join and leave between decode steps (continuous batching).

The batch keeps one key/value cache for all its rows, left-padded so that every row's newest
token is in the last column, and a 0/1 attention mask over the columns (0: padding):

    columns ->         0   1   2   3   4   5
    row 0 (joined early)   p   p   a   a   a   a     p: a prompt token, a: an answer token
    row 1 (joined late)    .   .   .   p   p   a     .: padding, masked out

Each step feeds every row its last token at its own position (the count of its real tokens,
as `transformers`' generate numbers them), appends one column, and hands each row the logits of
its next token. A request joins between two steps: its prompt is run alone or with the other
newcomers (the prefill), and its cache is padded on the left to the batch's width, or the batch's
to its, and stacked under the others. A finished or cancelled row leaves at once: its cache row
is dropped, and so are the leading columns no remaining row uses. So a short answer never waits
for a long one, and a new request never waits for a batch to end.

With `hold` (the static design kept for the benchmark, `ServeOptions(batching="static")`), rows
stay until the last one ends and are computed all along, as `model.generate` computes finished
rows of a batch as padding.

The model is called through `forward(names, **inputs)` (the engine's: it applies each row's
PEFT adapter, `names[i]` for row i) and answers `transformers`' `CausalLMOutputWithPast`;
`model()` is the model now in use (for its embeddings and config).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from tuneloop.models.virtual import prefill_batch
from tuneloop.serve.job import Job, choose_tokens

Forward = Callable[..., object]  # forward(names, **model_inputs) -> output with .logits, cache


class RunningBatch:
    def __init__(
        self, forward: Forward, model: Callable[[], object], pad_id: int, hold: bool = False
    ):
        self.forward, self.model = forward, model
        self.hold = hold  # static batching: finished rows keep their place until all end
        self.pad_id = pad_id
        self.jobs: list[Job] = []
        self.cache = None  # transformers DynamicCache, (B, heads, L, head_dim) per layer
        self.mask = torch.zeros((0, 0), dtype=torch.long)  # (B, L)
        self.positions = torch.zeros(0, dtype=torch.long)  # (B,) position of each row's next token
        self.last = torch.zeros(0, dtype=torch.long)  # (B,) each row's newest token

    def __len__(self) -> int:
        return len(self.jobs)

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    @torch.no_grad()
    def admit(self, jobs: list[Job]) -> None:
        """Prefill `jobs` together, take their first tokens, and add the rows that go on. A
        row of a prompt-learning adapter brings its virtual tokens (`models.virtual`): prompt
        embeddings before its prompt, or prefix columns in its cache."""
        inputs = prefill_batch(self.model(), [(j.virtual, j.prompt_ids) for j in jobs], self.pad_id)
        mask, positions = inputs["attention_mask"].cpu(), inputs["position_ids"].cpu()
        out = self.forward([j.adapter for j in jobs], **inputs, use_cache=True, logits_to_keep=1)
        tokens = choose_tokens(jobs, out.logits[:, -1])
        for job, token in zip(jobs, tokens, strict=True):
            job.push(token)
        self._stack(jobs, out.cache, mask, positions[:, -1] + 1, tokens)
        self.drop_finished()

    @torch.no_grad()
    def step(self) -> None:
        """One decode step for every row: one new token each."""
        if not self.jobs:
            return
        mask = torch.cat([self.mask, torch.ones((len(self.jobs), 1), dtype=torch.long)], dim=1)
        out = self.forward(
            [j.adapter for j in self.jobs],
            input_ids=self.last[:, None],
            attention_mask=mask,
            position_ids=self.positions[:, None],
            cache=self.cache,
            use_cache=True,
        )
        self.cache, self.mask = out.cache, mask
        self.positions = self.positions + 1
        tokens = choose_tokens(self.jobs, out.logits[:, -1])
        for job, token in zip(self.jobs, tokens, strict=True):
            if not job.done:  # cancelled between steps: its token is dropped with the row
                job.push(token)
        self.last = torch.tensor(tokens, dtype=torch.long)
        self.drop_finished()

    def drop_finished(self) -> None:
        """Remove finished and cancelled rows, and the columns no row uses any more."""
        keep = [i for i, job in enumerate(self.jobs) if not job.done]
        if len(keep) == len(self.jobs) or (self.hold and keep):
            return
        self.jobs = [self.jobs[i] for i in keep]
        if not keep:
            self.cache = None
            self.mask = self.mask[:0, :0]
            self.positions, self.last = self.positions[:0], self.last[:0]
            return
        index = torch.tensor(keep)
        self.mask, self.positions, self.last = (
            self.mask[index],
            self.positions[index],
            self.last[index],
        )
        unused = int(self.mask.any(dim=0).to(torch.int8).argmax())  # leading all-padding columns
        self.mask = self.mask[:, unused:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index.to(layer.keys.device), :, unused:]
            layer.values = layer.values[index.to(layer.values.device), :, unused:]

    def fail_all(self, error: Exception) -> None:
        for job in self.jobs:
            job.fail(error)
        self.drop_finished()

    def _stack(self, jobs, cache, mask, positions, tokens) -> None:
        """Put the prefilled rows under the running ones, both padded to one width."""
        if not self.jobs:
            self.jobs, self.cache, self.mask = list(jobs), cache, mask
            self.positions, self.last = positions, torch.tensor(tokens, dtype=torch.long)
            return
        width = max(self.width, mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, width), _pad_left(theirs.keys, width)])
            mine.values = torch.cat(
                [_pad_left(mine.values, width), _pad_left(theirs.values, width)]
            )
        self.mask = torch.cat([_pad_left(self.mask, width), _pad_left(mask, width)])
        self.positions = torch.cat([self.positions, positions])
        self.last = torch.cat([self.last, torch.tensor(tokens, dtype=torch.long)])
        self.jobs.extend(jobs)


def _pad_left(t: torch.Tensor, width: int) -> torch.Tensor:
    """`t` (B, L) or (B, H, L, D) with zeros before its L columns, to `width` columns."""
    missing = width - (t.shape[1] if t.dim() == 2 else t.shape[2])
    if missing == 0:
        return t
    return F.pad(t, (missing, 0) if t.dim() == 2 else (0, 0, missing, 0))
