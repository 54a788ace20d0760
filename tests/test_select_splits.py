"""Structured selection and the three split methods."""
import pandas as pd
import pytest

from meadkit.corpus.names import TakeKey
from meadkit.select import SelectError, counts, select
from meadkit.splits import SplitConfig, assign_splits


def _clips(actors=("M003", "M037", "M032"), takes=range(1, 13)):
    rows = []
    for a in actors:
        for e, levels in (("happy", (1, 2, 3)), ("neutral", (1,))):
            for lv in levels:
                for t in takes:
                    for v in ("front", "left_30"):
                        rows.append(dict(actor=a, gender=a[0], emotion=e, level=lv, take=t, view=v,
                                         take_id=TakeKey(a, e, lv, t).id, status="ok"))
    return pd.DataFrame(rows)


def test_speakers_split_is_speaker_disjoint():
    df = _clips()
    s = assign_splits(df, SplitConfig(method="speakers"))
    assert set(s[df.actor == "M037"]) == {"test"}
    assert set(s[df.actor == "M032"]) == {"val"}
    assert set(s[df.actor == "M003"]) == {"train"}


def test_paper_split_takes_last_takes_per_actor_emotion_level():
    df = _clips(takes=range(1, 16))
    s = assign_splits(df, SplitConfig(method="paper"))
    happy = df[(df.emotion == "happy") & (df.actor == "M003") & (df.level == 2)]
    assert sorted(happy[s[happy.index] == "test"]["take"].unique()) == list(range(10, 16))
    neutral = df[(df.emotion == "neutral") & (df.actor == "M003")]
    assert sorted(neutral[s[neutral.index] == "test"]["take"].unique()) == list(range(6, 16))


def test_random_split_is_seeded_and_keeps_takes_whole():
    df = _clips()
    a = assign_splits(df, SplitConfig(method="random", seed=3))
    b = assign_splits(df.sample(frac=1, random_state=0), SplitConfig(method="random", seed=3)).reindex(df.index)
    c = assign_splits(df, SplitConfig(method="random", seed=4))
    assert (a == b).all() and not (a == c).all()
    assert (df.assign(s=a).groupby("take_id")["s"].nunique() == 1).all()
    frac = (a == "test").mean()
    assert 0.02 < frac < 0.25


def test_select_filters_and_rejects_unknown_columns():
    df = _clips()
    got = select(df, emotion=["happy"], level=["3"], view="front", actor=None)
    assert set(got.emotion) == {"happy"} and set(got.level) == {3} and set(got.view) == {"front"}
    assert len(got) == 3 * 12
    with pytest.raises(SelectError, match="cannot filter"):
        select(df, **{"__import__('os')": ["x"]})
    with pytest.raises(SelectError, match="must be int"):
        select(df, level=["high"])
    table = counts(got)
    assert int(table.loc[("happy", 3), "front"]) == 36


def test_unknown_split_method_is_refused():
    with pytest.raises(ValueError, match="splits.method = 'whatever': must be one of speakers, paper, random"):
        SplitConfig(method="whatever")
