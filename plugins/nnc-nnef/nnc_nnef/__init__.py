"""NNEF plugin of nnc-core (ISO/IEC 15938-17 Annex A).

Importing this package imports no ``nnef``; :mod:`nnc_nnef.adapter` does,
when the plugin is used.
"""

__version__ = "0.1.0"
