"""Deploying a trained model: its whole inference path as one ONNX or OpenVINO graph, and the engines that
run such a graph behind the same detector seam as the PyTorch model (``image_size`` and ``score``).

Generic over the method registry: a method's detector exports when its ``score`` is pure torch.
"""
