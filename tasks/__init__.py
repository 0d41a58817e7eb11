"""Lightning modules, the DataModule and callbacks: the training logic on top of `mmtrans`."""
