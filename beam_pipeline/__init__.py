"""Options, pipeline assembly and command line of dicom-meta-extract."""

import logging
import warnings


class _BeamImportNoise(logging.Filter):
    """``import apache_beam`` without the gcp extra warns that BigQuery's client is
    missing; nothing here uses BigQuery, so the warning would only confuse."""

    def filter(self, record):
        return "apitools not found" not in record.getMessage()


logging.getLogger().addFilter(_BeamImportNoise())

# google-api-core / google-auth warn on import that the grpcio Beam 2.70 pins (<1.66) will
# not be supported from 2027; it says nothing about this run, and a usage error must stay
# one line.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google(\..*)?")
