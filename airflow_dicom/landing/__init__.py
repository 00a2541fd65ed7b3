"""Landing of DICOM results as Parquet datasets (find results, retrieval reports)."""
