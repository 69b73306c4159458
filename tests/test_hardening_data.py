"""Hostile-user audit, class C: data that is not what it says is refused, never loaded as
something else.

- a `modelnet40_normal_resampled` shape-name (or id) list with a repeat;
- a class-folder dataset with a symlink loop, or two names for one folder (a phantom or
  doubled class);
- `data convert` into its own source (paths resolved), or stopped midway: DST appears only
  when complete; a full or read-only destination is one line naming it;
- the file-by-file cache: a source rewritten with its size and mtime put back.

Everything runs on real files; the full and read-only file systems are real tmpfs mounts in
a private mount namespace (`unshare -rm`; the tests run as root, for whom chmod cannot make
a folder read-only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, needs_mounts

from pointkd.data import cache, load_split
from pointkd.data.folder import class_folders
from pointkd.errors import DataError

SYNTHETIC = "synthetic:version=1,train_per_class=4,test_per_class=1"  # 48 + 12 shapes


def one_line_error(cli, *args) -> str:
    code, _, err = cli(*args)
    assert code == 2, err
    assert err.startswith("pointkd: error:") and len(err.strip().splitlines()) == 1, err
    return err


# --- modelnet40_normal_resampled: no repeated names or ids ------------------------------------

def normal_resampled(root: Path, names: list[str], train_ids: list[str]) -> Path:
    """A tiny modelnet40_normal_resampled copy: 40 rows per shape file."""
    root.mkdir()
    (root / "modelnet40_shape_names.txt").write_text("".join(f"{n}\n" for n in names))
    (root / "modelnet40_train.txt").write_text("".join(f"{i}\n" for i in train_ids))
    rng = np.random.default_rng(0)
    for shape_id in dict.fromkeys(train_ids):
        folder = root / shape_id.rpartition("_")[0]
        folder.mkdir(exist_ok=True)
        np.savetxt(folder / f"{shape_id}.txt", rng.normal(size=(40, 6)), delimiter=",")
    return root


def test_repeated_shape_name_is_refused(cli, tmp_path):
    """`chair, table, chair` used to load as three classes, the first with 0 shapes."""
    root = normal_resampled(tmp_path / "nr", ["chair", "table", "chair"],
                            ["chair_0001", "table_0001"])
    err = one_line_error(cli, "data", "info", root, "--num-points", "32")
    assert "modelnet40_shape_names.txt" in err and "'chair' is listed more than once" in err


def test_repeated_shape_id_is_refused(cli, tmp_path):
    root = normal_resampled(tmp_path / "nr", ["chair", "table"],
                            ["chair_0001", "table_0001", "chair_0001"])
    err = one_line_error(cli, "data", "info", root, "--num-points", "32")
    assert "modelnet40_train.txt" in err and "'chair_0001' is listed more than once" in err


# --- class folders: a loop or an alias never invents a class ----------------------------------

@pytest.fixture
def folders(tmp_path) -> Path:
    """root/{chair,table}/train/*.npy, two clouds each."""
    root = tmp_path / "shapes"
    rng = np.random.default_rng(1)
    for name in ("chair", "table"):
        (root / name / "train").mkdir(parents=True)
        for i in range(2):
            np.save(root / name / "train" / f"{i}.npy", rng.normal(size=(64, 3)))
    return root


@pytest.mark.parametrize("link, target", [
    ("loop", "."),                 # the dataset itself, as a class: a phantom empty class
    ("up", ".."),                  # the folder above it
    ("again", "../shapes"),        # the dataset by another path
    ("chair/test", ".."),          # a split folder that is its class folder's parent
])
def test_symlink_loop_is_refused(cli, folders, link, target):
    os.symlink(target, folders / link)
    with pytest.raises(DataError, match="symlink loop"):
        class_folders(folders) if "/" not in link else load_split(folders, "test", 32)
    err = one_line_error(cli, "data", "info", folders, "--num-points", "32")
    assert "symlink loop" in err and link in err, err


def test_two_names_for_one_class_folder_are_refused(cli, folders):
    """`sofa -> chair`: the same shapes under two labels."""
    os.symlink("chair", folders / "sofa")
    err = one_line_error(cli, "data", "info", folders, "--num-points", "32")
    assert "are the same folder" in err and "sofa" in err, err


def test_folder_without_split_folders_is_no_class(cli, folders):
    """A stray folder of files (docs/) used to become a class with no shapes."""
    (folders / "docs").mkdir()
    (folders / "docs" / "README.txt").write_text("notes\n")
    err = one_line_error(cli, "data", "info", folders, "--num-points", "32")
    assert "docs: no split folders" in err, err


def test_symlinked_class_folders_elsewhere_still_load(folders, tmp_path):
    """A dataset assembled from symlinks to real folders is fine."""
    elsewhere = tmp_path / "elsewhere"
    shutil.move(folders / "table", elsewhere)
    os.symlink(elsewhere, folders / "table")
    ds = load_split(folders, "train", num_points=32)
    assert ds.class_names == ["chair", "table"] and list(np.bincount(ds.labels)) == [2, 2]


# --- data convert: never into the source, never half a dataset --------------------------------

@pytest.mark.parametrize("dst", ["shapes/converted", "shapes/chair/sub", "shapes/../shapes/x",
                                 "link/x"])
def test_convert_into_its_own_source_is_refused(cli, folders, dst):
    """`data convert SRC SRC/sub` used to write into SRC: it gained a class, labels shifted."""
    os.symlink(folders, folders.parent / "link")
    before = sorted(p.relative_to(folders) for p in folders.rglob("*"))
    err = one_line_error(cli, "data", "convert", folders, folders.parent / dst)
    assert "is inside the source" in err, err
    assert sorted(p.relative_to(folders) for p in folders.rglob("*")) == before


def test_convert_into_an_existing_empty_folder(cli, folders, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    code, _, err = cli("data", "convert", folders, out, "--num-points", "32")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["shape_names.txt", "train.h5"]
    ds, src = load_split(out, "train"), load_split(folders, "train", num_points=32)
    assert ds.fingerprint() == src.fingerprint() and ds.class_names == src.class_names




def in_small_fs(tmp_path: Path, script: str, size: str) -> tuple[subprocess.CompletedProcess,
                                                                 Path]:
    """Run `script` with a tmpfs of `size` at $M; $PK is `python -m pointkd`; what it copies
    to $KEEP stays. Returns (the process, KEEP)."""
    mount, keep = tmp_path / "fs", tmp_path / "kept"
    mount.mkdir()
    keep.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": str(REPO / "src"), "PK": f"{sys.executable} -m pointkd",
           "M": str(mount), "KEEP": str(keep)}
    proc = subprocess.run(["unshare", "-rm", "sh", "-c",
                           f'mount -t tmpfs -o size={size} tmpfs "$M" || exit 99\n{script}'],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc, keep


def assert_one_line(err: str, *texts: str) -> None:
    assert err.startswith("pointkd: error:") and err.count("\n") == 1, err
    for text in texts:
        assert text in err, err


@needs_mounts
def test_convert_on_a_full_disk_leaves_nothing_that_loads(tmp_path):
    """train.h5 (590 KB) fits, test.h5 does not. The old code died in an h5py traceback
    and left DST with train.h5 and no shape_names.txt: it loaded as classes class_0..11."""
    proc, keep = in_small_fs(tmp_path, f"""
        $PK data convert "{SYNTHETIC}" "$M/new" 2> "$KEEP/new.err"; echo "new rc=$?"
        mkdir "$M/empty"
        $PK data convert "{SYNTHETIC}" "$M/empty" 2> "$KEEP/empty.err"; echo "empty rc=$?"
        ls -A "$M" > "$KEEP/top"; ls -A "$M/empty" > "$KEEP/inside"
        """, size="700k")
    assert "new rc=2" in proc.stdout and "empty rc=2" in proc.stdout, proc.stdout
    assert_one_line((keep / "new.err").read_text(), "/new", "no space left on device")
    assert_one_line((keep / "empty.err").read_text(), "/empty", "no space left on device")
    assert (keep / "top").read_text().split() == ["empty"]  # no DST, no staging folder
    assert (keep / "inside").read_text() == ""  # the existing DST: as empty as it was


@needs_mounts
def test_convert_to_a_read_only_destination_is_one_line(tmp_path):
    proc, keep = in_small_fs(tmp_path, f"""
        mkdir "$M/empty"; mount -o remount,ro "$M"
        $PK data convert "{SYNTHETIC}" "$M/new" 2> "$KEEP/new.err"; echo "new rc=$?"
        $PK data convert "{SYNTHETIC}" "$M/empty" 2> "$KEEP/empty.err"; echo "empty rc=$?"
        """, size="1m")
    assert "new rc=2" in proc.stdout and "empty rc=2" in proc.stdout, proc.stdout
    assert_one_line((keep / "new.err").read_text(), "/new", "read-only file system")
    assert_one_line((keep / "empty.err").read_text(), "/empty", "read-only file system")


# --- the file-by-file cache sees a rewrite that kept size and mtime ---------------------------

def test_cache_sees_a_rewrite_with_size_and_mtime_restored(folders, tmp_path, monkeypatch):
    """`touch -r`-style restores used to serve the old clouds from the cache."""
    monkeypatch.setenv("POINTKD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "MIN_FILES", 1)  # cache even this small split
    first = load_split(folders, "train", num_points=32)
    assert list((tmp_path / "cache" / "datasets").iterdir())  # it was cached
    victim = folders / "chair" / "train" / "0.npy"
    st = victim.stat()
    np.save(victim, np.random.default_rng(9).normal(size=(64, 3)))  # same shape: same size
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert victim.stat().st_size == st.st_size and victim.stat().st_mtime_ns == st.st_mtime_ns
    again = load_split(folders, "train", num_points=32)
    monkeypatch.setenv("POINTKD_CACHE", "off")
    fresh = load_split(folders, "train", num_points=32)
    assert again.fingerprint() == fresh.fingerprint() != first.fingerprint()


def test_content_digest_reads_both_ends_of_a_large_file(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "SAMPLE_BYTES", 1024)  # "large" = over 2 KiB here
    path = tmp_path / "big.bin"
    data = bytearray(np.random.default_rng(0).bytes(10_000))
    path.write_bytes(data)
    base = cache.content_digest(path, len(data))
    for offset in (0, 1023, len(data) - 1024, len(data) - 1):
        changed = bytearray(data)
        changed[offset] ^= 0xFF
        path.write_bytes(changed)
        assert cache.content_digest(path, len(data)) != base, offset
    path.write_bytes(data)
    assert cache.content_digest(path, len(data)) == base
