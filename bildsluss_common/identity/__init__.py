"""Patient identity numbers (R1, R2): the one home of the rules both programs use.

* :mod:`.numbers`: personnummer and samordningsnummer, validation and finding
  numbers in free text;
* :mod:`.reserve`: the region's reservnummer formats, configured in either
  program's ``[identity]`` table;
* :mod:`.patient_id`: the two ways a number enters a program: as a stored,
  canonical id (strict) or as typed by a person (any written form);
* :mod:`.masking`: how a number is shown where it must not be read in full
  (logs, status pages, heartbeats).

Neither program defines an identity pattern of its own.
"""
