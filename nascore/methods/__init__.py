"""Building blocks that several methods share, beneath the components that use them.

* :mod:`~nascore.methods.teacher` — teachers for distillers (this run's supernet, another run, an
  export, a torchvision model), loaded from a spec string;
* :mod:`~nascore.methods.mixed` — mixed-op sub-space training and architecture parameters α
  (TNAS, SETN, NSE).
"""
