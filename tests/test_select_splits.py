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


def _many_actors():
    return _clips(actors=("M003", "M030", "W009", "W015", "M005", "M007", "W011", "W014", "M009", "W016"),
                  takes=range(1, 4))


def _actor_splits(df, s) -> dict[str, str]:
    """actor -> its one split (every take of an actor in the same split)."""
    g = df.assign(s=s.astype(str)).groupby("actor")["s"]
    assert (g.nunique() == 1).all()
    return g.first().to_dict()


def test_mead4_split_tests_on_eat_and_edtalks_actors_and_draws_val_by_seed():
    df = _many_actors()
    by_actor = _actor_splits(df, assign_splits(df, SplitConfig(method="mead-4", seed=1)))
    assert {a for a, v in by_actor.items() if v == "test"} == {"M003", "M030", "W009", "W015"}
    val = {a for a, v in by_actor.items() if v == "val"}
    assert len(val) == 4 and sum(v == "train" for v in by_actor.values()) == 2
    shuffled = df.sample(frac=1, random_state=0)
    assert _actor_splits(shuffled, assign_splits(shuffled, SplitConfig(method="mead-4", seed=1))) == by_actor
    other = _actor_splits(df, assign_splits(df, SplitConfig(method="mead-4", seed=2)))
    assert {a for a, v in other.items() if v == "val"} != val


def test_sequences_split_is_70_15_15_per_actor_emotion_level_and_seeded():
    df = _clips(takes=range(1, 21))  # 20 takes per (actor, emotion, level): 14 / 3 / 3
    s = assign_splits(df, SplitConfig(method="sequences", seed=5))
    takes = df.assign(s=s).drop_duplicates("take_id")
    per_group = takes.groupby(["actor", "emotion", "level"])["s"].value_counts().unstack()
    assert (per_group["train"] == 14).all() and (per_group["val"] == 3).all() and (per_group["test"] == 3).all()
    assert (df.assign(s=s).groupby("take_id")["s"].nunique() == 1).all()
    again = assign_splits(df.sample(frac=1, random_state=1), SplitConfig(method="sequences", seed=5)).reindex(df.index)
    assert (again == s).all() and not (assign_splits(df, SplitConfig(method="sequences", seed=6)) == s).all()


def test_a_split_file_reproduces_an_exported_split_exactly(tmp_path):
    from meadkit.splits import write_split_file

    df = _many_actors()
    df["split"] = assign_splits(df, SplitConfig(method="sequences", seed=9))
    assert write_split_file(df, tmp_path / "s.csv") == df.take_id.nunique()
    back = assign_splits(df.drop(columns="split"), SplitConfig(method="file", file=str(tmp_path / "s.csv")))
    assert (back == df["split"]).all()


def test_a_bad_split_file_is_refused_naming_the_first_takes(tmp_path):
    from meadkit.splits import SplitFileError, read_split_file

    ids = [f"M003_happy_1_{t:03d}" for t in range(1, 9)]
    path = tmp_path / "s.csv"
    path.write_text("take_id,split\n" + "".join(f"{t},train\n" for t in ids[1:]) + "W999_sad_1_001,test\n"
                    + f"{ids[1]},val\n" + "M003_angry_1_001,holdout\n")
    with pytest.raises(SplitFileError) as e:
        read_split_file(path, ids, known=ids + ["M003_angry_1_001"])
    msg = str(e.value)
    assert "1 unknown take id(s): W999_sad_1_001" in msg and f"1 take(s) without a split: {ids[0]}" in msg
    assert "1 split(s) other than train/val/test: holdout" in msg and f"1 take(s) given twice: {ids[1]}" in msg
    with pytest.raises(SplitFileError, match="needs splits.file"):
        SplitConfig(method="file") and assign_splits(_clips(), SplitConfig(method="file"))
    with pytest.raises(SplitFileError, match="cannot read the split file"):
        read_split_file(tmp_path / "none.csv", ids)


def test_prepare_takes_its_splits_from_a_file_and_refuses_a_bad_one_before_any_work(tiny_corpus, tmp_path):
    from click.testing import CliRunner

    from meadkit.cli import main
    from meadkit.config import load_pipeline
    from meadkit.manifest import read_table
    from meadkit.prepare import run_prepare
    from meadkit.splits import SplitFileError

    raw, _ = tiny_corpus
    out = tmp_path / "out"
    run_prepare(raw, out, load_pipeline(), progress=False, stages=("sync",), shards=False)
    csv = tmp_path / "splits.csv"
    said = CliRunner().invoke(main, ["select", str(out), "--split-method", "mead-4", "--status", "", "--export", str(csv)])
    assert said.exit_code == 0, said.output
    exported = pd.read_csv(csv).set_index("take_id")["split"]
    assert "wrote the split of 6 takes" in said.output and len(exported) == 6
    assert set(exported) == {"test"}  # the tiny corpus's actors, M003 and W009, are two of mead-4's test actors
    exported[:] = ["train", "val", "test"] * 2  # a published split of our own
    exported.reset_index().to_csv(csv, index=False)
    other = tmp_path / "other"
    run_prepare(raw, other, load_pipeline(overrides=["splits.method=file", f"splits.file={csv}"]), progress=False,
                stages=("sync",), shards=False)
    clips = read_table(other / "manifests" / "clips.parquet")
    assert (clips["split"].to_numpy() == exported.loc[clips["take_id"]].to_numpy()).all()
    csv.write_text("\n".join(csv.read_text().splitlines()[:-1]) + "\n")  # the last take loses its split
    with pytest.raises(SplitFileError, match="1 take\\(s\\) without a split"):
        run_prepare(raw, tmp_path / "third", load_pipeline(overrides=["splits.method=file", f"splits.file={csv}"]),
                    progress=False, stages=("sync",), shards=False)
    assert not list((tmp_path / "third").glob("state/takes/*.json"))
