"""`meadkit synth OUT`: write a synthetic MEAD-shaped corpus with ground truth."""
from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import click

from meadkit.commands.options import jobs_option
from meadkit.corpus.names import EMOTIONS, MEAD_RATES, VIEWS
from meadkit.corpus.photos import BUILTIN_PHOTOS
from meadkit.corpus.synth import TAR_NAMINGS, SynthConfig, default_truth_path, read_truth, synthesize
from meadkit.media.video import ENCODINGS
from meadkit.runner import Executor
from meadkit.select import split_csv


def _csv(choices):
    def parse(ctx, param, value):
        if value is None:
            return None
        items = tuple(split_csv(value) or ())
        bad = [v for v in items if v not in choices]
        if bad or not items:
            raise click.BadParameter(f"{','.join(bad) or 'empty'}: choose from {','.join(map(str, choices))}")
        return items
    return parse


def _levels(ctx, param, value):
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("levels are numbers, e.g. 1,3") from None


def _resolution(ctx, param, value):
    try:
        w, h = (int(x) for x in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter("use WIDTHxHEIGHT, e.g. 480x270") from None
    return w, h


def _actors(ctx, param, value):
    return int(value) if value.isdigit() else tuple(split_csv(value) or ())


@click.command(context_settings={"show_default": True})
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--actors", default="2", callback=_actors, help="How many actors (MEAD ids M003, W009, ...), or a list such as M003,W021.")
@click.option("--emotions", default=",".join(EMOTIONS), callback=_csv(EMOTIONS), help="Emotions (MEAD folder names), comma separated.")
@click.option("--levels", default="1,2,3", callback=_levels, help="Intensity levels (neutral always gets level 1 only).")
@click.option("--takes", default=2, type=click.IntRange(1, 99), help="Takes per (emotion, level).")
@click.option("--seconds", default=3.0, type=click.FloatRange(1.0, 60.0), help="Reference-audio length per take; each view differs by up to 0.35 s.")
@click.option("--views", default=",".join(VIEWS), callback=_csv(VIEWS), help="Camera views, comma separated.")
@click.option("--resolution", default="1920x1080", callback=_resolution, help="Video size WIDTHxHEIGHT (use e.g. 480x270 for quick tests).")
@click.option("--photos", default=",".join(BUILTIN_PHOTOS), callback=lambda ctx, param, v: tuple(split_csv(v)),
              help="Photos actors are made from (actor i gets photo i mod N): built-in names, or paths to images "
                   "with an iBUG .pts of the same stem beside them (held-out faces).")
@click.option("--frontal", is_flag=True, help="Turn each head to face the front camera, as MEAD's actors sit (else a "
              "turned photo stays turned in the front view, and its 30-degree views turn further).")
@click.option("--seed", default=0, type=int, help="Random seed; the same seed gives the same corpus.")
@click.option("--tar", is_flag=True, help="Write per-actor video/audio tars instead of folders.")
@click.option("--tar-naming", default="mixed", type=click.Choice(TAR_NAMINGS), help="<actor>/video.tar, <actor>_video.tar, or alternate per actor.")
@click.option("--defects", is_flag=True, help="Inject each of MEAD's known irregularities once (no audio stream, truncated mp4, "
              "missing view/take, extra video/1/ level, short audio, stray file, corrupt tar with --tar).")
@click.option("--curation-defects", is_flag=True, help="Inject each curation defect once in the first actor's emotional "
              "takes: a front view whose picture lags its audio by 3 frames, a blurred view, a take copied under a new "
              "take number, a take with left_30 and right_30 swapped.")
@click.option("--voice", default="auto", type=click.Choice(["auto", "procedural"]), help="auto = espeak-ng if on PATH, else a procedural voice.")
@click.option("--fps", "fps", default=str(MEAD_RATES[0]), type=click.Choice([str(r) for r in MEAD_RATES]),
              help="Frame rate: MEAD's two exact rates (most of MEAD is 65521/2184; some views are 1000000/33333).")
@click.option("--encoding", default="mead", type=click.Choice(ENCODINGS),
              help="mead: as MEAD is encoded (yuvj444p High 4:4:4, ~2 Mb/s at 1080p, one keyframe, B-frames); "
                   "crf: yuv420p at constant quality.")
@jobs_option(what="Worker processes (takes rendered in parallel)")
@click.option("--truth", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Ground-truth Parquet path  [default: OUT.truth.parquet beside OUT]")
def command(out, actors, emotions, levels, takes, seconds, views, resolution, photos, frontal, seed, tar, tar_naming, defects, curation_defects,
            voice, fps,
            encoding, jobs, truth):
    """Write a synthetic corpus in MEAD's exact layout to OUT, with known ground truth.

    Actors from several real photos (different people, one greyscale), expressions graded by emotion
    and level, a voice whose envelope drives the lips, 7 views rendered as 3D head turns at MEAD's frame rate and encoding with their own
    offsets against the 48 kHz reference audio. The truth table lists per (take, view) the
    offset, frame count, per-frame 68 landmarks, labels and injected defects.

    Example: meadkit synth /tmp/mead --actors 2 --emotions neutral,happy --takes 1 --resolution 480x270
    """
    config = SynthConfig(actors=actors, emotions=emotions, levels=levels, takes=takes, seconds=seconds, views=views,
                         width=resolution[0], height=resolution[1], photos=photos, frontal=frontal, seed=seed, defects=defects,
                         curation_defects=curation_defects, tar=tar,
                         tar_naming=tar_naming, voice=voice, fps=Fraction(fps), encoding=encoding)
    try:
        config.validate()
        n_takes = len(config.take_keys())
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    t = time.perf_counter()
    path = synthesize(out, config, truth or default_truth_path(out), Executor(jobs))
    df = read_truth(path)
    written = df[df.written]
    click.echo(f"wrote {n_takes} takes of {len(config.actor_ids())} actors to {out} in {time.perf_counter() - t:.1f} s: "
               f"{(written.kind == 'video').sum()} videos, {(written.kind == 'audio').sum()} reference audios"
               + (f", {written.archive.nunique()} tars" if tar else ""))
    hit = df[df.defects.map(len) > 0]
    for kind in sorted({k for d in hit.defects for k in d}):
        rows = hit[hit.defects.map(lambda d: kind in d)]
        click.echo(f"  defect {kind}: {len(rows)} file(s), e.g. {rows.relpath.iloc[0]}")
    click.echo(f"ground truth: {path}")
