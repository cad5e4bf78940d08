"""retail-backbone: a retailer's data backbone as Apache Beam pipelines.

Subpackages follow the design card: ``io`` (sources, sinks, dead letters), ``schemas`` (contracts),
``transforms`` (mode-agnostic business logic), ``pipelines`` (jobs), ``templates`` (launch) and
``stack`` (the real local services used by the demo and the tests).
"""

__version__ = "0.1.0"
