"""Replacing a run folder: the new one appears whole, the old one leaves no trace."""

from __future__ import annotations

import sys

import pytest

from anomtune.files import _exchange
from anomtune.persist import replace_dir


def _folder(path, text):
    path.mkdir()
    (path / "summary.json").write_text(text)
    (path / text).write_text(text)
    return path


def test_replace_dir_into_a_new_place(tmp_path):
    staged = _folder(tmp_path / ".staged", "new")
    replace_dir(staged, tmp_path / "run")
    assert (tmp_path / "run" / "summary.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_replace_dir_over_an_old_folder(tmp_path):
    _folder(tmp_path / "run", "old")
    staged = _folder(tmp_path / ".staged", "new")
    replace_dir(staged, tmp_path / "run")
    assert (tmp_path / "run" / "summary.json").read_text() == "new"
    assert not (tmp_path / "run" / "old").exists()
    # Neither the staged folder nor a renamed-aside old folder is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux only")
def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    a = _folder(tmp_path / "a", "one")
    b = _folder(tmp_path / "b", "two")
    assert _exchange(a, b)
    assert (a / "summary.json").read_text() == "two"
    assert (b / "summary.json").read_text() == "one"
    assert not _exchange(tmp_path / "missing", b)
