"""Interchangeable runners (torch, ONNX Runtime, OpenCV) and the comparator that checks them."""
