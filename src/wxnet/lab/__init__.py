"""``wxnet lab``: the seed's experiment (S7) in network namespaces (docs/lab.md).

Pure parts: :mod:`~wxnet.lab.faults` (the fault model and its nftables rules),
:mod:`~wxnet.lab.results`, :mod:`~wxnet.lab.expectations` (S9, S12, S13, S14 as checks),
:mod:`~wxnet.lab.report`. OS adapters: :mod:`~wxnet.lab.topology` (namespaces, veths,
NAT), :mod:`~wxnet.lab.dnsserver`, :mod:`~wxnet.lab.agent` (the processes that play the
phone, its peer and a browser; :mod:`~wxnet.lab.sdkphone` with the client SDK,
:mod:`~wxnet.lab.probe` with the lab's own client) and :mod:`~wxnet.lab.runner`.
"""

from wxnet.lab.expectations import Check, ExpectationFailed, assert_expectations, evaluate, predict
from wxnet.lab.faults import BlockMode, Case, Fault, FaultError, parse_case, parse_matrix
from wxnet.lab.report import Report
from wxnet.lab.results import CaseResult, Link, Outcome, Source

__all__ = [
    "BlockMode",
    "Case",
    "CaseResult",
    "Check",
    "ExpectationFailed",
    "Fault",
    "FaultError",
    "Link",
    "Outcome",
    "Report",
    "Source",
    "assert_expectations",
    "evaluate",
    "parse_case",
    "parse_matrix",
    "predict",
]
