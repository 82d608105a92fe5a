"""MIT-BIH reading, the AAMI mapping and the evaluation splits, on the real records."""

from __future__ import annotations

import numpy as np
import wfdb

from signals.aami import AAMI_CLASSES, SYMBOL_TO_AAMI, aami_class
from signals.mitbih import (
    ALL_RECORDS,
    DS1,
    DS2,
    NON_PACED,
    PACED,
    hybrid_split,
    inter_patient_split,
    patient_specific_split,
    read_annotations,
    read_record,
    record_path,
)


def counts(classes: np.ndarray) -> dict[str, int]:
    return dict(zip(AAMI_CLASSES, np.bincount(classes, minlength=len(AAMI_CLASSES)).tolist()))


def test_aami_table_and_non_beats() -> None:
    table = {"N": "NLRej", "S": "AaJS", "V": "VE", "F": "F", "Q": "/fQ"}
    assert SYMBOL_TO_AAMI == {s: cls for cls, symbols in table.items() for s in symbols}
    for symbol in ["+", "~", "|", '"', "x", "!", "[", "]", "P", "u"]:
        assert aami_class(symbol) is None


def test_record_class_counts_match_the_database_tables() -> None:
    assert counts(read_annotations("208").beat_classes) == dict(N=1586, S=2, V=992, F=373, Q=2)
    assert counts(read_annotations("100").beat_classes) == dict(N=2239, S=33, V=1, F=0, Q=0)
    # 207: 1457 L + 86 R; 107 A; 105 V + 105 E; its 472 flutter waves (!) are not beats.
    assert counts(read_annotations("207").beat_classes) == dict(N=1543, S=107, V=210, F=0, Q=0)
    assert counts(read_annotations("232").beat_classes) == dict(N=398, S=1382, V=0, F=0, Q=0)


def test_ds1_ds2_class_totals_equal_de_chazal_2004() -> None:
    ds1 = counts(np.concatenate([read_annotations(r).beat_classes for r in DS1]))
    ds2 = counts(np.concatenate([read_annotations(r).beat_classes for r in DS2]))
    assert ds1 == {"N": 45866, "S": 944, "V": 3788, "F": 415, "Q": 8}
    assert ds2 == {"N": 44259, "S": 1837, "V": 3221, "F": 388, "Q": 7}


def test_record_signal_in_mv_with_mlii_first() -> None:
    record = read_record("114")  # stored as V5, MLII
    raw = wfdb.rdrecord(record_path("114"))
    assert raw.sig_name == ["V5", "MLII"] and record.leads == ("MLII", "V5")
    assert np.array_equal(record.signal[0], raw.p_signal[:, 1])
    assert record.fs == 360.0 and record.signal.shape == (2, 650000)
    assert raw.units == ["mV", "mV"]
    assert read_record("207").flutter[0] == (14665, 18350) and len(read_record("207").flutter) == 6


def test_ds1_ds2_membership() -> None:
    assert len(DS1) == len(DS2) == 22
    assert not set(DS1) & set(DS2)
    assert set(DS1) | set(DS2) == set(NON_PACED)
    assert not (set(DS1) | set(DS2)) & PACED
    assert PACED == {"102", "104", "107", "217"} and len(ALL_RECORDS) == 48 and len(NON_PACED) == 44
    split = inter_patient_split()
    assert [s.record for s in split.train] == list(DS1)
    assert [s.record for s in split.test] == list(DS2)
    assert all(s.start_s == 0.0 and s.end_s is None for s in split.train + split.test)


def test_patient_specific_boundary_is_300_s_and_the_beat_on_it_is_test() -> None:
    split = patient_specific_split("100")
    (train,), (test,) = split.train, split.test
    on_the_boundary = np.array([107999, 108000]) / 360.0  # sample 108000 is exactly 300 s
    assert train.contains(on_the_boundary).tolist() == [True, False]
    assert test.contains(on_the_boundary).tolist() == [False, True]
    times = read_annotations("100").beat_samples / 360.0
    assert np.all(train.contains(times) ^ test.contains(times))
    assert int(train.contains(times).sum()) == 371


def test_hybrid_split_is_ds1_then_first_five_minutes_of_each_ds2_record() -> None:
    split = hybrid_split()
    assert [s.record for s in split.train[:22]] == list(DS1)
    assert all(s.end_s is None for s in split.train[:22])
    first_minutes = [(s.record, s.start_s, s.end_s) for s in split.train[22:]]
    assert first_minutes == [(r, 0.0, 300.0) for r in DS2]
    assert [(s.record, s.start_s, s.end_s) for s in split.test] == [(r, 300.0, None) for r in DS2]
    assert split.records == DS1 + DS2
