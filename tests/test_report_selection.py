"""A study that selects hyperparameters reports its refit trials (tested on test), never its search trials."""
import pandas as pd

from reports.build import _selection_note
from reports.collect import table_trials


def _trials(phases):
    return pd.DataFrame({"run_name": [f"r{i}" for i in range(len(phases))], "phase": phases,
                         "rank1": [90.0, 95.0, 40.0, 42.0][:len(phases)]})


def test_the_table_is_the_refit_trials_when_there_are_any():
    trials = _trials(["search", "search", "refit", "refit"])
    table = table_trials(trials)
    assert list(table["run_name"]) == ["r2", "r3"] and list(table["rank1"]) == [40.0, 42.0]
    plain = _trials([None, None, None])
    assert table_trials(plain).equals(plain)


def test_the_report_says_which_split_selected_what():
    note = _selection_note("search on eval.split=val; table: best refit on test, seeds [0, 1]",
                           _trials(["search", "search", "refit", "refit"]))
    assert note.startswith("2 search trials selected the configuration on the validation split")
    assert "evaluated on test" in note and "seeds [0, 1]" in note
    assert _selection_note(None, _trials([None])) is None
