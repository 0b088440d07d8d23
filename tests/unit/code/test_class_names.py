"""Class names are names, not file names: one rule maps a name to its folder (code/layout.py), train.py accepts the
name or its folder form, the names travel with the data (the train channel's label_dict.json) and the real names
are what metrics.json, model_config.json, the log and the endpoint say."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import channels as code_channels
import layout
from conftest import make_image
from data_factories import BREAST_NAMES, npz_with_names, prepare_with_names
from errors import DataError
from medimg import prepare_data
from medimg import data_folders

NAMES = BREAST_NAMES


@pytest.mark.parametrize("name, folder", [
    ("normal", "normal"),
    ("normal, benign", "normal_benign"),
    ("Pleural Effusion", "Pleural_Effusion"),
    ("choroidal neovascularization (CNV)", "choroidal_neovascularization_CNV"),
    ("immature granulocytes (myelocytes, metamyelocytes and promyelocytes)",
     "immature_granulocytes_myelocytes_metamyelocytes_and_promyelocytes"),
    ("Ödem", "Ödem"),
    ("肺炎", "肺炎"),
    ("a/b\\c", "a_b_c"),
    ("  .hidden  ", "hidden"),
    ("CON", "CON_"),
    ("nul.txt", "nul.txt_"),
    ("grade 3+", "grade_3"),
])
def test_folder_names_are_portable(name, folder):
    assert layout.folder_name(name) == folder
    assert "/" not in folder and "\\" not in folder and not folder.startswith(".")


def test_names_with_nothing_portable_or_too_long_stay_distinct():
    a, b = layout.folder_name("???"), layout.folder_name("!!!")
    assert a.startswith("class-") and b.startswith("class-") and a != b
    long_a, long_b = layout.folder_name("x" * 200 + "a"), layout.folder_name("x" * 200 + "b")
    assert len(long_a) <= layout.FOLDER_NAME_MAX and long_a != long_b


@pytest.mark.parametrize("names, fragment", [
    (["a, b", "a b"], "both map to the folder 'a_b'"),
    (["Normal", "normal"], "both map to the folder"),  # one folder on Windows, macOS and many S3 tools
    (["x_y", "x y"], "both map to the folder 'x_y'"),
])
def test_names_that_collide_as_folders_are_one_clear_error(names, fragment):
    with pytest.raises(layout.LayoutError, match=fragment):
        layout.parse_label_dict(layout.label_dict_json(names))


def write_class_folders(root, folders, n=3, seed=0):
    rng = np.random.default_rng(seed)
    for label, folder in enumerate(folders):
        os.makedirs(root / folder, exist_ok=True)
        for i in range(n):
            make_image(label % 2, rng).save(root / folder / f"{i}.png")


def test_a_channel_may_use_the_names_or_their_folder_forms(tmp_path):
    classes = code_channels.ClassNames(["normal, benign", "Pleural Effusion"], "test label dict")
    write_class_folders(tmp_path / "exact", ["normal, benign", "Pleural Effusion"])
    write_class_folders(tmp_path / "portable", ["normal_benign", "Pleural_Effusion"])
    for folder in ("exact", "portable"):
        paths, labels = code_channels.list_channel(str(tmp_path / folder), classes, "train")
        assert sorted(set(labels)) == [0, 1] and len(paths) == 6


def test_an_unknown_folder_names_the_label_dict_in_use(tmp_path):
    classes = code_channels.ClassNames(NAMES, "the train channel's label_dict.json (/x/label_dict.json)")
    write_class_folders(tmp_path / "train", ["malignant", "normal__benign"])  # an old prepare_data's folder form
    with pytest.raises(DataError) as err:
        code_channels.list_channel(str(tmp_path / "train"), classes, "train")
    assert str(err.value).startswith("class folder 'normal__benign' in train is not in the train channel's "
                                     "label_dict.json (/x/label_dict.json) ['malignant', 'normal, benign']")
    assert "['malignant', 'normal_benign']" in str(err.value)  # the folders it would accept


# ---------------------------------------------------------------- the names travel with the data
# (and through real jobs: tests/system/test_class_name_jobs.py)
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_with_names(tmp_path_factory.mktemp("names"))


def test_label_dicts_that_disagree_are_refused(prepared, tmp_path):
    tmp, _ = prepared
    args = type("Args", (), {"train": str(tmp / "data" / "train"), "val": str(tmp / "data" / "val"), "test": None,
                             "label_dict": None})()
    assert code_channels.resolve_class_names(args) == NAMES
    other = tmp_path / "other.json"
    other.write_text(json.dumps(layout.label_dict_json(["malignant", "benign"])))
    args.label_dict = str(other)
    with pytest.raises(DataError, match=r"the train channel's label_dict.json \(.*\) names \['malignant', 'normal, "
                                        r"benign'\], but this run's classes come from the label dict"):
        code_channels.resolve_class_names(args)
    val = tmp_path / "val"
    shutil.copytree(tmp / "data" / "val", val)
    (val / "label_dict.json").write_text(json.dumps(layout.label_dict_json(["normal, benign", "malignant"])))
    args.label_dict, args.val = None, str(val)
    with pytest.raises(DataError, match="the val channel's label_dict.json"):
        code_channels.resolve_class_names(args)


def class_folder_args(root, *folders, label_dict=None):
    for folder in folders:
        os.makedirs(root / "train" / folder, exist_ok=True)
    return type("Args", (), {"train": str(root / "train"), "val": None, "test": None, "label_dict": label_dict})()


@pytest.mark.parametrize("folders, classes", [
    (("malignant", "benign"), ["benign", "malignant"]),          # sorted, as torchvision's ImageFolder
    (("No tumour", "Glioma", "Meningioma"), ["Glioma", "Meningioma", "No tumour"]),
    (("grade_2", "grade_0", "grade_1"), ["grade_0", "grade_1", "grade_2"]),
])
def test_class_folders_of_its_own_name_the_classes(tmp_path, caplog, folders, classes):
    """No label_dict.json and folders that name none of code/label_dict.json's classes: the data brings its names."""
    names = code_channels.resolve_class_names(class_folder_args(tmp_path, *folders))
    assert list(names) == classes and not names.default and names.sorted_names
    assert names.source.startswith(f"the class folders of the train channel ({tmp_path / 'train'}), sorted")


@pytest.mark.parametrize("folders", [
    ("normal", "pneumonia", "covid"),  # mixes the default's classes with another: an error naming the default
    ("covid",),                        # one folder is not a classification
    ("train", "val"),                  # a data set's root: list_channel explains that
    ("Normal", "covid"),               # 'Normal' is not 'normal', but close enough to be a mistake, not new names
])
def test_otherwise_the_default_label_dict_stays(tmp_path, folders):
    names = code_channels.resolve_class_names(class_folder_args(tmp_path, *folders))
    assert list(names) == ["normal", "pneumonia"] and names.default


def test_folders_match_their_class_ignoring_case(tmp_path):
    """Kaggle's chest X-ray folders are NORMAL/ and PNEUMONIA/: the default's classes, as Windows and macOS see it."""
    args = class_folder_args(tmp_path, "NORMAL", "Pneumonia")
    names = code_channels.resolve_class_names(args)
    assert list(names) == ["normal", "pneumonia"] and names.default
    for folder, label in (("NORMAL", 0), ("Pneumonia", 1)):
        make_image(label, np.random.default_rng(label), 8).save(tmp_path / "train" / folder / "0.png")
    paths, labels = code_channels.list_channel(args.train, names, "train")
    assert [os.path.basename(os.path.dirname(p)) for p in paths] == ["NORMAL", "Pneumonia"] and labels == [0, 1]
    assert data_folders.class_names(str(tmp_path / "train")) == {}  # no label dict: the client shows folders


def test_a_label_dict_still_wins_over_the_folders(tmp_path):
    (tmp_path / "names.json").write_text(json.dumps({"0": "malignant", "1": "benign"}))
    args = class_folder_args(tmp_path, "benign", "malignant", label_dict=str(tmp_path / "names.json"))
    assert list(code_channels.resolve_class_names(args)) == ["malignant", "benign"]


def test_the_client_shows_names_not_folders(prepared):
    tmp, _ = prepared
    counts = data_folders.class_counts(str(tmp / "data"))
    assert counts["train"] == {"malignant": 12, "normal, benign": 12}
    assert {name for _, name in data_folders.sample_images(str(tmp / "data" / "test"))} == set(NAMES)


def test_prepare_data_refuses_names_that_collide(tmp_path):
    npz, _ = npz_with_names(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"0": "a, b", "1": "a b"}))
    code = prepare_data.main(["--npz", str(npz), "--out", str(tmp_path / "o"), "--label-dict",
                              str(tmp_path / "bad.json")])
    assert code == 2 and not os.path.exists(tmp_path / "o")


def test_files_that_are_not_used_are_named(tmp_path, caplog):
    """label_dict.json is the channel's own; an image at the channel's root or a text file in a class folder is not
    used, and the log says so (nothing is silently ignored)."""
    write_class_folders(tmp_path / "train", ["a", "b"])
    (tmp_path / "train" / "label_dict.json").write_text(json.dumps({"0": "a", "1": "b"}))
    Image.new("L", (4, 4)).save(tmp_path / "train" / "stray.png")
    (tmp_path / "train" / "a" / "notes.txt").write_text("reader's notes")
    with caplog.at_level("WARNING", logger="train"):
        paths, _ = code_channels.list_channel(str(tmp_path / "train"), code_channels.ClassNames(["a", "b"], "x"), "train")
    assert len(paths) == 6
    assert ("2 file(s) in the train channel are not images in a class folder and are not used: stray.png, "
            f"a{os.sep}notes.txt") in caplog.text
