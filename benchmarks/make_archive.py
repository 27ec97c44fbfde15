"""Generate a realistic DICOM archive for the benchmarks.

``python -m benchmarks.make_archive OUT_DIR -n 20000 [--small-images]``

Layout: ``OUT_DIR/PATIENT/STUDY/SERIES/<file>``, half the files named ``IM000123``
(no extension) and half ``<SOPInstanceUID>.dcm``. Each series is CT or MR, written
from one pydicom-built template per modality (realistic headers: patient/study/series
modules, nested code and reference sequences, a Siemens-style private block,
512x512 16-bit pixel data, or 64x64 with ``--small-images``). About half the studies
also hold a radiotherapy series (an RT Structure Set with 24 ROIs of 40 contours each,
and an RT Plan with 6 beams of 40 control points each, leaf positions and all: long
nested sequences, several of undefined length) and an enhanced multi-frame MR series
(shared and per-frame functional groups for 60 frames, undefined lengths, 64x64
frames): about 1.7% of the files (864 of 50,000), most of the header bytes.

Generating is fast because pydicom writes each template once, with fixed-width
placeholder values; every file is the template with those placeholders replaced by
same-length values (UIDs, names, IDs, numbers, dates), so lengths never change.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import time

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

ROOT = "1.2.826.0.1.3680043.8.498."
# Placeholders: same length as the values substituted for them.
UID_WIDTH = 60
PH = {
    "study": "1.2.826.0.1.3680043.8.498.1" + "1" * (UID_WIDTH - 27),
    "series": "1.2.826.0.1.3680043.8.498.2" + "2" * (UID_WIDTH - 27),
    "sop": "1.2.826.0.1.3680043.8.498.3" + "3" * (UID_WIDTH - 27),
    "frame": "1.2.826.0.1.3680043.8.498.4" + "4" * (UID_WIDTH - 27),
    "refsop": "1.2.826.0.1.3680043.8.498.5" + "5" * (UID_WIDTH - 27),
    "name": "PNAMEPLACEHOLDER^GIVENPLACEHOLD",  # 30 chars
    "pid": "PIDPLACEHOLD",  # 12
    "acc": "ACCPLACEHOLD",  # 12
    "inst": "98765432",  # IS, 8 chars
    "pos": "-98765.4321",  # DS, 11 chars
    "date": "19000101",
    "time": "000000.000000",
    "birth": "18000101",
}
LAST_NAMES = ["SMITH", "GARCIA", "MUELLER", "ROSSI", "DUBOIS", "TANAKA", "NOWAK", "SILVA"]
FIRST_NAMES = ["ANNA", "JOHN", "MARIA", "PETER", "LENA", "OMAR", "YUKI", "CARLOS"]


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def template(modality: str, size: int) -> bytes:
    """One file of ``modality`` as bytes, holding the placeholders."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate = PH["date"]
    ds.InstanceCreationTime = PH["time"]
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2" if modality == "CT" else "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = PH["sop"]
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = PH["date"]
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = PH["time"]
    ds.AccessionNumber = PH["acc"]
    ds.Modality = modality
    ds.Manufacturer = "SIEMENS" if modality == "CT" else "GE MEDICAL SYSTEMS"
    ds.InstitutionName = "Hôpital Saint-Éloi"
    ds.InstitutionAddress = "80 Avenue Augustin Fliche, Montpellier"
    ds.ReferringPhysicianName = "DR^WHO"
    ds.StationName = "CT01" if modality == "CT" else "MR03"
    ds.StudyDescription = "CT THORAX W/ CONTRAST" if modality == "CT" else "MRI BRAIN W/O"
    ds.ProcedureCodeSequence = Sequence([_code("71260", "CPT4", ds.StudyDescription)])
    ds.SeriesDescription = "AXIAL 1.25mm" if modality == "CT" else "T1 SAG"
    ds.PerformingPhysicianName = ["ROE^JANE", "DOE^JOHN"]
    ds.OperatorsName = "TECH^A"
    ds.ManufacturerModelName = "SOMATOM Force" if modality == "CT" else "SIGNA Premier"
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = PH["refsop"]
    ref2 = Dataset()
    ref2.ReferencedSOPClassUID = ds.SOPClassUID
    ref2.ReferencedSOPInstanceUID = PH["refsop"]
    ref2.ReferencedFrameNumber = "1"
    ds.ReferencedImageSequence = Sequence([ref, ref2])
    ds.DerivationDescription = ""
    ds.PatientName = PH["name"]
    ds.PatientID = PH["pid"]
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientBirthDate = PH["birth"]
    ds.PatientSex = "F"
    ds.PatientAge = "054Y"
    ds.PatientSize = "1.68"
    ds.PatientWeight = "71.5"
    ds.BodyPartExamined = "CHEST" if modality == "CT" else "HEAD"
    if modality == "CT":
        ds.ScanOptions = "HELICAL MODE"
        ds.SliceThickness = "1.25"
        ds.KVP = "120"
        ds.DataCollectionDiameter = "500.0"
        ds.ReconstructionDiameter = "360.0"
        ds.GantryDetectorTilt = "0.0"
        ds.TableHeight = "152.5"
        ds.RotationDirection = "CW"
        ds.ExposureTime = "500"
        ds.XRayTubeCurrent = "250"
        ds.Exposure = "125"
        ds.FilterType = "BODY FILTER"
        ds.ConvolutionKernel = ["Br40", "3"]
        ds.CTDIvol = 8.31
        ds.CTDIPhantomTypeCodeSequence = Sequence([_code("113691", "DCM", "IEC Body Dosimetry Phantom")])
    else:
        ds.ScanningSequence = ["SE", "IR"]
        ds.SequenceVariant = ["SK", "SP", "MP"]
        ds.MRAcquisitionType = "2D"
        ds.SliceThickness = "5.0"
        ds.RepetitionTime = "2200.0"
        ds.EchoTime = "9.8"
        ds.InversionTime = "860.0"
        ds.MagneticFieldStrength = "3.0"
        ds.EchoTrainLength = "8"
        ds.FlipAngle = "150.0"
        ds.SAR = 1.2345
        ds.dBdt = 0.0
    ds.SoftwareVersions = "VA50A"
    ds.ProtocolName = ds.SeriesDescription
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = PH["study"]
    ds.SeriesInstanceUID = PH["series"]
    ds.StudyID = "1"
    ds.SeriesNumber = "2"
    ds.AcquisitionNumber = "1"
    ds.InstanceNumber = PH["inst"]
    ds.ImagePositionPatient = ["-180.0", "-180.0", PH["pos"]]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = PH["frame"]
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = PH["pos"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.PixelSpacing = ["0.703125", "0.703125"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = ["40", "400"] if modality == "CT" else "600"
    ds.WindowWidth = ["400", "1500"] if modality == "CT" else "1200"
    if modality == "CT":
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
    ds.RequestAttributesSequence = Sequence([Dataset()])
    request = ds.RequestAttributesSequence[0]
    request.RequestedProcedureID = PH["acc"]
    request.ScheduledProcedureStepID = PH["acc"]
    request.ScheduledProtocolCodeSequence = Sequence([
        _code("P1", "99LOCAL", ds.ProtocolName),
        _code("P2", "99LOCAL", "Contrast"),
    ])
    # A private block as scanners write them.
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x08, "CS", "IMAGE NUM 4")
    block.add_new(0x09, "LO", "20240101")
    block.add_new(0x10, "OB", bytes(range(256)) * 12)
    ds.PixelData = random.Random(1).randbytes(size * size * 2)
    ds["PixelData"].VR = "OW"

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = PH["sop"]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = ROOT + "9"
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _patient_study(ds: Dataset, modality: str) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate = PH["date"]
    ds.InstanceCreationTime = PH["time"]
    ds.SOPInstanceUID = PH["sop"]
    ds.StudyDate = ds.SeriesDate = PH["date"]
    ds.StudyTime = ds.SeriesTime = PH["time"]
    ds.AccessionNumber = PH["acc"]
    ds.Modality = modality
    ds.Manufacturer = "Varian Medical Systems" if modality.startswith("RT") else "Philips"
    ds.InstitutionName = "Hôpital Saint-Éloi"
    ds.ReferringPhysicianName = "DR^WHO"
    ds.StudyDescription = "RT PLANNING" if modality.startswith("RT") else "MR PELVIS"
    ds.SeriesDescription = modality
    ds.OperatorsName = "TECH^A"
    ds.PatientName = PH["name"]
    ds.PatientID = PH["pid"]
    ds.PatientBirthDate = PH["birth"]
    ds.PatientSex = "F"
    ds.StudyInstanceUID = PH["study"]
    ds.SeriesInstanceUID = PH["series"]
    ds.StudyID = "1"
    ds.SeriesNumber = "9"
    ds.InstanceNumber = PH["inst"]


def _file_bytes(ds: Dataset, implicit_sequences=()) -> bytes:
    for keyword in implicit_sequences:  # written with undefined lengths, as many TPS do
        ds[keyword].is_undefined_length = True
        for item in ds[keyword].value:
            item.is_undefined_length_sequence_item = True
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = PH["sop"]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = ROOT + "9"
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def rt_struct_template(rois: int = 24, contours: int = 40, points: int = 24) -> bytes:
    ds = Dataset()
    _patient_study(ds, "RTSTRUCT")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.StructureSetLabel = "PELVIS_RS"
    ds.StructureSetDate = PH["date"]
    ds.StructureSetTime = PH["time"]
    frame = Dataset()
    frame.FrameOfReferenceUID = PH["frame"]
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = PH["study"]
    series = Dataset()
    series.SeriesInstanceUID = PH["series"]
    series.ContourImageSequence = Sequence([_image_ref() for _ in range(contours)])
    study.RTReferencedSeriesSequence = Sequence([series])
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    ds.RTROIObservationsSequence = Sequence()
    rng = random.Random(7)
    for number in range(1, rois + 1):
        roi = Dataset()
        roi.ROINumber = str(number)
        roi.ReferencedFrameOfReferenceUID = PH["frame"]
        roi.ROIName = f"ORGAN_{number:02d}"
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        contour_item = Dataset()
        contour_item.ROIDisplayColor = [str(rng.randint(0, 255)) for _ in range(3)]
        contour_item.ReferencedROINumber = str(number)
        contour_item.ContourSequence = Sequence()
        for index in range(contours):
            contour = Dataset()
            contour.ContourImageSequence = Sequence([_image_ref()])
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = str(points)
            contour.ContourData = [
                f"{rng.uniform(-200, 200):.2f}" if axis < 2 else f"{-100 + index * 2.5:.1f}"
                for _ in range(points) for axis in range(3)
            ]
            contour_item.ContourSequence.append(contour)
        ds.ROIContourSequence.append(contour_item)
        observation = Dataset()
        observation.ObservationNumber = str(number)
        observation.ReferencedROINumber = str(number)
        observation.RTROIInterpretedType = "ORGAN"
        observation.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(observation)
    return _file_bytes(ds, implicit_sequences=("ROIContourSequence",))


def _image_ref() -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ref.ReferencedSOPInstanceUID = PH["refsop"]
    return ref


def rt_plan_template(beams: int = 6, control_points: int = 40, leaves: int = 60) -> bytes:
    ds = Dataset()
    _patient_study(ds, "RTPLAN")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.5"
    ds.RTPlanLabel = "PROSTATE_VMAT"
    ds.RTPlanDate = PH["date"]
    ds.RTPlanTime = PH["time"]
    ds.RTPlanGeometry = "PATIENT"
    prescription = Dataset()
    prescription.DoseReferenceNumber = "1"
    prescription.DoseReferenceStructureType = "SITE"
    prescription.DoseReferenceType = "TARGET"
    prescription.TargetPrescriptionDose = "78.0"
    ds.DoseReferenceSequence = Sequence([prescription])
    fraction = Dataset()
    fraction.FractionGroupNumber = "1"
    fraction.NumberOfFractionsPlanned = "39"
    fraction.NumberOfBeams = str(beams)
    fraction.ReferencedBeamSequence = Sequence()
    ds.BeamSequence = Sequence()
    rng = random.Random(11)
    for number in range(1, beams + 1):
        ref = Dataset()
        ref.ReferencedBeamNumber = str(number)
        ref.BeamMeterset = f"{rng.uniform(50, 150):.4f}"
        fraction.ReferencedBeamSequence.append(ref)
        beam = Dataset()
        beam.Manufacturer = "Varian Medical Systems"
        beam.TreatmentMachineName = "TrueBeam1"
        beam.PrimaryDosimeterUnit = "MU"
        beam.SourceAxisDistance = "1000.0"
        device_x, device_y, mlc = Dataset(), Dataset(), Dataset()
        device_x.RTBeamLimitingDeviceType, device_x.NumberOfLeafJawPairs = "ASYMX", "1"
        device_y.RTBeamLimitingDeviceType, device_y.NumberOfLeafJawPairs = "ASYMY", "1"
        mlc.RTBeamLimitingDeviceType, mlc.NumberOfLeafJawPairs = "MLCX", str(leaves)
        mlc.LeafPositionBoundaries = [str(-200 + 400 * i // leaves) for i in range(leaves + 1)]
        beam.BeamLimitingDeviceSequence = Sequence([device_x, device_y, mlc])
        beam.BeamNumber = str(number)
        beam.BeamName = f"ARC{number}"
        beam.BeamType = "DYNAMIC"
        beam.RadiationType = "PHOTON"
        beam.TreatmentDeliveryType = "TREATMENT"
        beam.NumberOfWedges = "0"
        beam.NumberOfCompensators = "0"
        beam.NumberOfBoli = "0"
        beam.NumberOfBlocks = "0"
        beam.FinalCumulativeMetersetWeight = "1.0"
        beam.NumberOfControlPoints = str(control_points)
        beam.ControlPointSequence = Sequence()
        for index in range(control_points):
            point = Dataset()
            point.ControlPointIndex = str(index)
            point.CumulativeMetersetWeight = f"{index / (control_points - 1):.6f}"
            positions = Dataset()
            positions.RTBeamLimitingDeviceType = "MLCX"
            positions.LeafJawPositions = [f"{rng.uniform(-50, 50):.2f}" for _ in range(2 * leaves)]
            point.BeamLimitingDevicePositionSequence = Sequence([positions])
            if index == 0:
                point.NominalBeamEnergy = "6"
                point.GantryAngle = "181.0"
                point.GantryRotationDirection = "CW"
                point.BeamLimitingDeviceAngle = "30.0"
                point.PatientSupportAngle = "0.0"
                point.IsocenterPosition = ["0.0", "-12.5", "30.0"]
                point.SourceToSurfaceDistance = "912.3"
            else:
                point.GantryAngle = f"{(181 + index * 9) % 360:.1f}"
            beam.ControlPointSequence.append(point)
        ds.BeamSequence.append(beam)
    ds.FractionGroupSequence = Sequence([fraction])
    ds.ApprovalStatus = "APPROVED"
    return _file_bytes(ds, implicit_sequences=("BeamSequence",))


def multiframe_template(frames: int = 60, size: int = 64) -> bytes:
    """Enhanced MR: shared and per-frame functional groups, as scanners write them."""
    ds = Dataset()
    _patient_study(ds, "MR")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.ContentDate, ds.ContentTime = PH["date"], PH["time"]
    ds.AcquisitionDateTime = PH["date"] + "120000"
    ds.FrameOfReferenceUID = PH["frame"]
    ds.NumberOfFrames = str(frames)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = ["0.9375", "0.9375"]
    measures.SliceThickness = "3.0"
    measures.SpacingBetweenSlices = "3.3"
    shared.PixelMeasuresSequence = Sequence([measures])
    orientation = Dataset()
    orientation.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    shared.PlaneOrientationSequence = Sequence([orientation])
    timing = Dataset()
    timing.RepetitionTime = 4500.0
    timing.FlipAngle = 90.0
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence()
    for index in range(frames):
        item = Dataset()
        content = Dataset()
        content.FrameAcquisitionNumber = index + 1
        content.FrameReferenceDateTime = PH["date"] + "120000"
        content.StackID = "1"
        content.InStackPositionNumber = index + 1
        content.DimensionIndexValues = [1, index + 1]
        item.FrameContentSequence = Sequence([content])
        position = Dataset()
        position.ImagePositionPatient = ["-120.0", "-120.0", f"{-90 + 3.3 * index:.2f}"]
        item.PlanePositionSequence = Sequence([position])
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = "600", "1200"
        item.FrameVOILUTSequence = Sequence([voi])
        transform = Dataset()
        transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = "0", "1", "US"
        item.PixelValueTransformationSequence = Sequence([transform])
        ds.PerFrameFunctionalGroupsSequence.append(item)
    ds.PixelData = random.Random(2).randbytes(size * size * 2 * frames)
    ds["PixelData"].VR = "OW"
    return _file_bytes(ds, implicit_sequences=("PerFrameFunctionalGroupsSequence",))


def _uid(kind: int, *numbers: int) -> str:
    stem = ROOT + str(kind) + "." + ".".join(str(n) for n in numbers) + "."
    return (stem + "1" + "0" * UID_WIDTH)[:UID_WIDTH]


class Patcher:
    """Replaces every placeholder in a template with same-length values."""

    def __init__(self, data: bytes):
        self.data = data
        self.slots = []  # (offset, key)
        for key, text in PH.items():
            needle = text.encode()
            start = data.find(needle)
            while start != -1:
                self.slots.append((start, key))
                start = data.find(needle, start + 1)
        self.slots.sort()

    def render(self, values: dict[str, str]) -> bytes:
        out = bytearray(self.data)
        for offset, key in self.slots:
            value = values[key].encode()
            width = len(PH[key])
            out[offset:offset + width] = value.ljust(width)[:width]
        return bytes(out)


def generate(out_dir: str, count: int, small: bool = False, seed: int = 0) -> int:
    size = 64 if small else 512
    patchers = {m: Patcher(template(m, size)) for m in ("CT", "MR")}
    patchers["RTSTRUCT"] = Patcher(rt_struct_template())
    patchers["RTPLAN"] = Patcher(rt_plan_template())
    patchers["MF"] = Patcher(multiframe_template())
    rng = random.Random(seed)
    written = 0
    patient = 0
    while written < count:
        patient += 1
        name = f"{rng.choice(LAST_NAMES)}{patient}^{rng.choice(FIRST_NAMES)}"
        birth = f"19{rng.randint(30, 99)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        for study in range(1, rng.randint(1, 3) + 1):
            date = f"20{rng.randint(10, 24)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
            plan = [rng.choice(("CT", "MR")) for _ in range(rng.randint(1, 4))]
            if rng.random() < 0.5:  # RT and multi-frame series first: small archives too
                plan[:0] = ["RTSTRUCT", "RTPLAN", "MF"]
            for series, modality in enumerate(plan, start=1):
                folder = os.path.join(out_dir, f"PAT{patient:06d}", f"ST{study:02d}",
                                      f"SE{series:03d}_{modality}")
                os.makedirs(folder, exist_ok=True)
                instances = rng.randint(20, 120) if modality in ("CT", "MR") else (
                    rng.randint(1, 3)
                )
                for instance in range(1, instances + 1):
                    if written >= count:
                        return written
                    sop = _uid(3, patient, study, series, instance)
                    values = {
                        "study": _uid(1, patient, study),
                        "series": _uid(2, patient, study, series),
                        "sop": sop,
                        "frame": _uid(4, patient, study, series),
                        "refsop": _uid(5, patient, study, series, max(instance - 1, 1)),
                        "name": name,
                        "pid": f"P{patient:011d}",
                        "acc": f"A{patient:05d}{study:02d}{series:04d}",
                        "inst": str(instance),
                        "pos": f"{-200 + instance * 1.25:.2f}",
                        "date": date,
                        "time": f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}"
                                f"{rng.randint(0, 59):02d}.{rng.randint(0, 999999):06d}",
                        "birth": birth,
                    }
                    data = patchers[modality].render(values)
                    filename = (f"IM{instance:06d}" if written % 2 else sop + ".dcm")
                    with open(os.path.join(folder, filename), "wb") as stream:
                        stream.write(data)
                    written += 1
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("-n", "--count", type=int, default=20000)
    parser.add_argument("--small-images", action="store_true",
                        help="64x64 pixels instead of 512x512 (for the 100k memory run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    written = generate(args.out_dir, args.count, args.small_images, args.seed)
    seconds = time.perf_counter() - started
    print(f"wrote {written} files to {args.out_dir} in {seconds:.1f} s")


if __name__ == "__main__":
    main()
