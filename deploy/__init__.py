"""Deployment: the :class:`deploy.predictor.Predictor` library API, ONNX export, inference precision."""
