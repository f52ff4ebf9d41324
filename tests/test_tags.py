"""The MLflow tag contract (tracking.tags): the keys docs/ARCHITECTURE.md documents, written and read back through
the two records, and spelled in no other module of the packages."""
import re
from pathlib import Path

from tracking.tags import StudyTags, TrialTags

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "tracking", "ablation", "reports", "benchmarks")

# The tag keys of docs/ARCHITECTURE.md, "MLflow layout".
STUDY_KEYS = {"kind", "study", "study.metric", "study.mode", "study.group_keys", "study.baseline", "study.ray_path",
              "study.algorithm", "git_commit", "study.targets", "study.selection", "study.selected", "interrupted"}
TRIAL_KEYS = {"mlflow.parentRunId", "kind", "trial_id", "study", "group", "seed", "git_commit", "node_id",
              "hostname", "variant", "split", "phase", "failure_reason", "failure_permanent", "stopped_early"}
# Keys no other string of the packages spells: any literal of them is a tag written or read past the records.
DISTINCT = {k for k in STUDY_KEYS | TRIAL_KEYS if "." in k} | {"failure_permanent", "stopped_early", "node_id",
                                                               "hostname", "interrupted"}


def test_the_records_hold_the_documented_keys():
    assert set(StudyTags(study="s").to_tags()) == {"kind", "study"}
    full = StudyTags(study="s", metric="rank1", mode="max", group_keys=("loss.type", "model.neck"), baseline="",
                     ray_path="/r/s-1", algorithm="grid", git_commit="abc", targets="", selection="sel",
                     selected="loss.type=expat", interrupted=False)
    assert set(full.to_tags()) == STUDY_KEYS
    trial = TrialTags(parent_run_id="p", trial_id="t1", study="s", group="g", seed=0, git_commit="abc",
                      node_id="n", hostname="h", variant="v", split=2, phase="refit", failure_reason="why",
                      failure_permanent=True, stopped_early=True)
    assert set(trial.to_tags()) == TRIAL_KEYS


def test_tags_are_written_as_mlflow_strings_and_read_back_typed():
    study = StudyTags(study="s", group_keys=("loss.type", "model.neck"), baseline="", interrupted=False)
    assert study.to_tags() == {"kind": "study", "study": "s", "study.group_keys": "loss.type,model.neck",
                               "study.baseline": "", "interrupted": "false"}
    assert StudyTags.from_tags(study.to_tags()) == study
    trial = TrialTags(parent_run_id="p", trial_id="t1", group="loss.type=expat", seed=0, split=1,
                      failure_permanent=True)
    tags = trial.to_tags()
    assert tags == {"mlflow.parentRunId": "p", "kind": "trial", "trial_id": "t1", "group": "loss.type=expat",
                    "seed": "0", "split": "1", "failure_permanent": "true"}
    assert TrialTags.from_tags({**tags, "mlflow.runName": "x"}) == trial  # MLflow's own tags are ignored
    # A run without the optional tags reads back None (not a trial of a study with variants, splits, phases).
    assert TrialTags.from_tags({"kind": "trial"}).variant is None
    assert not StudyTags.from_tags({"kind": "trial"}).is_study and TrialTags.from_tags({"kind": "trial"}).is_trial
    # A later tag on an existing run, and a retried trial's attempt tags (its identity is not rewritten).
    assert StudyTags.only(selected="CS-BN", interrupted=True) == {"study.selected": "CS-BN", "interrupted": "true"}
    assert TrialTags(parent_run_id="p", trial_id="t", node_id="n").attempt() == {"node_id": "n"}
    assert TrialTags.filter(parent_run_id="p", trial_id="t") == "tags.`mlflow.parentRunId` = 'p' and tags.`trial_id` = 't'"


_GENERIC = "|".join(re.escape(k) for k in sorted(STUDY_KEYS | TRIAL_KEYS))
# A tag read (tags.get("group"), tags["seed"]), written (set_tag(run, "phase", ...), RunTag("seed", ...),
# tags={"kind": ...}) or queried ("tags.trial_id = ...") by its key.
TAG_USES = [re.compile(p) for p in (
    rf"tags\s*(\.get\(|\[)\s*[\"']({_GENERIC})[\"']",
    rf"(set_tag|delete_tag)\([^,()]*,\s*[\"']({_GENERIC})[\"']",
    rf"RunTag\(\s*[\"']({_GENERIC})[\"']",
    rf"tags\s*=\s*\{{\s*[\"']({_GENERIC})[\"']\s*:",
    rf"tags\.`?({_GENERIC})`?\s*(=\s*'|!=\s*'|I?LIKE\b|IN\s*\()",
    rf"[\"']({'|'.join(re.escape(k) for k in sorted(DISTINCT))})[\"']",
)]


def tag_literals(text: str) -> list[str]:
    return [m.group(0) for pattern in TAG_USES for m in pattern.finditer(text)]


def test_no_module_but_the_contract_spells_a_tag_key():
    found = {p.relative_to(ROOT).as_posix(): tag_literals(p.read_text()) for pkg in PACKAGES
             for p in (ROOT / pkg).rglob("*.py") if p != ROOT / "tracking" / "tags.py"}
    assert {path: hits for path, hits in found.items() if hits} == {}


def test_the_scan_finds_the_ways_a_tag_was_spelled_before():
    for line in ('tags.get("study.group_keys", "")', "run.data.tags['phase']", 'client.set_tag(run_id, "seed", "1")',
                 'tags={"kind": "trial"}', "f\"tags.trial_id = '{t}'\"", 'RunTag("group", g)',
                 '{"stopped_early": "true"}', 'client.delete_tag(rid, "failure_reason")'):
        assert tag_literals(line), line
    assert not tag_literals('df["group"]; {"failed": 1, "failure_reason": why}; TrialTags.key("group")')
