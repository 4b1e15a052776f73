"""The patient and study as the source images carry them, in every result.

A PACS files a result under the patient and study it names, and a reader
compares what the result says about the patient with the images: so every
object radnode writes (SEG, SR, Encapsulated PDF, SC) carries the source's
Patient module (PS3.3 C.7.1.1) and Patient Study module (C.7.2.2) values —
age, sex, size, weight and the rest — exactly as the source has them, and
nothing the source lacks. dcentvfy (dicom3tools) then finds the patient and
study entities consistent across sources and results.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

#: Patient module (C.7.1.1) and Patient Study module (C.7.2.2) attributes copied verbatim.
PATIENT_ATTRIBUTES: tuple[str, ...] = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex",
    "OtherPatientIDsSequence", "EthnicGroup", "PatientComments", "PatientSpeciesDescription",
    "PatientIdentityRemoved", "DeidentificationMethod",
    "PatientAge", "PatientSize", "PatientWeight", "Occupation", "AdditionalPatientHistory", "PregnancyStatus",
    "SmokingStatus", "PatientSexNeutered",
)
#: General Study module attributes a result must agree on with its sources.
STUDY_ATTRIBUTES: tuple[str, ...] = (
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "StudyDescription",
)


def apply_patient_module(target: Dataset, source: Dataset) -> Dataset:
    """Copy the patient, patient-study and study attributes of *source* into *target*.

    An attribute the source has is copied (even when empty, since an empty
    type 2 value means "unknown" there too); one it lacks is left as the
    builder wrote it. Returns *target*.
    """
    if not isinstance(target, Dataset) or not isinstance(source, Dataset):
        raise TypeError("target, source: expected pydicom Datasets")
    for keyword in PATIENT_ATTRIBUTES + STUDY_ATTRIBUTES:
        if keyword in source:
            target[keyword] = source[keyword]  # the element (VR and value) as the source has it
    return target
