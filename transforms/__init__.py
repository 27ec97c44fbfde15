"""The pipeline's steps. Importing the package prepares bucket access for this process
(anonymous when asked, see ``storage.install``), so every worker has it before its
first bucket call."""

from transforms import storage as _storage

_storage.install()
