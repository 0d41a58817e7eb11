"""Lightning modules, the DataModule and callbacks: the training logic on top of `mmtrans`."""

from tasks import resolvers  # noqa: F401  - the configs' ${timm_weights:...}
