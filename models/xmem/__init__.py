"""XMem (Cheng & Schwing, ECCV 2022) re-implemented to load the official XMem.pth unchanged.

``network`` holds the state-dict compatible network, ``memory`` the working / long-term
memory with the official consolidation rules, ``inference`` the official InferenceCore
step, ``propagator`` the product's tracker (models.protocols.Propagator), ``parity`` the
fixture runner and ``bench`` the throughput benchmark. Importing this package does not
import torch; the submodules do.
"""
