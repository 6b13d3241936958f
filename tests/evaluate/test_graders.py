"""Graders: each kind on hand-made answers, composition, and the recipe's `task.metric`."""

import doctest
import sys
import types

import pytest

from tuneloop.config import GraderConfig, validate_recipe
from tuneloop.errors import UserError
from tuneloop.evaluate import graders, metrics, scoring
from tuneloop.evaluate.graders import build_grader

PREDS = ['{"intent": "refund", "n": 2}', '{"intent": "refund"}', "refund, two", '```json\n{"a"']
REFS = ['{"intent": "refund", "n": 2}'] * 4


def test_docstring_examples():
    result = doctest.testmod(graders)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("name", sorted(graders.METRICS))
def test_a_metric_grader_is_the_evaluation_column(name):
    kind = "json" if name.startswith("json") or name == "exact_match" else "text"
    schema = {"type": "object", "required": ["n"]}
    columns = scoring.item_scores(kind, PREDS, REFS, schema)
    assert build_grader(name, schema=schema)(PREDS, REFS) == columns[name]


def test_regex_match_and_compare_with_the_reference():
    quoted = build_grader(GraderConfig(regex='"n"'))
    assert quoted(PREDS, REFS) == [1.0, 0.0, 0.0, 0.0]
    answer = build_grader(GraderConfig(regex=r"#### (-?\d+)", compare="reference"))
    refs = ["Janet sells 9 eggs.\n#### 18"] * 3
    preds = ["#### 18", "So 9 * 2 = 18. #### 17 #### 18", "18"]
    assert answer(preds, refs) == [1.0, 1.0, 0.0]  # the last match counts; none is a miss


def test_python_grader_is_imported_by_path_and_checked(monkeypatch):
    module = types.ModuleType("my_rewards")
    module.short = lambda completion, reference: len(completion) <= len(reference)
    module.loud = lambda completion, reference: 7
    monkeypatch.setitem(sys.modules, "my_rewards", module)
    assert build_grader(GraderConfig(python="my_rewards:short"))(
        ["ok", "too long"], ["abc"] * 2
    ) == [
        1.0,
        0.0,
    ]
    with pytest.raises(UserError, match=r"gave 7.0 for item 0.*\[0, 1\]"):
        build_grader(GraderConfig(python="my_rewards:loud"))(["x"], ["y"])
    with pytest.raises(UserError, match="cannot import the grader") as err:
        build_grader(GraderConfig(python="no_such_module_here:fn"))
    assert err.value.problems[0].where == "task.metric.python"


def test_weighted_sum_stays_in_range_and_names_its_column():
    parts = [GraderConfig(metric="json_valid", weight=1),
             GraderConfig(metric="json_exact", weight=3)]  # fmt: skip
    spec = GraderConfig(name="shape", weighted=parts)
    grader = build_grader(spec)
    valid, exact = metrics.json_validity(PREDS), metrics.json_exact(PREDS, REFS)
    assert grader.name == "shape" and [p.name for p in grader.parts] == ["json_valid", "json_exact"]
    assert grader(PREDS, REFS) == [(v + 3 * e) / 4 for v, e in zip(valid, exact, strict=True)]


def test_judge_grader_uses_eval_judge(monkeypatch):
    from tuneloop.config import JudgeConfig

    seen = {}

    def fake_scores(cfg, questions, refs, answers):
        seen.update(cfg=cfg, questions=questions)
        return [1.0 if a == r else 0.25 for a, r in zip(answers, refs, strict=True)]

    monkeypatch.setattr("tuneloop.evaluate.judge.judge_scores", fake_scores)
    judge = JudgeConfig(url="http://127.0.0.1:1/v1", model="m")
    grader = build_grader(GraderConfig(judge=True), judge=judge)
    assert grader(["a", "b"], ["a", "a"], ["q1", "q2"]) == [1.0, 0.25]
    assert seen == {"cfg": judge, "questions": ["q1", "q2"]}
    with pytest.raises(UserError, match="eval.judge"):
        build_grader(GraderConfig(judge=True))


RECIPE = {"data": {"train": "x.jsonl"}}


@pytest.mark.parametrize(
    ("metric", "says"),
    [
        ({"regx": "a"}, "unknown key `regx`"),
        ({"regex": "(", "metric": "exact_match"}, "exactly one of"),
        ({"regex": "("}, "does not compile"),
        ({"python": "no_colon"}, "is not `package.module:function`"),
        ({"weighted": [{"metric": "exact_matc"}]}, "weighted.0: `exact_matc` is not a per-item"),
        ({"weighted": [{"metric": "exact_match", "weight": 0}]}, "weight"),
        ({"judge": True}, "`judge: true` asks the model in `eval.judge`"),
    ],
)
def test_a_bad_grader_is_one_user_error_naming_task_metric(metric, says):
    with pytest.raises(UserError) as err:
        validate_recipe({**RECIPE, "task": {"metric": metric}})
    (problem,) = err.value.problems
    assert "(task.metric)" in problem.where and says in problem.what, problem.render()
    assert problem.fix


def test_metric_names_still_work_and_a_grader_names_its_column():
    plain = validate_recipe({**RECIPE, "task": {"metric": "rouge_l"}}).task
    assert plain.metric == "rouge_l" and plain.metric_name == "rouge_l"
    assert plain.grader == GraderConfig(metric="rouge_l")
    graded = validate_recipe({**RECIPE, "task": {"metric": {"regex": r"\d+"}}}).task
    assert graded.metric_name == "regex" and graded.grader.kind == "regex"
    assert validate_recipe(RECIPE).task.grader is None
