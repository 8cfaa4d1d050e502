"""TensorFlow/Keras plugin of nnc-core (ISO/IEC 15938-17 Annex D).

Importing this package imports no TensorFlow; :mod:`nnc_tensorflow.adapter`
does, and only when the plugin is used.
"""

__version__ = "0.1.0"
