"""Every conversation radnode starts with another system.

``dicom`` (association set-up, the one failure diagnosis, C-ECHO, C-STORE,
confirming C-FIND), ``dicom_query`` (C-FIND by accession, C-MOVE / C-GET),
``dicomweb`` (STOW-RS, QIDO-RS) and ``destinations`` (one interface —
send, confirm, check — with a type per kind of result destination).

Receiving is the listener's; this package never imports it (a C-GET's
arriving instances are handed to a handler the caller passes in).
"""
