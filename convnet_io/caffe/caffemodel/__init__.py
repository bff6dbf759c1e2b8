"""Fast, exact reading and writing of Caffe binary weights (``.caffemodel``, ``.binaryproto``).

A ``.caffemodel`` is a serialized ``NetParameter``; its weights are ``BlobProto``
messages whose ``data`` is a packed run of little-endian float32 values.  Going
through the protobuf runtime would turn every weight into a Python float (61 M
of them for AlexNet), so this module walks the protobuf wire format itself,
only as deep as it needs to:

* the top-level ``NetParameter`` fields, keeping ``layer`` (100, V2) and
  ``layers`` (2, V1) and skipping everything else by length;
* in each layer, ``name``/``type`` and the ``blobs`` submessages (for a V0 net,
  the same three fields inside ``V1LayerParameter.layer``);
* in each ``BlobProto``, the shape fields and where the ``data`` (5) /
  ``double_data`` (8) payloads lie; the payloads themselves are skipped by
  length, not read, until the arrays they become are filled.

Memory: :func:`read_caffemodel` scans that structure through a read-only
``mmap`` of the file, so only the pages holding tags, names and shapes are
ever mapped in (and those are unmapped again every 16 MiB of scanning, which
keeps a file of many small blobs from mapping much of itself); the packed
payloads are not touched.  The map is closed once the scan is done,
before the blobs' arrays are allocated.  Each blob's array is then allocated with
``np.empty`` in its final dtype and filled by the kernel copying the payload
from the file (``preadv``, or ``seek`` + ``readinto``) straight into it, so
every value is copied exactly once and nothing else the size of the weights
is ever held: peak memory is the weights' size (for a float32 model, about
the file's size) plus a few pages.  Values are little-endian in the
file and native in the arrays (swapped in place on a big-endian host).  Only
rare encodings cost more: a blob stored one tag per value (not packed) is
decoded from a copy of its bytes, and a file that cannot be mapped (an empty
or special file such as a pipe, a file system without ``mmap``) is read whole
into ``bytes`` and copied from there, about 2x the weights at its peak.  Every
returned array owns its memory: C-contiguous, aligned, writable and
independent of the file.  As with any ``mmap``, truncating the file while it
is being scanned (rather than replacing it, as :func:`write_caffemodel` does)
can kill the process with ``SIGBUS``; a file shrinking after the scan is a
:class:`ConvnetError`.  :func:`read_blobproto` (for small mean files) reads
the file into ``bytes`` and copies each blob out of it once.

Parsing follows protobuf's rules wherever they matter for the result: a field
with an unexpected wire type is an unknown field and skipped, a singular field
seen twice keeps its last value, a singular message seen twice is merged
(``BlobShape`` dims concatenate), packed and unpacked encodings of a repeated
number are both accepted and concatenate in file order.  The shape and data
rules follow Caffe's ``Blob::FromProto``: any of the legacy ``num``/``channels``
/``height``/``width`` set means a 4-D ``(num, channels, height, width)`` shape,
else ``shape.dim`` (no shape at all: 0 axes, one value); non-empty
``double_data`` wins over ``data``; ``diff``/``double_diff`` are ignored.  One
deliberate leniency: a legacy dimension left unset counts as 1 here, where
Caffe's proto default of 0 would make the blob empty and fail its size check;
the element count is checked against the shape either way.

Writing emits the same bytes protobuf's ``SerializeToString`` would for
``NetParameter{name, layer{name, type, blobs{data, shape{dim}}}}`` with float32
data, streaming each blob's raw little-endian bytes straight to the file, into
a temporary file in the destination directory that replaces the destination
with ``os.replace`` only once complete.
"""
from convnet_io.caffe.caffemodel.reader import (
                                                V0_LAYER_TYPES,
                                                V1_LAYER_TYPES,
                                                LayerBlobs,
                                                read_blobproto,
                                                read_caffemodel,
)
from convnet_io.caffe.caffemodel.writer import write_blobproto, write_caffemodel

__all__ = ["LayerBlobs", "read_caffemodel", "write_caffemodel", "read_blobproto", "write_blobproto",
           "V1_LAYER_TYPES", "V0_LAYER_TYPES"]
