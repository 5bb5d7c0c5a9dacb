"""Application identification shared by ``wxnet analyze`` and ``wxnet gate``.

Pure code (no I/O after the signature files are loaded): a :class:`FlowView` (ports,
addresses, first bytes of each direction) plus what DNS told the client
(:class:`DnsMemory`) gives a :class:`Verdict` with the :class:`Evidence` that fired.
Signatures are data files (``signatures/*.toml``); see docs/classify.md.
"""

from wxnet.classify.classifier import Classifier, Evidence, FlowView, Verdict
from wxnet.classify.dns import DnsMemory
from wxnet.classify.signatures import (
    AppSignature,
    PayloadPattern,
    SignatureError,
    SignatureSet,
    bundled_paths,
    load_signatures,
)

__all__ = [
    "AppSignature",
    "Classifier",
    "DnsMemory",
    "Evidence",
    "FlowView",
    "PayloadPattern",
    "SignatureError",
    "SignatureSet",
    "Verdict",
    "bundled_paths",
    "load_signatures",
]
