"""The task-kind table (kinds.py): every task names a kind in it, and every entry points at things that exist."""

import inspect

import pytest

from bertkit import model as models
from bertkit.data.tasks import MULTI_LABEL, TASKS
from bertkit.kinds import KINDS, PIPELINE_OF_HEAD, PIPELINES
from bertkit.pipelines import Pipeline


def test_every_task_has_a_kind():
    assert {spec.kind for spec in TASKS.values()} | {MULTI_LABEL.kind} <= set(KINDS)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_kind_points_at_real_things(name):
    kind = KINDS[name]
    assert kind.head in models.MODEL_CLASSES
    method = getattr(Pipeline, kind.pipeline)
    parameters = inspect.signature(method).parameters
    assert len(parameters) >= 2  # self and the inputs
    assert PIPELINE_OF_HEAD[kind.head] == kind.pipeline  # one head, one pipeline
    assert PIPELINES[kind.pipeline].pipeline_fields == kind.pipeline_fields


def test_head_config_of_each_kind():
    assert KINDS["classification"].config(["neg", "pos"]) == {
        "id2label": {0: "neg", 1: "pos"}, "problem_type": "single_label_classification"}
    assert KINDS["regression"].config(None) == {"id2label": {0: "score"}, "problem_type": "regression"}
    assert KINDS["tagging"].config(["O", "B-X"]) == {"id2label": {0: "O", 1: "B-X"}}
    assert KINDS["span"].config(None) == {} and KINDS["span"].max_seq_len == 384


def test_heads_match_transformers_names():
    transformers = pytest.importorskip("transformers")
    for kind in KINDS.values():
        assert hasattr(transformers, kind.head), kind.head
