"""foveal.files: whole files or none, under temporary names no other process or host makes."""

import json
import os
import socket

import pytest

from foveal.files import atomic_write, atomic_write_json, unique_token


def test_temporary_names_are_host_safe(tmp_path):
    token = unique_token()
    assert token.startswith(socket.gethostname().replace(".", "_")[:20]) and f"-{os.getpid()}-" in token
    assert token != unique_token()
    atomic_write(tmp_path / "a.json", b"{}")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_json_is_written_as_json_dumps_writes_it(tmp_path):
    value = {"b": [1, 2.5, None], "a": "x"}
    atomic_write_json(tmp_path / "out" / "v.json", value)
    assert (tmp_path / "out" / "v.json").read_text() == json.dumps(value, indent=2)
    atomic_write_json(tmp_path / "out" / "v.json", value, indent=1)
    assert (tmp_path / "out" / "v.json").read_text() == json.dumps(value, indent=1)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    atomic_write(tmp_path / "a.json", b"old")

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "a.json", b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"] and (tmp_path / "a.json").read_bytes() == b"old"
