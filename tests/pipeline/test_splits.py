"""Canary splits in a blueprint: validation (with JSON pointers), every variant planned, permissions over branches."""

from __future__ import annotations

from pathlib import Path

import pytest

from backworks.contracts.errors import BlueprintError
from backworks.contracts.names import SPLITS_BUCKET, Phase, stage_subject
from backworks.contracts.splits import Split
from backworks.pipeline import blueprints, permissions
from backworks.pipeline.splits import variants
from tests.files import ROOT, write_blueprint

SPLIT_BLUEPRINT = """name: api
plugins:
  stamp: {type: request-headers, config: {set: {x-stamp: "1"}}}
  tag-v1: {type: response-headers, config: {set: {x-branch: v1}}}
  tag-v2: {type: response-headers, config: {set: {x-branch: v2}}, version: ">=1,<2"}
  late: {type: request-headers, config: {set: {x-late: "1"}}}
endpoints:
  e:
    path: /x
    plugins:
      - stamp
      - tag: {split: {tag-v1: 90, tag-v2: 10}, sticky: "header:x-user"}
      - late
    handler: {type: mock}
"""


def issues_of(tmp_path: Path, text: str) -> list[str]:
    path = write_blueprint(tmp_path, text)
    with pytest.raises(BlueprintError) as caught:
        blueprints.load(path)
    return [issue.render() for issue in caught.value.issues]


def test_a_split_entry_gives_one_itinerary_per_branch_with_the_baseline_by_default(tmp_path: Path) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, SPLIT_BLUEPRINT))
    split = loaded.model.splits("e")["tag"]
    assert (split.baseline, split.sticky_header) == ("tag-v1", "x-user")
    assert dict(split.split) == {"tag-v1": 90, "tag-v2": 10}
    assert variants(loaded.model, "e") == [{"tag": "tag-v1"}, {"tag": "tag-v2"}]
    labels = {picks["tag"]: [s.label for s in itinerary] for picks, itinerary in loaded.itineraries("e")}
    assert labels == {
        "tag-v1": ["stamp.request", "late.request", "e-handler.request", "tag-v1.response"],
        "tag-v2": ["stamp.request", "late.request", "e-handler.request", "tag-v2.response"],
    }
    assert [s.label for s in loaded.itinerary("e")] == labels["tag-v1"]
    assert loaded.model.instances()["tag-v2"].version == ">=1,<2"


def test_the_stage_before_a_split_may_hand_to_either_branch_and_only_gateways_touch_bw_splits(tmp_path: Path) -> None:
    text = SPLIT_BLUEPRINT.replace("tag-v1: {type: response-headers, config: {set: {x-branch: v1}}}",
                                  "tag-v1: {type: request-headers, config: {set: {x-branch: v1}}}").replace(
        "tag-v2: {type: response-headers", "tag-v2: {type: request-headers")  # fmt: skip
    found = permissions.identities(blueprints.load(write_blueprint(tmp_path, text)))
    stamp = found["stage-stamp"].permissions.publish
    assert stage_subject("tag-v1", Phase.REQUEST) in stamp and stage_subject("tag-v2", Phase.REQUEST) in stamp
    for branch in ("tag-v1", "tag-v2"):
        assert stage_subject("late", Phase.REQUEST) in found[f"stage-{branch}"].permissions.publish
    assert f"$KV.{SPLITS_BUCKET}.>" in found["gateway"].permissions.publish
    others = [i for name, i in found.items() if name not in ("gateway", "admin")]
    assert not any(SPLITS_BUCKET in subject for i in others for subject in i.permissions.publish)


def test_split_problems_are_reported_with_their_pointers(tmp_path: Path) -> None:
    text = """name: api
plugins:
  hdr: {type: request-headers}
  hdr2: {type: response-headers}
  h: {type: mock}
endpoints:
  e:
    path: /x
    plugins:
      - hdr
      - a: {split: {hdr: 50, ghost: 50}}
      - b: {split: {hdr2: 1, h: 1}}
    handler: {type: mock}
  f:
    path: /y
    plugins:
      - c: {split: {hdr: 1, hdr2: 1}}
    handler: {type: mock}
"""
    text = "\n".join(issues_of(tmp_path, text))
    assert "/endpoints/e/plugins/1/a/split/ghost: split 'a': unknown plugin instance 'ghost'" in text
    assert "/endpoints/e/plugins/1/a/split/hdr [plugin hdr]: split 'a': 'hdr' also runs on its own" in text
    assert "/endpoints/e/plugins/2/b/split/h [plugin h]: split 'b': 'h' is a handler" in text
    assert "/endpoints/f/plugins/0/c/split/hdr2 [plugin hdr2]: split 'c': 'hdr2' is a response-enhancer but the " \
           "baseline 'hdr' is a request-processor" in text  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "pointer", "message"),
    [
        ("{a: {split: {hdr: 0}}}", "/endpoints/e/plugins/0/a", "the weights of a split must sum to more than 0"),
        ("{a: {split: {hdr: -1}}}", "/endpoints/e/plugins/0/a/split/hdr", "greater than or equal to 0"),
        ("{a: {split: {}}}", "/endpoints/e/plugins/0/a/split", "at least 1 item"),
        ("{a: {split: {hdr: 1}, sticky: user}}", "/endpoints/e/plugins/0/a/sticky", "should match pattern"),
        ("{a: {split: {hdr: 1}}, b: {split: {hdr: 1}}}", "/endpoints/e/plugins/0", "names exactly one split"),
        ("{a: {split: {hdr: 1}, weights: 3}}", "/endpoints/e/plugins/0/a/weights", "unknown key 'weights'"),
        ("{a: {split: {hdr: 1}, rollback: {window_s: 5}}}", "/endpoints/e/plugins/0/a/rollback", "max_error_rate"),
        ("5", "/endpoints/e/plugins/0", "valid string"),
    ],
)
def test_malformed_splits_are_refused_at_their_pointer(tmp_path: Path, entry: str, pointer: str, message: str) -> None:
    text = f"name: api\nplugins:\n  hdr: {{type: request-headers}}\nendpoints:\n  e:\n    path: /x\n" \
           f"    plugins: [{entry}]\n    handler: {{type: mock}}\n"  # fmt: skip
    (issue,) = issues_of(tmp_path, text)
    assert f": {pointer}: " in issue and message in issue, issue
    assert f"{tmp_path / 'blueprint.yaml'}:7:" in issue, "the line of the chain entry"


def test_a_version_pin_must_be_a_version_range(tmp_path: Path) -> None:
    text = "name: api\nplugins:\n  hdr: {type: request-headers, version: 'two or more'}\nendpoints:\n" \
           "  e: {path: /x, plugins: [hdr], handler: {type: mock}}\n"  # fmt: skip
    (issue,) = issues_of(tmp_path, text)
    assert "/plugins/hdr/version: Value error, version 'two or more' is not a version range" in issue


def test_rollback_margins_read_percent_and_a_fingerprint_names_branches_and_weights() -> None:
    split = Split.model_validate({"split": {"a": 90, "b": 10}, "rollback": {"max_error_rate_increase": "5%"}})
    assert split.rollback is not None and split.rollback.max_error_rate_increase == 5.0
    assert split.rollback.window_s == 60 and split.rollback.min_calls == 20
    same = Split.model_validate({"split": {"a": 90, "b": 10}, "sticky": "consumer"})
    other = Split.model_validate({"split": {"a": 50, "b": 50}})
    assert split.fingerprint() == same.fingerprint() != other.fingerprint()


def test_the_canary_example_is_valid() -> None:
    loaded = blueprints.load(ROOT / "examples" / "canary" / "blueprint.yaml")
    split = loaded.model.splits("greet")["greeting"]
    assert split.rollback is not None and split.rollback.max_error_rate_increase == 5.0
    assert split.sticky_header == "x-user"
