"""Central training of edgevae models (torch). Importing this package does not import torch."""
