"""V-COCO means as the official ``vsrl_eval.py`` prints them, and the two ways DETS.json rows
become its detection list.

Synthetic splits in the official layout (``test_vcoco_official.make_split``; new seeds)
with detections that ``clip4hoi eval --vcoco`` must score like ``vsrl_eval``: rows of the
24 action-roles, of ``point instr`` (id 24) and of the actions without a role object
(25..28), several ids on one human box, 1-px wide human boxes, empty and wrong role boxes,
tied or distinct scores. The reference (``test_vcoco_official.vsrl_eval``) follows
``vsrl_eval.py`` step by step — the detection list (``_collect_detections_for_image``),
``_do_agent_eval`` over all 26 actions and ``_do_role_eval`` over its 25 action-roles, and
the two printed means ("Average Agent AP" = nansum / 26, "Average Role AP" = nanmean) —
with the project's documented tie order where numpy's unstable sort is arbitrary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_vcoco_official import make_detections, make_split, vsrl_eval

from clip4hoi.cli import build_parser, main
from clip4hoi.evaluation.vcoco import evaluate_vcoco_files


@pytest.fixture(scope="module", params=[(3, True), (4, False)], ids=["seed3-tied", "seed4"])
def scenario(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, Path, bool]:
    seed, tied = request.param
    root = tmp_path_factory.mktemp(f"vcoco_means_{seed}")
    repo = make_split(root, seed=seed)
    dets = make_detections(repo, root / "dets.json", seed + 100, num_ids=29, tied=tied,
                           thin=0.1)
    return repo, dets, tied


def test_the_detections_have_the_hard_cases(scenario: tuple[Path, Path, bool]) -> None:
    _, dets, _ = scenario
    records = json.loads(dets.read_text())["images"]
    labels = [k for r in records for k in r["actions"]]
    assert {24, 25, 26, 27, 28} <= set(labels)                # point, stand, walk, run, smile
    shared = sum(len(r["human_boxes"]) - len({tuple(b) for b in r["human_boxes"]})
                 for r in records)
    assert shared > 100                                       # rows sharing a human box
    assert any(b[2] == b[0] for r in records for b in r["human_boxes"])    # 1-px agents


@pytest.mark.parametrize("rows", ["per-row", "per-person"])
def test_eval_prints_what_vsrl_eval_prints(scenario: tuple[Path, Path, bool], rows: str,
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    repo, dets, tied = scenario
    if tied and rows == "per-person":
        pytest.skip("a per-person entry has no input position of its own: distinct scores")
    ref = vsrl_eval(repo, dets, rows)
    out = tmp_path / "r.json"
    assert main(["eval", "--vcoco", "--annotations", str(repo), "--detections", str(dets),
                 "--vcoco-rows", rows, "--json", str(out)]) == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["rows"] == rows
    ours_agent = {a["action"]: a["ap"] for a in report["agent"] + report["other_agents"]}
    assert set(ours_agent) == set(ref["agent"]) and len(ours_agent) == 26
    for action, value in ref["agent"].items():
        assert ours_agent[action] == pytest.approx(100 * value, abs=1e-4), action
    for s in (1, 2):
        ours_role = {r["action_role"]: r[f"ap_scenario_{s}"] for r in report["roles"]}
        ours_role["point instr"] = report["point_instr"][f"ap_scenario_{s}"]
        assert set(ours_role) == set(ref["role"][s]) and len(ours_role) == 25
        for name, value in ref["role"][s].items():
            assert ours_role[name] == pytest.approx(100 * value, abs=1e-4), (name, s)
    m = report["map"]
    # the printed means: vsrl_eval's two, and ours over 21 and 24, each labelled
    assert m["agent_vsrl_eval"] == pytest.approx(100 * ref["average_agent"], abs=1e-4)
    assert m["agent"] == pytest.approx(100 * np.mean(
        [ref["agent"][a["action"]] for a in report["agent"]]), abs=1e-4)
    for s in (1, 2):
        assert m[f"role_scenario_{s}_with_point"] == pytest.approx(
            100 * ref["average_role"][s], abs=1e-4)
        assert m[f"role_scenario_{s}"] == pytest.approx(100 * np.mean(
            [v for k, v in ref["role"][s].items() if k != "point instr"]), abs=1e-4)
    assert 0 < report["point_instr"]["ap_scenario_1"] < report["point_instr"]["ap_scenario_2"]
    assert "vsrl_eval's 'Average Agent AP'" in table and "Average Role AP" in table
    assert f"{m['agent_vsrl_eval']:.2f}" in table and f"{m['agent']:.2f}" in table


def test_without_rows_of_the_other_actions_their_ap_is_0(
        scenario: tuple[Path, Path, bool], tmp_path: Path) -> None:
    """What the model writes (ids 0..23 only): point instr and the 5 other actions get AP 0
    (vsrl_eval would stop on them), so its agent mean is the sum over 21 divided by 26."""
    repo, dets, _ = scenario
    records = json.loads(dets.read_text())["images"]
    for r in records:
        keep = [j for j, k in enumerate(r["actions"]) if k < 24]
        for f in ("human_boxes", "object_boxes", "actions", "scores"):
            r[f] = [r[f][j] for j in keep]
    model_only = tmp_path / "model.json"
    model_only.write_text(json.dumps({"images": records}))
    result = evaluate_vcoco_files(repo, model_only)
    assert (result.other_agent_ap == 0).all() and result.point_ap_s1 == 0
    maps = result.maps
    assert maps["agent_vsrl_eval"] == pytest.approx(np.nansum(result.agent_ap) / 26)
    assert maps["role_scenario_1_with_point"] == pytest.approx(
        np.nansum(result.role_ap_s1) / 25)


def test_the_row_conventions_differ_on_shared_human_boxes(
        scenario: tuple[Path, Path, bool]) -> None:
    repo, dets, _ = scenario
    per_row = evaluate_vcoco_files(repo, dets)                      # the default
    per_person = evaluate_vcoco_files(repo, dets, rows="per-person")
    assert per_row.rows == "per-row" and per_person.rows == "per-person"
    worst = np.nanmax(np.abs(per_row.agent_ap - per_person.agent_ap))
    assert worst > 1e-3
    print(f"largest agent-AP difference between per-row and per-person: {100 * worst:.2f}")


def test_the_default_is_in_the_help() -> None:
    subparsers = next(a for a in build_parser()._actions if a.dest == "command").choices
    option = next(a for a in subparsers["eval"]._actions if "--vcoco-rows" in a.option_strings)
    assert option.default == "per-row" and "default: %(default)s" in option.help
    doc = (Path(__file__).parents[1] / "docs" / "evaluation.md").read_text()
    assert "--vcoco-rows" in doc and "per-row" in doc and "per-person" in doc
