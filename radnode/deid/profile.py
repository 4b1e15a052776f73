"""PS3.15 Annex E Basic Application Level Confidentiality Profile, for data
that leaves the node for an external analysis, and its reverse for results.

What the basic profile asks, as applied here (Table E.1-1, the attributes a
radiology object actually carries; every private element is removed):

* identifying attributes are removed (X), emptied (Z) or replaced by a dummy (D);
* UIDs are replaced (U) by ``2.25.<int>`` derived with an HMAC from a node
  secret, so the same original always maps to the same pseudonym (a series
  stays a series) and nobody without the secret can reverse it;
* with ``retain_uids`` / ``retain_dates`` (the Retain UIDs / Retain
  Longitudinal Temporal Information options, E.3.9 / E.3.6) those are kept.

The mapping pseudonym → original is stored locally (``deid_map``), never
sent. ``reidentify`` puts the originals back into a returned object (its
study, series and referenced UIDs, and the patient module), so a SEG or SR
computed outside goes to PACS under the real patient.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Protocol

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy.orm import Session, sessionmaker

from radnode.store.deid_map import DeidMapRow

#: Replaced by a dummy value (D), remembered for re-identification.
DUMMY = {
    "PatientName": "patient_name",
    "PatientID": "patient_id",
    "AccessionNumber": "accession",
    "StudyID": "study_id",
}
#: Emptied (Z), remembered for re-identification.
EMPTY_REMEMBERED = {"PatientBirthDate": "birth_date", "ReferringPhysicianName": "referring_physician", "PatientSex": "sex"}
#: Emptied (Z) when dates are not retained.
DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime", "AcquisitionDateTime")
#: Removed (X).
REMOVE = (
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientAddress", "PatientTelephoneNumbers",
    "PatientMotherBirthName", "MilitaryRank", "BranchOfService", "MedicalRecordLocator", "EthnicGroup", "Occupation",
    "AdditionalPatientHistory", "PatientComments", "PatientBirthTime", "PatientBirthName", "PatientInsurancePlanCodeSequence",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName", "PhysiciansOfRecord",
    "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "OperatorsName", "RequestingPhysician", "RequestAttributesSequence",
    "DeviceSerialNumber", "PatientAge", "PatientSize", "PatientWeight", "ImageComments", "StudyDescription",
    "ReferencedPatientSequence", "ReferencedStudySequence", "IssuerOfPatientID", "CountryOfResidence", "RegionOfResidence",
    "CurrentPatientLocation", "PatientInstitutionResidence", "ResponsiblePerson", "ResponsibleOrganization",
    "RequestedProcedureDescription", "ScheduledProcedureStepDescription", "PerformedProcedureStepDescription",
    "PerformedProcedureStepID", "PerformedLocation",
)
#: UIDs that are instance identity (U); SOP *class* and transfer syntax UIDs are not touched.
UID_KEYWORDS = frozenset({
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "ReferencedSOPInstanceUID",
    "MediaStorageSOPInstanceUID", "SynchronizationFrameOfReferenceUID", "ReferencedFrameOfReferenceUID",
    "DimensionOrganizationUID", "ConcatenationUID", "IrradiationEventUID", "StorageMediaFileSetUID",
    "RelatedFrameOfReferenceUID", "InstanceCreatorUID", "SourceFrameOfReferenceUID",
})


class MappingStore(Protocol):
    def put(self, kind: str, pseudonym: str, original: str) -> None: ...
    def get(self, kind: str, pseudonym: str) -> str | None: ...


class SqlMappingStore:
    """The mapping in the node's own database (never sent anywhere)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def put(self, kind: str, pseudonym: str, original: str) -> None:
        with self.sessions.begin() as s:
            if s.get(DeidMapRow, (kind, pseudonym)) is None:
                s.add(DeidMapRow(kind=kind, pseudonym=pseudonym, original=original, created_at=time.time()))

    def get(self, kind: str, pseudonym: str) -> str | None:
        with self.sessions() as s:
            row = s.get(DeidMapRow, (kind, pseudonym))
            return None if row is None else row.original


@dataclass(frozen=True)
class DeidOptions:
    retain_uids: bool = False
    retain_dates: bool = False
    remove_private: bool = True


class Deidentifier:
    """Applies the basic profile with a node secret; reverses it from the local map."""

    def __init__(self, store: MappingStore, secret: bytes, options: DeidOptions = DeidOptions()) -> None:
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ValueError("secret: at least 16 bytes (the node's de-identification key)")
        self.store = store
        self.secret = secret
        self.options = options

    # -- pseudonyms -------------------------------------------------------

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self.secret, f"{kind}\x00{value}".encode(), hashlib.sha256).digest()

    def pseudo_uid(self, uid: str) -> str:
        pseudo = "2.25." + str(int.from_bytes(self._digest("uid", uid)[:16], "big"))
        self.store.put("uid", pseudo, uid)
        return pseudo

    def _pseudo_text(self, kind: str, value: str) -> str:
        pseudo = "ANON" + self._digest(kind, value).hex()[:12].upper()
        self.store.put(kind, pseudo, value)
        return pseudo

    # -- forward ----------------------------------------------------------

    def deidentify(self, ds: Dataset) -> Dataset:
        """A de-identified copy of *ds* (the original is not changed)."""
        out = copy.deepcopy(ds)
        patient_id = str(out.get("PatientID", "") or "")
        pseudo_pid = self._pseudo_text("patient_id", patient_id) if patient_id else ""
        if patient_id:
            # The rest of the patient module is remembered under the pseudonymous patient ID.
            for keyword, kind in EMPTY_REMEMBERED.items():
                if keyword in out:
                    self.store.put(kind, pseudo_pid, str(out.get(keyword) or ""))
            if "PatientName" in out:
                self.store.put("patient_name", pseudo_pid, str(out.PatientName))
        self._walk(out, pseudo_pid)
        out.PatientIdentityRemoved = "YES"
        methods = ["113100"] + (["113110"] if self.options.retain_uids else []) + (["113106"] if self.options.retain_dates else [])
        out.DeidentificationMethod = "PS3.15 E.1 basic profile (radnode)" + (" retain UIDs" if self.options.retain_uids else "") + (" retain dates" if self.options.retain_dates else "")
        out.DeidentificationMethodCodeSequence = Sequence([_code(c) for c in methods])
        if "file_meta" in out.__dict__ and out.file_meta is not None and "SOPInstanceUID" in out:
            out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        return out

    def _walk(self, ds: Dataset, pseudo_pid: str) -> None:
        if self.options.remove_private:
            ds.remove_private_tags()
        for keyword in REMOVE:
            if keyword in ds:
                delattr(ds, keyword)
        for keyword in DUMMY:
            if keyword in ds:
                if keyword == "PatientID":
                    ds.PatientID = pseudo_pid
                elif keyword == "PatientName":
                    ds.PatientName = pseudo_pid
                else:
                    value = str(ds.get(keyword) or "")
                    setattr(ds, keyword, self._pseudo_text(DUMMY[keyword], value)[:16] if value else "")
        for keyword in EMPTY_REMEMBERED:
            if keyword in ds:
                setattr(ds, keyword, "")
        if not self.options.retain_dates:
            for keyword in DATES:
                if keyword in ds:
                    setattr(ds, keyword, "")
        for elem in list(ds):
            if elem.VR == "SQ":
                for item in elem.value:
                    self._walk(item, pseudo_pid)
            elif elem.VR == "UI" and elem.keyword in UID_KEYWORDS and not self.options.retain_uids and elem.value:
                if elem.VM > 1:
                    elem.value = [self.pseudo_uid(str(v)) for v in elem.value]
                else:
                    elem.value = self.pseudo_uid(str(elem.value))

    # -- reverse ----------------------------------------------------------

    def reidentify(self, ds: Dataset) -> Dataset:
        """A copy of a returned object with the originals put back (UIDs found in the map, patient module)."""
        out = copy.deepcopy(ds)
        pseudo_pid = str(out.get("PatientID", "") or "")
        original_pid = self.store.get("patient_id", pseudo_pid) if pseudo_pid else None
        if original_pid is not None:
            out.PatientID = original_pid
            name = self.store.get("patient_name", pseudo_pid)
            if name is not None:
                out.PatientName = name
            for keyword, kind in EMPTY_REMEMBERED.items():
                value = self.store.get(kind, pseudo_pid)
                if value is not None:
                    setattr(out, keyword, value)
        for keyword, kind in (("AccessionNumber", "accession"), ("StudyID", "study_id")):
            value = str(out.get(keyword, "") or "")
            if value:
                original = self.store.get(kind, value)
                if original is not None:
                    setattr(out, keyword, original)
        self._restore_uids(out)
        for keyword in ("PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence"):
            if keyword in out:
                delattr(out, keyword)
        return out

    def _restore_uids(self, ds: Dataset) -> None:
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    self._restore_uids(item)
            elif elem.VR == "UI" and elem.value and elem.VM == 1 and str(elem.value).startswith("2.25."):
                original = self.store.get("uid", str(elem.value))
                if original is not None:
                    elem.value = original


def _code(value: str) -> Dataset:
    meanings = {"113100": "Basic Application Confidentiality Profile", "113106": "Retain Longitudinal Temporal Information Full Dates Option", "113110": "Retain UIDs Option"}
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meanings[value]
    return item
