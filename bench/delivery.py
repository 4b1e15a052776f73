"""Delivery latency per destination kind, against loopback servers.

Sends the same result package N times to each message destination (e-mail
through aiosmtpd with STARTTLS + AUTH, HL7 ORU^R01 to an MLLP receiver
answering AA, FHIR transaction Bundle to a validating endpoint) and prints the
median and 90th percentile wall time of one delivery, including building and
validating the message. A reference in the same run: a bare TCP connect +
close to the same MLLP port, the floor any delivery pays.

    python bench/delivery.py [--n 30] [--pdf-kb 200]

Needs the test extra (aiosmtpd, cryptography); the servers come from
tests/support/delivery_servers.py.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from radnode.model.delivery import PackagedFinding, PackagedMeasurement, PatientIdentity, ResultPackage  # noqa: E402
from radnode.model.jobs import Destination  # noqa: E402
from radnode.peers.destinations import CallerIdentity, open_destination  # noqa: E402
from radnode.settings import DeliverySettings  # noqa: E402
from tests.support.delivery_servers import FhirServer, MllpServer, SmtpServer  # noqa: E402


def package(i: int, pdf_kb: int) -> ResultPackage:
    pdf = b"%PDF-1.4\n" + os.urandom(pdf_kb * 1024)
    return ResultPackage(
        job_id=f"{i:032x}", application="glioma", study_instance_uid="1.2.826.0.1.3680043.8.498.1", accession="ACC1",
        patient=PatientIdentity(patient_id="P1", name="Doe^Jane"), referring_physician="House^Gregory",
        measurements=tuple(PackagedMeasurement(f"m{k}", 1.5 * k, "mL", ("118565006", "SCT", "Volume")) for k in range(7)),
        findings=(PackagedFinding("haemorrhage", True, 0.9, critical=True),), pdf=pdf,
    )


def timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--pdf-kb", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        smtp, mllp, fhir = SmtpServer(Path(tmp)).start(), MllpServer("AA").start(), FhirServer().start()
        try:
            caller = CallerIdentity(delivery=DeliverySettings(smtp=smtp.settings(), email_phi=True))
            kinds = {
                "email (STARTTLS+AUTH, PDF attached)": open_destination(Destination(name="m", email=("a@example.org",)), caller),
                "hl7 ORU^R01 over MLLP (ACK AA)": open_destination(Destination(name="h", hl7=mllp.url), caller),
                "fhir transaction Bundle (validated both ends)": open_destination(Destination(name="f", fhir=fhir.url), caller),
            }
            rows = []

            def connect(_: int) -> None:
                socket.create_connection(("127.0.0.1", mllp.port), timeout=5).close()

            floor = timed(connect, args.n)
            rows.append(("reference: TCP connect+close", floor))
            for label, dest in kinds.items():
                rows.append((label, timed(lambda i, d=dest: d.send([], package(i, args.pdf_kb)), args.n)))
        finally:
            smtp.stop(), mllp.stop(), fhir.stop()
    print(f"n={args.n}, PDF {args.pdf_kb} KiB, 7 measurements + 1 finding")
    for label, ms in rows:
        ms.sort()
        print(f"{label:<48} median {statistics.median(ms):8.1f} ms   p90 {ms[int(0.9 * (len(ms) - 1))]:8.1f} ms")


if __name__ == "__main__":
    main()
