"""Caffe2 nets: op listings (the text dump) and stored NetDef pairs (predict_net + init_net)
translated to Caffe layers and built into the same graph a prototxt gives, and graphs written back
as NetDef pairs. It imports the Caffe format package and the graph, never a backend."""
