"""Caffe2 nets: op listings (the text dump) translated to Caffe layers and built into the same
graph a prototxt gives. It imports the Caffe format package and the graph, never a backend."""
