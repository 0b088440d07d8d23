"""DICOM files and label CSVs written for the tests with pydicom (needed: requirements.txt installs it): one Part 10
file from an array with the attributes a test needs (photometric interpretation, bits, rescale, window, VOI LUT,
frames and per-frame windows, transfer syntax, patient identifiers), and a labels CSV."""
import csv
import os

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def write_dcm(path, pixels, *, photometric="MONOCHROME2", patient="PAT-0001", bits_stored=16, signed=False,
              slope=None, intercept=None, center=None, width=None, voi_lut=None, frames=None, frame_windows=None,
              syntax=ExplicitVRLittleEndian, pixel_data=None, name="Doe^Jane", accession="ACC-0001", attributes=()):
    """Write one DICOM Part 10 file: ``pixels`` (H, W) grey, (H, W, 3) colour, or (F, H, W) with ``frames``;
    ``attributes``: more elements as (tag, VR, value)."""
    arr = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    if patient is not None:
        ds.PatientID = patient
    ds.PatientName, ds.AccessionNumber = name, accession
    colour = photometric not in ("MONOCHROME1", "MONOCHROME2")
    ds.Rows, ds.Columns = arr.shape[-3:-1] if colour else arr.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    if colour:
        ds.PlanarConfiguration = 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        data = arr.astype(np.uint8)
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
        ds.PixelRepresentation = int(signed)
        data = arr.astype(np.int16 if signed else np.uint16)
    if frames:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = str(slope), str(intercept), "US"
    if center is not None:
        ds.WindowCenter, ds.WindowWidth = str(center), str(width)
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut[1]), voi_lut[0], 8]
        item.add_new("LUTData", "US", list(voi_lut[1]))  # LUTData is US or OW: say which
        ds.VOILUTSequence = [item]
    if frame_windows is not None:  # enhanced multi-frame: a window per frame in the functional groups
        groups = []
        for c, w in frame_windows:
            voi = Dataset()
            voi.WindowCenter, voi.WindowWidth = str(c), str(w)
            group = Dataset()
            group.FrameVOILUTSequence = [voi]
            groups.append(group)
        ds.PerFrameFunctionalGroupsSequence = groups
    for tag, vr, value in attributes:
        ds.add_new(tag, vr, value)
    if pixel_data is None:
        ds.PixelData = data.tobytes()
    else:  # compressed: encapsulated fragments
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([pixel_data])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(str(path), enforce_file_format=True)
    else:  # pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(path), write_like_original=False)
    return str(path)


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def read_rows(out, split):
    with open(os.path.join(out, split, "labels.csv"), encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
