"""BVLC's examples/00-classification.ipynb, net_surgery.ipynb (casting CaffeNet's fully connected
layers to convolutions) and detection-style Detector use, with only the import changed. The
weights are seeded (no BVLC weights on the machine); every figure is checked against OpenCV's
Caffe importer (an independent Caffe implementation) on the same .caffemodel, and the images
against OpenCV's resize."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import convnet_io.pycaffe as caffe

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT.parent / "shared" / "caffe-models"
pytestmark = pytest.mark.skipif(not MODELS.is_dir(), reason="../shared/caffe-models not present")
caffe_root = str(MODELS) + "/"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """CaffeNet with seeded fan-in-scaled weights (convnet init's), written as a .caffemodel."""
    import convnet_io

    path = tmp_path_factory.mktemp("caffenet") / "caffenet.caffemodel"
    convnet_io.load(MODELS / "bvlc_reference_caffenet" / "deploy.prototxt", seed=3).save_caffemodel(path)
    return str(path)


_OPENCV: dict = {}


def opencv(prototxt, caffemodel, x, layers):
    import cv2

    key = (str(prototxt), str(caffemodel))
    if key not in _OPENCV:
        _OPENCV[key] = cv2.dnn.readNetFromCaffe(*key)
        _OPENCV[key].setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        _OPENCV[key].enableFusion(False)
    net = _OPENCV[key]
    net.setInput(np.ascontiguousarray(x, dtype=np.float32))
    return dict(zip(layers, (np.asarray(o) for o in net.forward(layers))))


def reference_input(image, mu, dims=(227, 227)):
    """Transformer.preprocess written out with OpenCV: bilinear resize (half-pixel centres, edge
    replicated), HWC->CHW, RGB->BGR, x255, minus the per-channel mean."""
    import cv2

    resized = cv2.resize(image, (dims[1], dims[0]), interpolation=cv2.INTER_LINEAR).astype(np.float64)
    return resized.transpose(2, 0, 1)[::-1] * 255.0 - mu[:, None, None]


def test_classification_notebook(weights):
    import cv2

    caffe.set_mode_cpu()
    model_def = caffe_root + 'bvlc_reference_caffenet/deploy.prototxt'
    model_weights = weights
    net = caffe.Net(model_def,      # defines the structure of the model
                    model_weights,  # contains the trained weights
                    caffe.TEST)     # use test mode (e.g., don't perform dropout)
    # load the mean ImageNet image (as distributed with Caffe) for subtraction
    mu = np.load(caffe_root + 'imagenet/ilsvrc_2012_mean.npy')
    mu = mu.mean(1).mean(1)  # average over pixels to obtain the mean (BGR) pixel values
    # create transformer for the input called 'data'
    transformer = caffe.io.Transformer({'data': net.blobs['data'].data.shape})
    transformer.set_transpose('data', (2, 0, 1))  # move image channels to outermost dimension
    transformer.set_mean('data', mu)            # subtract the dataset-mean value in each channel
    transformer.set_raw_scale('data', 255)      # rescale from [0, 1] to [0, 255]
    transformer.set_channel_swap('data', (2, 1, 0))  # swap channels from RGB to BGR
    # set the size of the input (we can skip this if we're happy with the default; we can also
    # change it later, e.g., for different batch sizes); the notebook's 50 is 2 here, for time
    net.blobs['data'].reshape(2,        # batch size
                              3,         # 3-channel (BGR) images
                              227, 227)  # image size is 227x227
    image = caffe.io.load_image(caffe_root + 'images/cat.jpg')
    transformed_image = transformer.preprocess('data', image)
    # copy the image data into the memory allocated for the net
    net.blobs['data'].data[...] = transformed_image
    # perform classification
    output = net.forward()
    output_prob = output['prob'][0]  # the output probability vector for the first image in the batch
    # load ImageNet labels
    labels_file = caffe_root + 'imagenet/synset_words.txt'
    labels = np.loadtxt(labels_file, str, delimiter='\t')
    # sort top five predictions from softmax output
    top_inds = output_prob.argsort()[::-1][:5]
    top5 = list(zip(output_prob[top_inds], labels[top_inds]))
    shapes = [(layer_name, blob.data.shape) for layer_name, blob in net.blobs.items()]
    param_shapes = [(layer_name, param[0].data.shape, param[1].data.shape) for layer_name, param in net.params.items()]
    filters = net.params['conv1'][0].data
    feat_conv1 = net.blobs['conv1'].data[0, :36]
    feat_pool5 = net.blobs['pool5'].data[0]
    feat_fc6 = net.blobs['fc6'].data[0]

    # the image: Pillow's decoding against OpenCV's (JPEG decoders may differ by a level)
    bgr = cv2.imread(caffe_root + 'images/cat.jpg').astype(np.float64) / 255
    assert image.shape == (360, 480, 3) and np.abs(image - bgr[:, :, ::-1]).mean() < 2 / 255
    x = reference_input(image, mu)
    np.testing.assert_allclose(transformed_image, x, atol=2e-3)
    # the shapes the notebook prints (batch 2 here)
    assert shapes == [('data', (2, 3, 227, 227)), ('conv1', (2, 96, 55, 55)), ('pool1', (2, 96, 27, 27)),
                      ('norm1', (2, 96, 27, 27)), ('conv2', (2, 256, 27, 27)), ('pool2', (2, 256, 13, 13)),
                      ('norm2', (2, 256, 13, 13)), ('conv3', (2, 384, 13, 13)), ('conv4', (2, 384, 13, 13)),
                      ('conv5', (2, 256, 13, 13)), ('pool5', (2, 256, 6, 6)), ('fc6', (2, 4096)),
                      ('fc7', (2, 4096)), ('fc8', (2, 1000)), ('prob', (2, 1000))]
    assert param_shapes[0] == ('conv1', (96, 3, 11, 11), (96,)) and param_shapes[-1] == ('fc8', (1000, 4096), (1000,))
    # OpenCV on the same input blob (the preprocessing was checked against OpenCV's just above)
    ref = opencv(model_def, weights, transformed_image[None], ['prob', 'relu1', 'pool5', 'relu6'])
    np.testing.assert_array_equal(filters, _OPENCV[(model_def, weights)].getParam('conv1', 0))
    for name, ours in (('relu1', feat_conv1), ('pool5', feat_pool5), ('relu6', feat_fc6)):
        theirs = ref[name][0][:len(ours)]
        assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max(), name
    np.testing.assert_allclose(output_prob, ref['prob'][0], rtol=0, atol=2e-5)
    ref_top = np.argsort(-ref['prob'][0])[:5]
    assert [lab for _, lab in top5] == list(labels[ref_top])
    print('predicted class is:', output_prob.argmax(), top5[0])


def test_classifier_and_forward_all_pad(weights):
    mu = np.load(caffe_root + 'imagenet/ilsvrc_2012_mean.npy').mean(1).mean(1)
    model_def = caffe_root + 'bvlc_reference_caffenet/deploy.prototxt'
    net = caffe.Classifier(model_def, weights, image_dims=(256, 256), mean=mu, raw_scale=255,
                           channel_swap=(2, 1, 0))
    image = caffe.io.load_image(caffe_root + 'images/cat.jpg')
    pred = net.predict([image], oversample=False)
    # classify.py's centre crop: resize to 256, crop [14:241] (227 centred), preprocess
    import cv2

    resized = cv2.resize(image, (256, 256), interpolation=cv2.INTER_LINEAR).astype(np.float64)
    crop = resized[14:241, 14:241]
    x = crop.transpose(2, 0, 1)[::-1] * 255.0 - mu[:, None, None]
    ref = opencv(model_def, weights, x[None], ['prob'])['prob']
    np.testing.assert_allclose(pred, ref, rtol=0, atol=2e-5)
    # oversample (the default): four corners and the centre, mirrored, predictions averaged
    pred10 = net.predict([image])
    corners = [(0, 0), (0, 29), (29, 0), (29, 29), (14, 14)]
    crops = [resized[y:y + 227, x0:x0 + 227] for y, x0 in corners]
    crops += [c[:, ::-1] for c in crops]
    xs = np.stack([c.transpose(2, 0, 1)[::-1] * 255.0 - mu[:, None, None] for c in crops])
    ref10 = opencv(model_def, weights, xs, ['prob'])['prob'].mean(0)
    np.testing.assert_allclose(pred10[0], ref10, rtol=0, atol=2e-5)


def test_detector_windows(weights):

    mu = np.load(caffe_root + 'imagenet/ilsvrc_2012_mean.npy').mean(1).mean(1)
    model_def = caffe_root + 'bvlc_reference_caffenet/deploy.prototxt'
    detector = caffe.Detector(model_def, weights, mean=mu, raw_scale=255, channel_swap=(2, 1, 0))
    cat = caffe_root + 'images/cat.jpg'
    windows = [np.array([20, 40, 300, 400])]
    dets = detector.detect_windows([(cat, windows)])
    assert [d['filename'] for d in dets] == [cat]
    image = caffe.io.load_image(cat)
    for det, w in zip(dets, windows):
        x = reference_input(image[w[0]:w[2], w[1]:w[3]], mu)
        ref = opencv(model_def, weights, x[None], ['prob'])['prob'][0]
        # float32 through eight layers on both sides: the input agrees with the float64 one to
        # 1.3e-5 (in 0..255 units); a top probability of 0.87 moves by up to 2.3e-5
        np.testing.assert_allclose(det['prediction'], ref, rtol=0, atol=4e-5)
    detector.configure_crop(16)  # R-CNN's context padding: the crop keeps the net's input size
    assert detector.crop(image, windows[0]).shape == (227, 227, 3)
    with pytest.raises(NotImplementedError, match="selective_search"):
        detector.detect_selective_search([cat])


FULL_CONV = """name: "CaffeNetConv"
layer { name: "data" type: "Input" top: "data" input_param { shape: { dim: 1 dim: 3 dim: 259 dim: 259 } } }
"""


def test_net_surgery_fc_to_conv(weights, tmp_path):
    """net_surgery: fc6-8 cast to convolutions by `.flat` copies, saved, and run on a larger image."""
    text = (MODELS / "bvlc_reference_caffenet" / "deploy.prototxt").read_text()
    body = text[text.index('layer {\n  name: "conv1"'):]
    body = body.replace('name: "fc6"', 'name: "fc6-conv"').replace('name: "fc7"', 'name: "fc7-conv"')
    body = body.replace('name: "fc8"', 'name: "fc8-conv"').replace('"InnerProduct"', '"Convolution"')
    body = body.replace('inner_product_param {\n    num_output: 4096\n  }',
                        'convolution_param {\n    num_output: 4096\n    kernel_size: 6\n  }', 1)
    body = body.replace('inner_product_param {\n    num_output: 4096\n  }',
                        'convolution_param {\n    num_output: 4096\n    kernel_size: 1\n  }')
    body = body.replace('inner_product_param {\n    num_output: 1000\n  }',
                        'convolution_param {\n    num_output: 1000\n    kernel_size: 1\n  }')
    full_conv = tmp_path / "bvlc_caffenet_full_conv.prototxt"
    full_conv.write_text(FULL_CONV + body)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        # Load the original network and extract the fully connected layers' parameters.
        net = caffe.Net(caffe_root + 'bvlc_reference_caffenet/deploy.prototxt', weights, caffe.TEST)
        params = ['fc6', 'fc7', 'fc8']
        # fc_params = {name: (weights, biases)}
        fc_params = {pr: (net.params[pr][0].data, net.params[pr][1].data) for pr in params}
        # Load the fully convolutional network to transplant the parameters.
        net_full_conv = caffe.Net('bvlc_caffenet_full_conv.prototxt', weights, caffe.TEST)
        params_full_conv = ['fc6-conv', 'fc7-conv', 'fc8-conv']
        # conv_params = {name: (weights, biases)}
        conv_params = {pr: (net_full_conv.params[pr][0].data, net_full_conv.params[pr][1].data)
                       for pr in params_full_conv}
        for pr, pr_conv in zip(params, params_full_conv):
            conv_params[pr_conv][0].flat = fc_params[pr][0].flat  # flat unrolls the arrays
            conv_params[pr_conv][1][...] = fc_params[pr][1]
        net_full_conv.save('bvlc_caffenet_full_conv.caffemodel')
        # load input and configure preprocessing
        im = caffe.io.load_image(caffe_root + 'images/cat.jpg')
        mu = np.load(caffe_root + 'imagenet/ilsvrc_2012_mean.npy').mean(1).mean(1)
        transformer = caffe.io.Transformer({'data': net_full_conv.blobs['data'].data.shape})
        transformer.set_mean('data', mu)
        transformer.set_transpose('data', (2, 0, 1))
        transformer.set_channel_swap('data', (2, 1, 0))
        transformer.set_raw_scale('data', 255.0)
        # make classification map by forward and print prediction indices at each location
        out = net_full_conv.forward_all(data=np.asarray([transformer.preprocess('data', im)]))
        classes = out['prob'][0].argmax(axis=0)
    finally:
        os.chdir(cwd)
    assert out['prob'].shape == (1, 1000, 2, 2)
    # OpenCV runs the saved surgery result on the same input
    x = reference_input(im, mu, (259, 259))
    ref = opencv(full_conv, str(tmp_path / 'bvlc_caffenet_full_conv.caffemodel'), x[None], ['prob'])['prob']
    np.testing.assert_allclose(out['prob'], ref, rtol=0, atol=2e-5)
    np.testing.assert_array_equal(classes, ref[0].argmax(axis=0))
