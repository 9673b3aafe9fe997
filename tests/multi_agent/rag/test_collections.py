"""Named knowledge bases: the registry file."""

from __future__ import annotations

import pytest

from multi_agent.rag.collections import Collections


def test_add_list_repoint_remove(tmp_path):
    cols = Collections(tmp_path / "kbs.json", default=tmp_path / "default")
    assert [c.name for c in cols.list()] == ["default"]
    cols.add("papers", tmp_path / "papers")
    cols.add("zoo", tmp_path / "zoo")
    cols.add("papers", tmp_path / "papers2")                 # re-pointed, still one entry
    again = Collections(tmp_path / "kbs.json", default=tmp_path / "default")
    assert [(c.name, c.kb_dir.name) for c in again.list()] == [("default", "default"), ("zoo", "zoo"),
                                                                ("papers", "papers2")]
    assert again.by_folder(tmp_path / "zoo").name == "zoo"
    with pytest.raises(ValueError, match="reserved"):
        again.add("default", tmp_path)
    again.remove("zoo")
    assert [c.name for c in again.list()] == ["default", "papers"]
    (tmp_path / "kbs.json").write_text("{not json", encoding="utf-8")
    assert [c.name for c in again.list()] == ["default"]     # a damaged file: the default still works
