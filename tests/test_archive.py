"""Discovery of recordings in trees and tars: tar members read in place, hostile members refused, broken tars reported."""
from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from meadkit.corpus.archive import discover, logical_relpath, tar_hints, unsafe_reason


def _add(tf: tarfile.TarFile, name: str, data: bytes = b"", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    tf.addfile(info, io.BytesIO(data) if data else None)


def _payload(i: int) -> bytes:
    return bytes((i * 7 + j) % 251 for j in range(1500 + 100 * i))


def _files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_members_are_read_in_place_with_logical_paths(tmp_path):
    (tmp_path / "M005").mkdir()
    with tarfile.open(tmp_path / "M003_video.tar", "w") as tf:
        _add(tf, "video/front/happy/level_1/001.mp4", _payload(1))
        _add(tf, "video/", type=tarfile.DIRTYPE)  # directories are not files: no entry
        _add(tf, "front/sad/level_2/004.mp4", _payload(2))  # no `video/` prefix: the tar's name supplies it
    with tarfile.open(tmp_path / "M005" / "audio.tar", "w") as tf:
        _add(tf, "audio/happy/level_3/012.m4a", _payload(3))
    entries = discover(tmp_path)
    by_rel = {e.relpath: e for e in entries}
    assert set(by_rel) == {"M003/video/front/happy/level_1/001.mp4", "M003/video/front/sad/level_2/004.mp4",
                           "M005/audio/happy/level_3/012.m4a"}
    assert all(e.status == "" and e.source.in_archive for e in entries)
    for rel, i in (("M003/video/front/happy/level_1/001.mp4", 1), ("M003/video/front/sad/level_2/004.mp4", 2),
                   ("M005/audio/happy/level_3/012.m4a", 3)):
        with by_rel[rel].source.open() as f:
            assert f.read() == _payload(i)
            f.seek(-10, os.SEEK_END)
            assert f.read() == _payload(i)[-10:]
    assert _files_under(tmp_path) == {"M003_video.tar", "M005", "M005/audio.tar"}  # nothing extracted


def test_tar_hints_and_logical_paths():
    assert tar_hints("M003_video.tar", "downloads") == ("M003", "video")
    assert tar_hints("video.tar", "W021") == ("W021", "video")
    assert tar_hints("audio.tar.gz", "M041") == ("M041", "audio")
    assert tar_hints("backup.tar", "misc") == (None, None)
    assert tar_hints("m011.tar", "misc") == ("M011", None)
    assert logical_relpath("M003/video/1/front/happy/level_1/001.mp4", "M009", "video") == "M003/video/1/front/happy/level_1/001.mp4"
    assert logical_relpath("audio/happy/level_1/001.m4a", "M009", "audio") == "M009/audio/happy/level_1/001.m4a"


HOSTILE = {
    "../escape.mp4": "climbs out",
    "/etc/meadkit_abs.mp4": "absolute member name",
    "video/../../up.mp4": "climbs out",
    "C:/win.mp4": "absolute member name",
    "video/front/happy/level_1/001.mp4": "symbolic link",
    "video/front/happy/level_1/002.mp4": "hard link",
    "video/front/happy/level_1/003.mp4": "device or fifo",
}


def _hostile_tar(path: Path) -> None:
    with tarfile.open(path, "w") as tf:
        _add(tf, "../escape.mp4", _payload(1))
        _add(tf, "/etc/meadkit_abs.mp4", _payload(2))
        _add(tf, "video/../../up.mp4", _payload(3))
        _add(tf, "C:/win.mp4", _payload(4))
        _add(tf, "video/front/happy/level_1/001.mp4", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        _add(tf, "video/front/happy/level_1/002.mp4", type=tarfile.LNKTYPE, linkname="../../outside")
        _add(tf, "video/front/happy/level_1/003.mp4", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        _add(tf, "video/front/happy/level_1/004.mp4", _payload(5))


def test_hostile_members_are_unsafe_and_nothing_is_written(tmp_path):
    raw = tmp_path / "raw" / "M003"
    raw.mkdir(parents=True)
    _hostile_tar(raw / "video.tar")
    before = _files_under(tmp_path)
    entries = discover(tmp_path / "raw")
    assert _files_under(tmp_path) == before
    assert not Path("/etc/meadkit_abs.mp4").exists()
    unsafe = {e.relpath: e for e in entries if e.status == "unsafe"}
    assert set(unsafe) == set(HOSTILE)
    for name, why in HOSTILE.items():
        assert why in unsafe[name].error and unsafe[name].source is None
    (good,) = [e for e in entries if e.status == ""]
    assert good.relpath == "M003/video/front/happy/level_1/004.mp4"
    with good.source.open() as f:
        assert f.read() == _payload(5)


def test_unsafe_reason_accepts_plain_members():
    info = tarfile.TarInfo("video/front/happy/level_1/001.mp4")
    assert unsafe_reason(info) is None
    info = tarfile.TarInfo("video/front/happy/level_1/a..b.mp4")  # '..' inside a name is not traversal
    assert unsafe_reason(info) is None


def _three_member_tar(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path, "w") as tf:
        for i in (1, 2, 3):
            _add(tf, f"video/front/happy/level_1/{i:03d}.mp4", _payload(i))
    with tarfile.open(path) as tf:
        return tf.getmembers()


def _by_status(entries):
    out = {}
    for e in entries:
        out.setdefault(e.status, []).append(e)
    return out


def test_tar_truncated_inside_a_member_keeps_earlier_members(tmp_path):
    path = tmp_path / "M003" / "video.tar"
    path.parent.mkdir()
    members = _three_member_tar(path)
    cut = members[1].offset_data + 300
    path.write_bytes(path.read_bytes()[:cut])
    st = _by_status(discover(tmp_path))
    assert [e.relpath for e in st[""]] == ["M003/video/front/happy/level_1/001.mp4"]
    corrupt = {e.kind: e for e in st["corrupt"]}
    assert corrupt[None].relpath == "M003/video/front/happy/level_1/002.mp4"
    assert "truncated" in corrupt[None].error
    assert corrupt["archive"].relpath == "M003/video.tar"
    assert "truncated" in corrupt["archive"].error and "2 members" in corrupt["archive"].error


def test_tar_cut_at_a_header_boundary_or_garbled_is_corrupt(tmp_path):
    path = tmp_path / "M003" / "video.tar"
    path.parent.mkdir()
    members = _three_member_tar(path)
    whole = path.read_bytes()
    path.write_bytes(whole[: members[2].offset])  # members 1-2 complete, no header 3, no end marker
    st = _by_status(discover(tmp_path))
    assert len(st[""]) == 2 and "end-of-archive marker" in st["corrupt"][0].error
    garbled = bytearray(whole)
    garbled[members[1].offset : members[1].offset + 100] = b"\xff" * 100  # header of member 2 destroyed
    path.write_bytes(bytes(garbled))
    st = _by_status(discover(tmp_path))
    assert len(st[""]) == 1 and "invalid member header" in st["corrupt"][0].error
    path.write_bytes(b"not a tar at all" * 100)
    st = _by_status(discover(tmp_path))
    assert set(st) == {"corrupt"} and st["corrupt"][0].kind == "archive"


def test_compressed_tar_is_listed_but_not_read_in_place(tmp_path):
    plain = tmp_path / "x.tar"
    _three_member_tar(plain)
    (tmp_path / "M007").mkdir()
    (tmp_path / "M007" / "video.tar.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    entries = discover(tmp_path)
    assert len(entries) == 3
    assert all(e.status == "compressed" and "gzip" in e.error and e.relpath.startswith("M007/video/") for e in entries)


def test_tree_walk_skips_loops_and_output_and_refuses_special_files(tmp_path):
    d = tmp_path / "M003" / "video" / "front" / "happy" / "level_1"
    d.mkdir(parents=True)
    (d / "001.mp4").write_bytes(_payload(1))
    (tmp_path / "M003" / "loop").symlink_to(tmp_path)  # a symlink loop must not hang the walk
    os.mkfifo(d / "002.mp4")  # reading a fifo would block forever
    (d / "003.mp4").symlink_to(tmp_path / "gone.mp4")
    (tmp_path / "out" / "manifests").mkdir(parents=True)
    (tmp_path / "out" / "manifests" / "recordings.parquet").write_bytes(b"x")
    entries = {e.relpath: e for e in discover(tmp_path, exclude=[tmp_path / "out"])}
    assert set(entries) == {f"M003/video/front/happy/level_1/00{i}.mp4" for i in (1, 2, 3)}
    assert entries["M003/video/front/happy/level_1/001.mp4"].status == ""
    assert entries["M003/video/front/happy/level_1/002.mp4"].status == "unsafe"
    assert "fifo" in entries["M003/video/front/happy/level_1/002.mp4"].error
    assert "broken symbolic link" in entries["M003/video/front/happy/level_1/003.mp4"].error


@pytest.mark.parametrize("name", ["M003_video.tar", "video.tar"])
def test_single_tar_as_raw(tmp_path, name):
    folder = tmp_path / "M003"
    folder.mkdir()
    _three_member_tar(folder / name)
    entries = discover(folder / name)
    assert [e.relpath for e in entries] == [f"M003/video/front/happy/level_1/{i:03d}.mp4" for i in (1, 2, 3)]
