"""The detectors' own tensors, one room per method (``realnet/``); no method imports another."""
