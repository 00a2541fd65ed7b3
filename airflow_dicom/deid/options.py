"""The profile options of a pseudonymisation run and their CID 7050 codes (PS3.16)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: CID 7050 "De-identification Method" codes (scheme DCM).
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODES: dict[str, tuple[str, str]] = {
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_modified_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
}
#: names accepted by ``--profile-option`` (and ``profile_options=``), mapped to the field they set.
OPTION_NAMES: dict[str, str] = {
    "clean-descriptors": "clean_descriptors",
    "modified-dates": "retain_modified_dates",
    "patient-characteristics": "retain_patient_characteristics",
    "device-identity": "retain_device_identity",
}


@dataclass(frozen=True)
class ProfileOptions:
    """What the Basic Profile keeps beyond its defaults.

    :param retain_modified_dates: *Retain Longitudinal Temporal Information with Modified Dates*: dates and
        date-times are shifted by a per-patient number of days derived from the key instead of removed.
    :param retain_patient_characteristics: keep sex, age, size, weight, ethnic group, smoking and
        pregnancy status.
    :param retain_device_identity: keep station name, device serial number and the other device IDs.
    :param clean_descriptors: keep descriptions (study, series, protocol, comments) with every patient
        name part, patient ID and accession number found in them replaced; off: removed per E.1-1.
    :param keep_private: private elements kept, each ``"CREATOR:EE"`` (private creator and the element
        byte in hex, e.g. ``"ACME 1.0:10"``); all other private elements are removed.
    :param include_burned_in: also write instances flagged ``BurnedInAnnotation=YES`` or of SOP classes
        that usually carry burned-in text (they are held back and reported otherwise).
    """

    retain_modified_dates: bool = True
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    clean_descriptors: bool = False
    keep_private: tuple[str, ...] = field(default_factory=tuple)
    include_burned_in: bool = False

    @classmethod
    def from_names(
        cls,
        names: list[str] | tuple[str, ...] | None,
        keep_private: list[str] | tuple[str, ...] | None = None,
        include_burned_in: bool = False,
    ) -> ProfileOptions:
        """Options from their command-line names; ``no-modified-dates`` removes dates instead of shifting.

        :param names: option names (:data:`OPTION_NAMES`, or ``no-modified-dates``).
        :param keep_private: safe-listed private elements (``"CREATOR:EE"``).
        :param include_burned_in: write instances that may carry burned-in text.
        :raises ValueError: an unknown option name, or a malformed safe-list entry.
        """
        values: dict[str, bool] = {}
        for name in names or ():
            if name == "no-modified-dates":
                values["retain_modified_dates"] = False
            elif name in OPTION_NAMES:
                values[OPTION_NAMES[name]] = True
            else:
                known = ", ".join([*OPTION_NAMES, "no-modified-dates"])
                raise ValueError(f"unknown profile option {name!r}; known: {known}")
        private = tuple(keep_private or ())
        for entry in private:
            parse_private_entry(entry)
        return cls(**values, keep_private=private, include_burned_in=include_burned_in)

    def private_safe_list(self) -> frozenset[tuple[str, int]]:
        """The safe-listed private elements as (creator, element byte) pairs."""
        return frozenset(parse_private_entry(entry) for entry in self.keep_private)

    def method_codes(self) -> list[tuple[str, str]]:
        """(code value, meaning) of CID 7050 for the profile and every option in effect."""
        codes = [BASIC_PROFILE_CODE]
        for name, code in OPTION_CODES.items():
            on = bool(self.keep_private) if name == "retain_safe_private" else getattr(self, name)
            if on:
                codes.append(code)
        return codes

    def describe(self) -> str:
        """The De-identification Method text (0012,0063): profile and options, at most 64 characters."""
        short = {
            "clean_descriptors": "CleanDesc",
            "retain_modified_dates": "ModDates",
            "retain_patient_characteristics": "PatChar",
            "retain_device_identity": "DevId",
            "retain_safe_private": "SafePriv",
        }
        on = [
            short[n]
            for n in OPTION_CODES
            if (n == "retain_safe_private" and self.keep_private)
            or (n != "retain_safe_private" and getattr(self, n))
        ]
        return ("PS3.15 E.1-1 Basic" + (" " + ",".join(on) if on else ""))[:64]

    def names(self) -> list[str]:
        """The options in effect, by their command-line names."""
        out = [name for name, attr in OPTION_NAMES.items() if getattr(self, attr)]
        if not self.retain_modified_dates:
            out.append("no-modified-dates")
        return out


def parse_private_entry(entry: str) -> tuple[str, int]:
    """Parse a safe-list entry ``"CREATOR:EE"``.

    :param entry: the entry.
    :raises ValueError: no colon, or the element byte is not one hex byte.
    """
    creator, sep, elem = entry.rpartition(":")
    try:
        value = int(elem, 16)
    except ValueError:
        value = -1
    if not sep or not creator or not 0 <= value <= 0xFF:
        raise ValueError(
            f"private safe-list entry {entry!r}: write CREATOR:EE (private creator, element byte in hex), "
            "e.g. 'ACME 1.0:10'"
        )
    return creator.strip(), value
