"""prepare_data.py --dicom (medimg.dicom, dicom_pixels, dicom_labels): DICOM files written with pydicom
(tests/support/dicom_files.py), and pydicom's bundled samples.

The pixel checks compare with the DICOM standard's formulas computed here by hand (PS3.3 C.11.1 rescale,
C.11.2.1.2.1 LINEAR window, C.7.6.3.1.2 MONOCHROME1); an output value v for an exact value y * top (y in 0..1) must
satisfy |v - y * top| <= 0.5, i.e. be y * top rounded.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom", reason="prepare_data --dicom needs pydicom (requirements.txt)")
from pydicom.uid import UID, JPEG2000Lossless  # noqa: E402

from conftest import SCRIPTS  # noqa: E402
from dicom_files import read_rows, write_csv, write_dcm  # noqa: E402
from medimg import dicom_pixels, prepare_data  # noqa: E402

RAMP = np.arange(256, dtype=np.uint16).reshape(16, 16)  # every stored value 0..255 once
EPS = 1e-6
MPEG2 = UID("1.2.840.10008.1.2.4.100")  # MPEG2 Main Profile / Main Level: no pydicom has a decoder for it


# ==================================================================================================
# Converting and reading the output (DICOM files and CSVs are written by tests/support/dicom_files.py)
# ==================================================================================================


def convert(capsys, root, csv_path, *extra, out=None):
    """prepare_data.main in this process: (exit code, stdout, stderr, OUT)."""
    out = str(out or root / "out")
    code = prepare_data.main(["--dicom", str(root / "dcm"), "--labels", str(csv_path), "--out", out, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err, out


def png(out, split, index):
    return np.asarray(Image.open(os.path.join(out, split, "images", f"{index}.png")))


def linear_window(x, center, width):
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR) with output range 0..1, by hand."""
    x = np.asarray(x, dtype=np.float64)
    c, w = center - 0.5, width - 1
    return np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 1.0, (x - c) / w + 0.5))


def assert_rounded(out, exact, top):
    """``out`` is ``exact`` (0..1) * top rounded to the nearest integer (either way on a tie)."""
    diff = np.abs(np.asarray(out, dtype=np.float64) - np.asarray(exact) * top)
    assert diff.max() <= 0.5 + EPS, f"largest difference {diff.max()}"


def one_line_error(code, err, out):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prepare_data: error: "), err
    assert not os.path.exists(out), "nothing may be written on an error"
    return lines[0]


def single(tmp_path, files, header=("file", "label", "split")):
    """A CSV listing ``files`` (relative names) with label 'a' in train."""
    return write_csv(tmp_path / "labels.csv", list(header), [[f, "a", "train"] for f in files])


# ==================================================================================================
# Pixels
# ==================================================================================================
def test_monochrome1_is_the_inverse_of_monochrome2_so_dense_is_bright_in_both(tmp_path, capsys):
    write_dcm(tmp_path / "dcm" / "m2.dcm", RAMP, photometric="MONOCHROME2", center=128, width=256)
    write_dcm(tmp_path / "dcm" / "m1.dcm", RAMP, photometric="MONOCHROME1", center=128, width=256)
    code, _, err, out = convert(capsys, tmp_path, single(tmp_path, ["m2.dcm", "m1.dcm"]))
    assert code == 0, err
    m2, m1 = png(out, "train", 0), png(out, "train", 1)
    assert m2.dtype == m1.dtype == np.uint8 and m2.shape == (16, 16)
    assert_rounded(m2, linear_window(RAMP, 128, 256), 255)  # MONOCHROME2: higher stored value is brighter
    assert m2[0, 0] == 0 and m2[-1, -1] == 255
    np.testing.assert_array_equal(m1, 255 - m2)  # MONOCHROME1: the same values, minimum shown white


def test_rescale_slope_and_intercept_come_before_the_window(tmp_path, capsys):
    """Stored s, slope 2, intercept -50: the window (center 100.5, width 101, in rescaled units) sees 2s - 50."""
    write_dcm(tmp_path / "dcm" / "rescaled.dcm", RAMP, slope=2, intercept=-50, center=100.5, width=101)
    write_dcm(tmp_path / "dcm" / "plain.dcm", RAMP, center=100.5, width=101)
    code, _, err, out = convert(capsys, tmp_path, single(tmp_path, ["rescaled.dcm", "plain.dcm"]))
    assert code == 0, err
    rescaled, plain = png(out, "train", 0).ravel(), png(out, "train", 1).ravel()
    # by hand: x = 2s - 50; y = (x - 100) / 100 + 0.5 between 50 < x <= 150
    assert rescaled[50] == 0 and rescaled[60] == 51 and rescaled[80] == 153 and rescaled[100] == 255
    assert plain[50] == 0 and plain[80] == 76 and plain[100] == 128 and plain[150] == 255
    assert_rounded(rescaled, linear_window(2.0 * RAMP.ravel() - 50, 100.5, 101), 255)
    assert_rounded(plain, linear_window(RAMP.ravel(), 100.5, 101), 255)


def test_window_option_overrides_the_files_window_and_voi_lut(tmp_path, capsys):
    write_dcm(tmp_path / "dcm" / "w.dcm", RAMP, center=100.5, width=101)
    write_dcm(tmp_path / "dcm" / "lut.dcm", RAMP, voi_lut=(100, [0, 60, 120, 240]), center=100.5, width=101)
    csv_path = single(tmp_path, ["w.dcm", "lut.dcm"])
    code, _, err, out = convert(capsys, tmp_path, csv_path)
    assert code == 0, err
    own, lut = png(out, "train", 0).ravel(), png(out, "train", 1).ravel()
    assert_rounded(own, linear_window(RAMP.ravel(), 100.5, 101), 255)
    # the VOI LUT wins over the window (PS3.3 C.11.2): below 100 its first entry, 100..103 its entries, then its
    # last, scaled over its entries' range 0..240
    expected = np.array([0, 60, 120, 240])[np.clip(RAMP.ravel().astype(int) - 100, 0, 3)] / 240
    assert_rounded(lut, expected, 255)
    code, _, err, out = convert(capsys, tmp_path, csv_path, "--window", "200.5,101", out=tmp_path / "out2")
    assert code == 0, err
    for index in (0, 1):  # both files: the option's LINEAR window instead of their own
        forced = png(out, "train", index).ravel()
        assert_rounded(forced, linear_window(RAMP.ravel(), 200.5, 101), 255)
        assert forced[150] == 0 and forced[200] == 128 and forced[230] == 204 and forced[250] == 255


def test_a_negative_window_centre_is_a_value_not_an_option(tmp_path, capsys):
    """The lung window is -600,1500 (HU): argparse alone would read '-600,1500' as an option."""
    rescaled = (RAMP.astype(np.int32) * 10).astype(np.uint16)  # 0..2550 stored, -1024 + 10 x stored in HU
    write_dcm(tmp_path / "dcm" / "ct.dcm", rescaled, slope=1, intercept=-1024)
    code, _, err, out = convert(capsys, tmp_path, single(tmp_path, ["ct.dcm"]), "--window", "-600,1500")
    assert code == 0, err
    hu = rescaled.ravel().astype(float) - 1024
    assert_rounded(png(out, "train", 0).ravel(), linear_window(hu, -600, 1500), 255)


def test_a_held_out_split_without_a_class_is_a_warning(tmp_path, capsys):
    rows = []
    for i, (label, split) in enumerate([("a", "train"), ("b", "train"), ("a", "val"), ("a", "test"), ("b", "test")]):
        write_dcm(tmp_path / "dcm" / f"{i}.dcm", RAMP, patient=f"PAT-{i}")
        rows.append([f"{i}.dcm", label, split])
    code, out_text, err, _ = convert(capsys, tmp_path, write_csv(tmp_path / "l.csv", ["file", "label", "split"], rows))
    assert code == 0, err
    assert "val: 1 images {'a': 1, 'b': 0}; 1 patient\n" in out_text
    assert "the val split has no images of ['b']: its figures cannot measure them" in err
    assert "the test split has no" not in err


def test_without_a_window_the_image_range_is_scaled_min_to_max(tmp_path, capsys):
    stored = (np.arange(256).reshape(16, 16) * 3 + 100).astype(np.uint16)  # 100..865, CT-like with an intercept
    write_dcm(tmp_path / "dcm" / "ct.dcm", stored, slope=1, intercept=-1024, bits_stored=12)
    code, _, err, out = convert(capsys, tmp_path, single(tmp_path, ["ct.dcm"]))
    assert code == 0, err
    assert_rounded(png(out, "train", 0), (stored - 100.0) / 765.0, 255)


PADDING_VALUE, PADDING_LIMIT = 0x00280120, 0x00280121  # Pixel Padding Value, Pixel Padding Range Limit


def padded(real, padding, rows=4):
    """A 16x16 picture: ``real`` stored values in the top rows, the bottom ``rows`` rows padding values (cycled)."""
    arr = np.resize(np.asarray(real), (16, 16)).astype(np.int64)
    arr[-rows:] = np.resize(np.asarray(padding), (rows, 16))
    return arr


# (stored real pixels, padding pixels, signed, bits stored, Pixel Padding Value (VR, value), Range Limit or None)
PADDING_CASES = {
    "unsigned, below the picture": (np.arange(100, 292) * 3, 0, False, 12, ("US", 0), None),
    "unsigned, above the picture": (np.arange(100, 292), 4095, False, 12, ("US", 4095), None),
    "signed (SS)": (np.arange(-200, -8) * 4, -2000, True, 16, ("SS", -2000), None),
    "signed, written as a US bit pattern": (np.arange(-200, -8) * 4, -2000, True, 16, ("US", 63536), None),
    "a range of padding values": (np.arange(0, 192) * 5, [-2000, -1800, -1500, -1999], True, 16, ("SS", -2000),
                                  ("SS", -1500)),
    "a range given from its top": (np.arange(0, 192) * 5, [-2000, -1500, -1700], True, 16, ("SS", -1500),
                                   ("SS", -2000)),
}


@pytest.mark.parametrize("case", sorted(PADDING_CASES))
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_padding_does_not_change_the_picture_of_the_real_pixels(tmp_path, case, photometric):
    """Without a window the picture is scaled over its real pixels' min..max: padding (a CT's outside-the-scan
    value) is left out, so the real pixels look as they would with no padding at all, and padding is black (also
    after MONOCHROME1's inversion). Values are stored values, before the rescale; signed ones as the pixels are."""
    real, padding, signed, bits, (vr, value), limit = PADDING_CASES[case]
    stored = padded(real, padding)
    attributes = [(PADDING_VALUE, vr, value)] + ([(PADDING_LIMIT, *limit)] if limit else [])
    path = write_dcm(tmp_path / "p.dcm", stored, photometric=photometric, signed=signed, bits_stored=bits,
                     slope=1, intercept=-1024, attributes=attributes)
    out = dicom_pixels.to_pixels(dicom_pixels.read_dataset(path))
    lo, hi = float(np.min(real)), float(np.max(real))
    exact = (stored[:-4] - lo) / (hi - lo)  # the real pixels by their own range, by hand
    assert_rounded(out[:-4], exact if photometric == "MONOCHROME2" else 1 - exact, 255)
    assert (out[-4:] == 0).all(), out[-4:]
    without = write_dcm(tmp_path / "plain.dcm", stored[:-4], photometric=photometric, signed=signed,
                        bits_stored=bits, slope=1, intercept=-1024)
    np.testing.assert_array_equal(out[:-4], dicom_pixels.to_pixels(dicom_pixels.read_dataset(without)))


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_padding_is_black_with_a_window_too(tmp_path, photometric):
    """A window fixes the scale, so padding cannot change it; a padding value the window shows white (above it, or
    below it in MONOCHROME1) is still black."""
    stored = padded(np.arange(0, 192) * 4, 4000)
    path = write_dcm(tmp_path / "w.dcm", stored, photometric=photometric, center=400, width=800,
                     attributes=[(PADDING_VALUE, "US", 4000)])
    out = dicom_pixels.to_pixels(dicom_pixels.read_dataset(path))
    exact = linear_window(stored[:-4], 400, 800)
    assert_rounded(out[:-4], exact if photometric == "MONOCHROME2" else 1 - exact, 255)
    assert (out[-4:] == 0).all()


def test_a_file_of_nothing_but_padding_is_a_bad_file_and_unused_padding_changes_nothing(tmp_path):
    path = write_dcm(tmp_path / "all.dcm", np.full((8, 8), 7), attributes=[(PADDING_VALUE, "US", 7)])
    with pytest.raises(dicom_pixels.DicomFileError, match=r"every pixel is Pixel Padding Value \(0028,0120\)"):
        dicom_pixels.to_pixels(dicom_pixels.read_dataset(path))
    unused = write_dcm(tmp_path / "unused.dcm", RAMP, attributes=[(PADDING_VALUE, "US", 9999)])
    ramp = write_dcm(tmp_path / "ramp.dcm", RAMP)
    np.testing.assert_array_equal(dicom_pixels.to_pixels(dicom_pixels.read_dataset(unused)),
                                  dicom_pixels.to_pixels(dicom_pixels.read_dataset(ramp)))


def test_16_bit_output_is_a_uint16_png_with_the_same_picture(tmp_path, capsys):
    write_dcm(tmp_path / "dcm" / "a.dcm", RAMP * 16, center=2048, width=4096, bits_stored=12)
    write_dcm(tmp_path / "dcm" / "b.dcm", RAMP * 16, photometric="MONOCHROME1", center=2048, width=4096,
              bits_stored=12)
    csv_path = single(tmp_path, ["a.dcm", "b.dcm"])
    code8, _, err8, out8 = convert(capsys, tmp_path, csv_path)
    code16, _, err16, out16 = convert(capsys, tmp_path, csv_path, "--bits", "16", out=tmp_path / "out16")
    assert code8 == code16 == 0, err8 + err16
    image = Image.open(os.path.join(out16, "train", "images", "0.png"))
    assert image.mode in ("I;16", "I") and np.asarray(image).dtype == np.uint16  # Pillow reads 16-bit grey as I;16
    wide, narrow = png(out16, "train", 0), png(out8, "train", 0)
    assert wide.dtype == np.uint16 and narrow.dtype == np.uint8
    exact = linear_window(RAMP * 16.0, 2048, 4096)
    assert_rounded(wide, exact, 65535)
    assert_rounded(narrow, exact, 255)
    assert np.abs(wide / 257.0 - narrow).max() <= 1
    assert len(np.unique(wide)) == 256 and wide.max() > 60000  # the full 16-bit range, not 8 bits shifted
    np.testing.assert_array_equal(png(out16, "train", 1), 65535 - wide)  # MONOCHROME1 in 16 bits too


def test_colour_stays_colour_and_ybr_becomes_rgb(tmp_path, capsys):
    try:
        from pydicom.pixels import convert_color_space
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import convert_color_space

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    write_dcm(tmp_path / "dcm" / "rgb.dcm", rgb, photometric="RGB")
    write_dcm(tmp_path / "dcm" / "ybr.dcm", convert_color_space(rgb, "RGB", "YBR_FULL"), photometric="YBR_FULL")
    code, out_text, err, out = convert(capsys, tmp_path, single(tmp_path, ["rgb.dcm", "ybr.dcm"]), "--bits", "16")
    assert code == 0, err
    np.testing.assert_array_equal(png(out, "train", 0), rgb)
    converted = png(out, "train", 1)
    assert converted.shape == (16, 16, 3) and np.abs(converted.astype(int) - rgb).max() <= 2  # YCbCr round trip
    assert "2 colour images were written with 8 bits per channel" in err  # --bits 16 is for greyscale


def test_multi_frame_file_refused_in_one_line_then_taken_with_frame(tmp_path, capsys):
    frames = np.stack([RAMP, RAMP[::-1], RAMP.T])
    write_dcm(tmp_path / "dcm" / "cine" / "multi.dcm", frames, frames=3,
              frame_windows=[(128, 256), (64.5, 64), (200.5, 101)])  # enhanced: a window per frame
    write_dcm(tmp_path / "dcm" / "single.dcm", RAMP, center=128, width=256)
    csv_path = single(tmp_path, ["cine/multi.dcm", "single.dcm"])
    code, _, err, out = convert(capsys, tmp_path, csv_path)
    line = one_line_error(code, err, out)
    assert "the file on line 2 is a multi-frame file (3 frames)" in line and "cine" not in line and "--frame N" in line
    code, _, err, out = convert(capsys, tmp_path, csv_path, "--frame", "1")
    assert code == 0, err
    assert_rounded(png(out, "train", 0), linear_window(RAMP[::-1], 64.5, 64), 255)  # frame 1 with its own window
    assert_rounded(png(out, "train", 1), linear_window(RAMP, 128, 256), 255)  # a single-frame file ignores --frame
    code, _, err, out = convert(capsys, tmp_path, csv_path, "--frame", "3", out=tmp_path / "out3")
    assert "the file on line 2 has 3 frames, so --frame 3 is out of range (0..2)" in one_line_error(code, err, out)


def write_good(tmp_path, n, split_every=4):
    rows = []
    for i in range(n):
        write_dcm(tmp_path / "dcm" / "ok" / f"{i}.dcm", RAMP + i, patient=f"P{i:03d}", center=128, width=256)
        rows.append([f"ok/{i}.dcm", ["no", "yes"][i % 2], "val" if i % split_every == 0 else "train"])
    return rows


def write_bad(tmp_path):
    (tmp_path / "dcm" / "junk").mkdir(parents=True)
    (tmp_path / "dcm" / "junk" / "notes.dcm").write_text("this is a text file, not DICOM\n")
    write_dcm(tmp_path / "dcm" / "junk" / "j2k.dcm", RAMP, syntax=JPEG2000Lossless, pixel_data=b"\x00garbage" * 16)
    write_dcm(tmp_path / "dcm" / "junk" / "mpeg2.dcm", RAMP, syntax=MPEG2, pixel_data=b"\x00\x00\x01\xb3" * 16)
    return [["junk/notes.dcm", "no", "train"], ["junk/j2k.dcm", "yes", "train"], ["gone.dcm", "no", "train"],
            ["junk/mpeg2.dcm", "yes", "train"]]


def test_unreadable_and_undecodable_files_are_counted_and_named_below_the_threshold(tmp_path, capsys):
    rows = write_good(tmp_path, 36) + write_bad(tmp_path)  # 4 bad of 40: 10%, the most allowed
    code, stdout, err, out = convert(capsys, tmp_path, write_csv(tmp_path / "l.csv", ["file", "label", "split"], rows))
    assert code == 0, err
    warning = next(line for line in err.splitlines() if "skipped" in line)
    assert warning.startswith("prepare_data: warning: skipped 4 of the 40 files") and "at most 10%" in warning
    # named by their line in the CSV (36 good rows, then notes, j2k, gone, mpeg2), never by their path
    assert "the file on line 38 (not a" in warning and "the file on line 40 (missing)" in warning
    assert "junk" not in warning and "gone.dcm" not in warning
    # a decoder that fails on the data (Pillow's OpenJPEG, where present) or none at all (MPEG2)
    assert "the file on line 39 (compressed as 'JPEG 2000 Image Compression (Lossless Only)'" in warning
    assert "the file on line 41 (compressed as 'MPEG2 Main Profile / Main Level' and no installed decoder" in warning
    assert "converted 36 of the 40 DICOM files" in stdout and "(4 skipped)" in stdout
    n_images = sum(len(os.listdir(os.path.join(out, s, "images"))) for s in ("train", "val"))
    assert n_images == 36 and len(read_rows(out, "val")) == 9


def test_too_many_bad_files_fail_in_one_line_naming_them(tmp_path, capsys):
    rows = write_good(tmp_path, 8) + write_bad(tmp_path)[:2]  # 2 bad of 10 = 20%
    code, _, err, out = convert(capsys, tmp_path, write_csv(tmp_path / "l.csv", ["file", "label", "split"], rows))
    line = one_line_error(code, err, out)
    assert "2 of the 10 files" in line and "(more than 10%)" in line
    assert "the file on line 10" in line and "the file on line 11" in line and "junk" not in line
    code, _, err, out = convert(capsys, tmp_path, write_csv(tmp_path / "b.csv", ["file", "label", "split"],
                                                            write_bad(tmp_path / "x")[2:3]))
    assert "none of the 1 files" in one_line_error(code, err, out) and "the file on line 2 (missing)" in err


# ==================================================================================================
# Patients, privacy and splits
# ==================================================================================================
PIDS = [f"PID-7F3A-{i:04d}" for i in range(12)]


def write_patients(tmp_path, per_patient=3, unnamed=2):
    """12 patients (classes by patient), their IDs in the file names too, plus ``unnamed`` files without one and
    one unreadable file in a patient's folder."""
    rows = []
    for p, pid in enumerate(PIDS):
        for k in range(per_patient):
            rel = f"{pid}/{pid}_img{k}.dcm"
            write_dcm(tmp_path / "dcm" / pid / f"{pid}_img{k}.dcm", RAMP + 3 * k + p, patient=pid,
                      name=f"Smith^Pat{p:04d}", accession=f"ACCN-55{p:04d}", center=128, width=256)
            rows.append([rel, ["normal", "pneumonia"][p % 2]])
    for k in range(unnamed):
        write_dcm(tmp_path / "dcm" / f"anon{k}.dcm", RAMP, patient=None, center=128, width=256)
        rows.append([f"anon{k}.dcm", "normal"])
    (tmp_path / "dcm" / PIDS[0] / "broken.dcm").write_bytes(b"DICM" * 10)  # a bad file, named after its patient
    rows.append([f"{PIDS[0]}/broken.dcm", "normal"])
    return write_csv(tmp_path / "labels.csv", ["file", "label"], rows)


def test_patient_split_keeps_each_patient_in_one_split_and_no_identifier_leaves(tmp_path, capsys):
    csv_path = write_patients(tmp_path)
    code, stdout, err, out = convert(capsys, tmp_path, csv_path, "--val-fraction", "0.2")
    assert code == 0, err
    hashes = {}
    for split in ("train", "val", "test"):
        rows = read_rows(out, split)
        assert all(re.fullmatch(r"[0-9a-f]{16}", r["patient_id"]) for r in rows)
        assert all(re.fullmatch(r"images/\d+\.png", r["image"]) for r in rows)
        assert sorted(os.listdir(os.path.join(out, split, "images"))) == sorted(f"{i}.png" for i in range(len(rows)))
        hashes[split] = {r["patient_id"] for r in rows}
        assert {r["label"] for r in rows} <= {"normal", "pneumonia"}
        assert f"{split}: {len(rows)} images" in stdout and f"; {len(hashes[split])} patients" in stdout
    assert not (hashes["train"] & hashes["val"] or hashes["train"] & hashes["test"] or hashes["val"] & hashes["test"])
    assert sum(len(h) for h in hashes.values()) == 14  # 12 patients + 2 files without a PatientID, each its own
    assert hashes["val"] and hashes["test"]
    assert "2 files have no PatientID: each is taken as a patient of its own" in err
    assert "split by DICOM PatientID" in stdout
    # the bad file (under a folder named after its patient) is named by its CSV line, so no identifier leaves
    assert "skipped 1 of the 39 files" in err and "the file on line 40 (not a" in err
    secrets = PIDS + [f"Smith^Pat{p:04d}" for p in range(12)] + [f"ACCN-55{p:04d}" for p in range(12)] + ["Smith"]
    for folder, _, names in os.walk(out):  # every written byte, names included
        for name in names:
            data = open(os.path.join(folder, name), "rb").read()
            text = os.path.relpath(os.path.join(folder, name), out).encode() + data
            leaked = [s for s in secrets + ["7F3A", "_img"] if s.encode() in text]
            assert not leaked, f"{name} holds {leaked}"
    assert not [s for s in secrets + ["7F3A"] if s in stdout + err]
    # the hash is salted per conversion: another run gives other hashes for the same patients
    code, _, err, again = convert(capsys, tmp_path, csv_path, "--val-fraction", "0.2", out=tmp_path / "again")
    assert code == 0, err
    other = {r["patient_id"] for s in ("train", "val", "test") for r in read_rows(again, s)}
    assert not other & set().union(*hashes.values())


def test_split_column_is_honoured_with_its_aliases_and_names_are_sorted(tmp_path, capsys):
    rows = []
    for i, split in enumerate(["training", "Validation", "testing", "train", "valid", "test", "TRAIN", "train"]):
        write_dcm(tmp_path / "dcm" / f"{i}.dcm", RAMP + i, patient="SAME-PATIENT-X", center=128, width=256)
        rows.append([f"{i}.dcm", ["pleural effusion", "cardiomegaly"][i % 2], split])
    code, stdout, err, out = convert(capsys, tmp_path, write_csv(tmp_path / "l.csv", ["file", "label", "split"], rows))
    assert code == 0, err
    assert {s: len(read_rows(out, s)) for s in ("train", "val", "test")} == {"train": 4, "val": 2, "test": 2}
    assert [r["label"] for r in read_rows(out, "val")] == ["cardiomegaly", "pleural effusion"]
    assert_rounded(png(out, "test", 1), linear_window(RAMP + 5, 128, 256), 255)  # row 5, the second test row
    names = {"0": "cardiomegaly", "1": "pleural effusion"}
    for path in ("label_dict.json", "train/label_dict.json"):
        assert json.loads(open(os.path.join(out, path)).read()) == names
    assert "1 patient(s) have images in more than one split" in err  # one patient everywhere: said, not refused
    assert "train: 4 images {'cardiomegaly': 2, 'pleural effusion': 2}; 1 patient\n" in stdout


def test_hold_out_test_takes_whole_patients_from_train_when_the_split_column_has_no_test(tmp_path, capsys):
    rows = []
    for i in range(16):  # 8 patients, 2 images each, 12 images in train
        write_dcm(tmp_path / "dcm" / f"{i}.dcm", RAMP, patient=f"HOLD-{i // 2}", center=128, width=256)
        rows.append([f"{i}.dcm", ["a", "b"][(i // 2) % 2], "val" if i >= 12 else "train"])
    csv_path = write_csv(tmp_path / "l.csv", ["file", "label", "split"], rows)
    code, stdout, err, out = convert(capsys, tmp_path, csv_path, "--hold-out-test", "0.34")
    assert code == 0, err
    train, test = ({r["patient_id"] for r in read_rows(out, s)} for s in ("train", "test"))
    assert len(read_rows(out, "test")) == 4 and len(test) == 2 and not train & test
    assert "held out 4 of 12 training images as test" in stdout and "by patient" in stdout


def test_code_never_imports_pydicom():
    """pydicom is a client-side dependency: the training and inference code in code/ must run without it."""
    import ast

    from conftest import CODE

    for name in sorted(os.listdir(CODE)):
        if name.endswith(".py"):
            with open(os.path.join(CODE, name), encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
            modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            assert not {m for m in modules if m.split(".")[0] == "pydicom"}, name


def test_label_dict_orders_single_label_classes_and_must_name_every_label(tmp_path, capsys):
    rows = []
    for i in range(4):
        write_dcm(tmp_path / "dcm" / f"{i}.dcm", RAMP, center=128, width=256)
        rows.append([f"{i}.dcm", ["benign", "malignant"][i % 2], "train"])
    csv_path = write_csv(tmp_path / "l.csv", ["file", "label", "split"], rows)
    (tmp_path / "names.json").write_text(json.dumps({"0": "malignant", "1": "benign", "2": "other"}))
    code, _, err, out = convert(capsys, tmp_path, csv_path, "--label-dict", str(tmp_path / "names.json"))
    assert code == 0, err
    assert json.loads(open(os.path.join(out, "label_dict.json")).read()) == {"0": "malignant", "1": "benign",
                                                                               "2": "other"}
    (tmp_path / "short.json").write_text(json.dumps({"0": "malignant"}))
    code, _, err, out = convert(capsys, tmp_path, csv_path, "--label-dict", str(tmp_path / "short.json"),
                                out=tmp_path / "o2")
    assert "the label 'benign' that --label-dict ['malignant'] does not name" in one_line_error(code, err, out)


def test_finding_columns_make_a_multi_label_manifest(tmp_path, capsys):
    values = [(1, 0), (0, 1), (1, 1), (0, 0), (1, 0), (0, 1)]
    rows = []
    for i, (a, b) in enumerate(values):
        write_dcm(tmp_path / "dcm" / f"{i}.dcm", RAMP, center=128, width=256)
        rows.append([f"{i}.dcm", a, b, "train" if i < 4 else "val"])
    csv_path = write_csv(tmp_path / "l.csv", ["file", "Effusion", "Nodule", "split"], rows)
    code, stdout, err, out = convert(capsys, tmp_path, csv_path)
    assert code == 0, err
    with open(os.path.join(out, "train", "labels.csv")) as fh:
        assert fh.readline().strip() == "image,Effusion,Nodule,patient_id"
    assert [(r["Effusion"], r["Nodule"]) for r in read_rows(out, "train")] == [("1", "0"), ("0", "1"), ("1", "1"),
                                                                               ("0", "0")]
    assert json.loads(open(os.path.join(out, "label_dict.json")).read()) == {"0": "Effusion", "1": "Nodule"}
    assert "train: 4 images; positives per finding {'Effusion': 2, 'Nodule': 2}" in stdout
    # --label-dict may order the findings (the columns follow it) but must name the same ones
    (tmp_path / "f.json").write_text(json.dumps({"0": "Nodule", "1": "Effusion"}))
    code, _, err, out2 = convert(capsys, tmp_path, csv_path, "--label-dict", str(tmp_path / "f.json"),
                                 out=tmp_path / "o2")
    assert code == 0, err
    assert [(r["Nodule"], r["Effusion"]) for r in read_rows(out2, "val")] == [("0", "1"), ("1", "0")]
    with open(os.path.join(out2, "val", "labels.csv")) as fh:
        assert fh.readline().strip() == "image,Nodule,Effusion,patient_id"
    (tmp_path / "g.json").write_text(json.dumps({"0": "Nodule", "1": "Mass"}))
    code, _, err, out3 = convert(capsys, tmp_path, csv_path, "--label-dict", str(tmp_path / "g.json"),
                                 out=tmp_path / "o3")
    assert "finding columns ['Effusion', 'Nodule'], but --label-dict names ['Nodule', 'Mass']" in \
        one_line_error(code, err, out3)


@pytest.mark.parametrize("header, row, message", [
    (["path", "label"], ["a.dcm", "x"], "must start with a header row with a 'file' column"),
    (["file", "label", "patient_id"], ["a.dcm", "x", "p1"], "patients come from each file's DICOM PatientID"),
    (["file", "label", "split"], ["a.dcm", "x", "holdout"], "line 2: split 'holdout' is not one of"),
    (["file", "a", "b"], ["a.dcm", "1", "2"], "line 2: b='2'; finding values must be 0 or 1"),
    (["file", "label", "other"], ["a.dcm", "x", "1"], "has a 'label' column beside other columns"),
    (["file", "label"], ["../a.dcm", "x"], "must be a path relative to the DICOM folder"),
    (["file", "label"], ["sub\\a.dcm", "x"], "must be a path relative to the DICOM folder"),
    (["file", "label"], ["a.dcm", ""], "line 2 has no label"),
])
def test_csv_errors_are_one_line_naming_the_problem(tmp_path, capsys, header, row, message):
    write_dcm(tmp_path / "dcm" / "a.dcm", RAMP)
    code, _, err, out = convert(capsys, tmp_path, write_csv(tmp_path / "l.csv", header, [row]))
    assert message in one_line_error(code, err, out)


def test_other_refusals_leave_out_alone(tmp_path, capsys):
    write_dcm(tmp_path / "dcm" / "a.dcm", RAMP)
    csv_path = write_csv(tmp_path / "l.csv", ["file", "label"], [["a.dcm", "x"], ["a.dcm", "y"]])
    code, _, err, out = convert(capsys, tmp_path, csv_path)
    assert "lines 2 and 3 both list the same file; list each file once" in one_line_error(code, err, out)
    code, _, err, out = convert(capsys, tmp_path, single(tmp_path, ["a.dcm"]), "--window", "40")
    assert "--window '40' must be CENTER,WIDTH" in one_line_error(code, err, out)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    code, _, err, _ = convert(capsys, tmp_path, single(tmp_path, ["a.dcm"]), out=tmp_path / "full")
    assert code == 2 and "is not an empty folder" in err and os.listdir(tmp_path / "full") == ["keep.txt"]
    result = subprocess.run([sys.executable, os.path.join(SCRIPTS, "prepare_data.py"), "--dicom",
                             str(tmp_path / "dcm"), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip() == ("prepare_data: error: --dicom needs --labels CSV "
                                                                "(file, then label or finding columns, optional split)")


# ==================================================================================================
# pydicom's bundled samples, where this pydicom ships them (never downloaded)
# ==================================================================================================
def bundled(name):
    from pydicom.data import get_testdata_file

    try:
        path = get_testdata_file(name, download=False)
    except Exception:  # noqa: BLE001 - pydicom 2.x looks for external data sources through pkg_resources
        path = None
    if not path:
        pytest.skip(f"pydicom {pydicom.__version__} does not bundle {name}")
    return path


def test_bundled_ct_and_mr_convert_as_the_standard_says_and_their_patients_stay_hidden(tmp_path, capsys):
    import shutil

    ct_path, mr_path = bundled("CT_small.dcm"), bundled("MR_small.dcm")
    (tmp_path / "dcm").mkdir()
    shutil.copy(ct_path, tmp_path / "dcm" / "ct.dcm")
    shutil.copy(mr_path, tmp_path / "dcm" / "mr.dcm")
    code, stdout, err, out = convert(capsys, tmp_path, single(tmp_path, ["ct.dcm", "mr.dcm"]))
    assert code == 0, err
    ct, mr = pydicom.dcmread(ct_path), pydicom.dcmread(mr_path)
    hu = ct.pixel_array * float(ct.RescaleSlope) + float(ct.RescaleIntercept)  # no window in CT_small: min..max
    assert_rounded(png(out, "train", 0), (hu - hu.min()) / (hu.max() - hu.min()), 255)
    assert_rounded(png(out, "train", 1), linear_window(mr.pixel_array, float(mr.WindowCenter),
                                                       float(mr.WindowWidth)), 255)
    identifiers = [str(ct.PatientID), str(mr.PatientID), str(ct.PatientName), str(mr.PatientName)]
    for folder, _, names in os.walk(out):
        for name in names:
            data = open(os.path.join(folder, name), "rb").read()
            assert not [i for i in identifiers if i.encode() in data], name
    assert not [i for i in identifiers if i in stdout + err]


def test_bundled_multi_frame_rt_dose_needs_a_frame(tmp_path, capsys):
    import shutil

    path = bundled("rtdose.dcm")
    (tmp_path / "dcm").mkdir()
    shutil.copy(path, tmp_path / "dcm" / "dose.dcm")
    csv_path = single(tmp_path, ["dose.dcm"])
    code, _, err, out = convert(capsys, tmp_path, csv_path)
    assert "is a multi-frame file (15 frames)" in one_line_error(code, err, out)
    code, _, err, out = convert(capsys, tmp_path, csv_path, "--frame", "7")
    assert code == 0, err
    frame = pydicom.dcmread(path).pixel_array[7].astype(np.float64)
    assert_rounded(png(out, "train", 0), (frame - frame.min()) / (frame.max() - frame.min()), 255)


@pytest.mark.parametrize("name", ["SC_rgb_small_odd.dcm", "SC_ybr_full_422_uncompressed.dcm",
                                  "examples_palette.dcm"])
def test_bundled_colour_files_come_out_rgb(name):
    ds = dicom_pixels.read_dataset(bundled(name))
    pixels = dicom_pixels.to_pixels(ds)
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    assert pixels.shape[:2] == (ds.Rows, ds.Columns)
    if name.startswith("SC_ybr"):  # pydicom's sample: the first rows are pure red
        assert np.abs(pixels[0, 0].astype(int) - [255, 0, 0]).max() <= 2
    if name == "SC_rgb_small_odd.dcm":
        np.testing.assert_array_equal(pixels, pydicom.dcmread(bundled(name)).pixel_array)


def test_bundled_jpeg2000_file_decodes_like_its_original_or_is_a_bad_file_without_a_decoder():
    ds = dicom_pixels.read_dataset(bundled("MR_small_jp2klossless.dcm"))
    try:
        pydicom.dcmread(bundled("MR_small_jp2klossless.dcm")).pixel_array
    except Exception:  # noqa: BLE001 - no JPEG 2000 decoder here (Pillow without OpenJPEG, no pylibjpeg, no gdcm)
        with pytest.raises(dicom_pixels.DicomFileError, match="compressed as 'JPEG 2000 Image Compression"):
            dicom_pixels.to_pixels(ds)
    else:  # lossless: the same picture as MR_small.dcm
        original = dicom_pixels.read_dataset(bundled("MR_small.dcm"))
        np.testing.assert_array_equal(dicom_pixels.to_pixels(ds), dicom_pixels.to_pixels(original))


# ==================================================================================================
# End to end: DICOM -> prepare_data -> local_train (the real toolkit) -> the served model
# ==================================================================================================
