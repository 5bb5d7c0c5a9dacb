"""The bundled signatures' cache (classify/sigcache.py): what loads from it is exactly
what parsing the TOML files gives, and a cache that no longer matches the files, the
code or its own bytes is never used."""

from __future__ import annotations

import os
import pickle
import shutil
import sys
from pathlib import Path

import pytest

from wxnet.classify import Classifier, FlowView, bundled_paths, load_signatures, sigcache
from wxnet.classify import signatures as sigmod
from wxnet.classify.sigcache import load_bundled
from wxnet.classify.signatures import BUNDLED_DIR, SignatureSet


def _no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(texts: object) -> SignatureSet:
        raise AssertionError("parsed the files: the cache was not used")

    monkeypatch.setattr(sigcache, "parse", refuse)


def _copy(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "signatures"
    shutil.copytree(BUNDLED_DIR, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root, str(tmp_path / "cache" / "signatures.marshal")


def test_cached_bundled_set_equals_the_parsed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = str(tmp_path / "c" / "sigs.marshal")
    parsed = load_signatures(bundled_paths())  # the files given: always parsed and checked
    written = load_bundled(cache=cache, write=True)
    assert os.path.exists(cache)
    _no_parse(monkeypatch)
    cached = load_bundled(cache=cache)
    assert cached == parsed == written
    assert repr(cached) == repr(parsed)  # every field of every signature, in order
    assert list(cached.apps) == list(parsed.apps)
    assert list(cached.suffix_index.items()) == list(parsed.suffix_index.items())
    for a, b in zip(cached, parsed, strict=True):
        assert a == b and hash(a) == hash(b) and a.source == b.source
        assert [type(n) for n in a.ranges] == [type(n) for n in b.ranges]
    # The same labels: the classifier's own indexes built from either set agree.
    flows = [
        FlowView("tcp", "10.0.0.1", 40000, "203.205.239.154", 8080, bytes.fromhex("16f1030010")),
        FlowView("tcp", "10.0.0.1", 40001, "17.57.146.1", 5223),
        FlowView("udp", "10.0.0.1", 40002, "192.0.2.9", 8000, bytes.fromhex("d10a2e0a") * 4),
        FlowView(
            "tcp", "10.0.0.1", 40003, "192.0.2.1", 80, b"GET / HTTP/1.1\r\nHost: a.qq.com\r\n\r\n"
        ),
    ]
    one, two = Classifier(cached), Classifier(parsed)
    for f in flows:
        assert one.classify(f) == two.classify(f)
    assert pickle.loads(pickle.dumps(cached)) == cached  # the gateway pickles its classifier


@pytest.mark.parametrize("change", ["edit", "add", "remove", "rename", "code", "damage", "empty"])
def test_a_stale_or_damaged_cache_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    root, cache = _copy(tmp_path)
    (root / "zz.toml").write_text('id = "zz"\nlabel = "ZZ"\nreason = "an extra file"\n')
    load_bundled(str(root), cache, write=True)
    wechat = root / "wechat.toml"
    if change == "edit":  # one byte of one file
        wechat.write_text(wechat.read_text().replace('label = "WeChat"', 'label = "WeChaT"'))
    elif change == "add":
        (root / "zz2.toml").write_text('id = "zz2"\nlabel = "ZZ2"\nreason = "added"\n')
    elif change == "remove":
        (root / "zz.toml").unlink()
    elif change == "rename":
        (root / "google-push.toml").rename(root / "google-push2.toml")
    elif change == "code":  # another signatures.py made the cache
        monkeypatch.setattr(sigcache, "_code_digest", lambda: "0:00000000")
    elif change == "damage":
        data = Path(cache).read_bytes()
        Path(cache).write_bytes(data[: len(data) // 2])
    else:
        Path(cache).write_bytes(b"")
    got = load_bundled(str(root), cache, write=False)
    assert got == load_signatures(sorted(root.glob("*.toml")))
    if change == "edit":
        assert got.apps["wechat"].label == "WeChaT"
    # Written again from the files, it is current once more.
    load_bundled(str(root), cache, write=True)
    _no_parse(monkeypatch)
    assert load_bundled(str(root), cache) == got


def test_no_cache_written_when_not_allowed_or_not_possible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, cache = _copy(tmp_path)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    load_bundled(str(root), cache)  # write=None: as Python writes bytecode
    assert not os.path.exists(cache)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the cache's directory should be
    got = load_bundled(str(root), str(blocked / "sigs.marshal"))
    assert got == load_bundled(str(root), None) and blocked.read_text() == ""
    load_bundled(str(root), cache)
    assert os.path.exists(cache) and os.listdir(os.path.dirname(cache)) == ["signatures.marshal"]


def test_bad_bundled_file_is_still_an_error(tmp_path: Path) -> None:
    root, cache = _copy(tmp_path)
    (root / "wechat.toml").write_text("id = [")
    with pytest.raises(sigmod.SignatureError, match=r"wechat\.toml: not valid TOML"):
        load_bundled(str(root), cache, write=True)
    assert not os.path.exists(cache)
