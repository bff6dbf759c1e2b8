"""Caffe's file formats: the schema (``proto``), prototxt text, legacy upgrades, phase/stage
filtering (``netstate``), NetParameter -> graph (``builder``), ``.caffemodel`` weights, matching
weights to layers, and a graph written back as deploy prototxt. It imports the graph, never a
backend."""
