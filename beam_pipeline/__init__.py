"""Options, pipeline assembly and command line of dicom-meta-extract."""

import logging


class _BeamImportNoise(logging.Filter):
    """``import apache_beam`` without the gcp extra warns that BigQuery's client is
    missing; nothing here uses BigQuery, so the warning would only confuse."""

    def filter(self, record):
        return "apitools not found" not in record.getMessage()


logging.getLogger().addFilter(_BeamImportNoise())
