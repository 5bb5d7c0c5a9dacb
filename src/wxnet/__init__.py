"""wxnet: an open implementation of the WeChat-style network system."""

from wxnet import _accel

__version__ = "0.1.0"

# The analyser's hot modules load from their mypyc-compiled copies when those were
# built and match the sources (wxnet/_accel.py); WXNET_PURE=1 forces pure Python.
_accel.install()
