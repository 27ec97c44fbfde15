"""Options, pipeline assembly and command line of dicom-meta-extract."""

import logging
import os
import warnings

# Import-time notices of Beam's dependencies about things this tool does not use. They
# would be the first lines a user sees on every run (and break "one clear line" on a
# usage error), before anything of ours.
_IMPORT_NOISE = (
    # ``import apache_beam`` without the gcp extra: BigQuery's client is missing.
    "apitools not found",
    # Beam 2.70's TFRecord module (imported by apache_beam.io) without crcmod.
    "crcmod package not found",
)


class _BeamImportNoise(logging.Filter):
    def filter(self, record):
        message = record.getMessage()
        return not any(noise in message for noise in _IMPORT_NOISE)


logging.getLogger().addFilter(_BeamImportNoise())

# Beam 2.70 requires grpcio < 1.66 (Python <= 3.12); google-api-core and google-auth then
# warn at import that grpcio < 1.83 lacks post-quantum TLS (docs/engines.md, "Known issues").
# The same filter, by module, for the SDK worker processes the local runner starts.
_GRPCIO_NOTICES = ("google.api_core._python_package_support", "google.auth.transport.grpc")
for _module in _GRPCIO_NOTICES:
    warnings.filterwarnings("ignore", category=FutureWarning, module=_module)
os.environ["PYTHONWARNINGS"] = ",".join(
    [w for w in os.environ.get("PYTHONWARNINGS", "").split(",") if w]
    + [f"ignore::FutureWarning:{module}" for module in _GRPCIO_NOTICES
       if f"ignore::FutureWarning:{module}" not in os.environ.get("PYTHONWARNINGS", "")])
