"""A snapshot never writes rows without the labels the committed corpus has (labels are recomputed, not seeded)."""

from __future__ import annotations

import pandas as pd
import pytest

from sfn_stream.offline.corpus import LabelsPending
from sfn_stream.offline.corpus._product import _refuse_lost_labels


def _previous(tmp_path):
    pd.DataFrame({"material_id": ["m1", "m2"], "element": ["Fe", "Ti"],
                  "oxidation_method": ["bvanalyzer", None]}).to_parquet(tmp_path / "absorbers.parquet")


def test_rows_that_lose_their_labels_stop_the_snapshot(tmp_path):
    _previous(tmp_path)
    with pytest.raises(LabelsPending, match="1 absorber rows .* m1 Fe"):
        _refuse_lost_labels(tmp_path, [{"material_id": "m1", "element": "Fe", "oxidation_method": None}])


def test_rows_labelled_again_or_never_labelled_pass(tmp_path):
    _previous(tmp_path)
    _refuse_lost_labels(tmp_path, [{"material_id": "m1", "element": "Fe", "oxidation_method": "undefined_boride"},
                                   {"material_id": "m2", "element": "Ti", "oxidation_method": None},
                                   {"material_id": "m3", "element": "Co", "oxidation_method": None}])
    _refuse_lost_labels(tmp_path / "no-corpus-yet", [{"material_id": "m1", "element": "Fe"}])


def test_a_campaign_without_materials_of_the_committed_corpus_stops_the_snapshot(tmp_path):
    from sfn_stream.offline.corpus import MaterialsMissing
    from sfn_stream.offline.corpus._product import _refuse_lost_materials

    pd.DataFrame({"material_id": ["amcsd-00001", "mp-1", "mp-2"],
                  "source": ["amcsd", "omnixas", "omnixas"]}).to_parquet(tmp_path / "materials.parquet")
    with pytest.raises(MaterialsMissing, match=r"2 materials .*omnixas 2.*\.\./shared"):
        _refuse_lost_materials(tmp_path, [{"material_id": "amcsd-00001"}])
    _refuse_lost_materials(tmp_path, [{"material_id": m} for m in ("amcsd-00001", "mp-1", "mp-2", "mp-3")])
    _refuse_lost_materials(tmp_path / "no-corpus-yet", [{"material_id": "mp-1"}])
