"""Writes bench/resnet50_deploy.prototxt: ResNet-50 in the layout of the public KaimingHe/deep-residual-networks
ResNet-50-deploy.prototxt (conv + BatchNorm(use_global_stats) + Scale(bias) + ReLU, bottleneck blocks
3-4-6-3 with a projection shortcut first in each stage, stride 2 in the 1x1 reduce of stages 3-5).
Run: python bench/make_resnet50.py"""
from pathlib import Path

OUT = Path(__file__).with_name("resnet50_deploy.prototxt")
lines = ['name: "ResNet-50"',
         'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 224 dim: 224 } } }']


def conv_bn(name, bottom, out, k, s, pad, relu, bn_name, scale_name):
    lines.append(f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
                 f'convolution_param {{ num_output: {out} kernel_size: {k} pad: {pad} stride: {s} bias_term: false }} }}')
    lines.append(f'layer {{ name: "{bn_name}" type: "BatchNorm" bottom: "{name}" top: "{name}" '
                 'batch_norm_param { use_global_stats: true } }')
    lines.append(f'layer {{ name: "{scale_name}" type: "Scale" bottom: "{name}" top: "{name}" scale_param {{ bias_term: true }} }}')
    if relu:
        lines.append(f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}')
    return name


top = conv_bn("conv1", "data", 64, 7, 2, 3, True, "bn_conv1", "scale_conv1")
lines.append(f'layer {{ name: "pool1" type: "Pooling" bottom: "{top}" top: "pool1" '
             'pooling_param { pool: MAX kernel_size: 3 stride: 2 } }')
top = "pool1"
for stage, (blocks, width) in enumerate([(3, 64), (4, 128), (6, 256), (3, 512)], start=2):
    for b in range(blocks):
        tag = f"{stage}{chr(ord('a') + b)}"
        stride = 2 if b == 0 and stage > 2 else 1
        if b == 0:
            short = conv_bn(f"res{tag}_branch1", top, 4 * width, 1, stride, 0, False, f"bn{tag}_branch1", f"scale{tag}_branch1")
        else:
            short = top
        x = conv_bn(f"res{tag}_branch2a", top, width, 1, stride, 0, True, f"bn{tag}_branch2a", f"scale{tag}_branch2a")
        x = conv_bn(f"res{tag}_branch2b", x, width, 3, 1, 1, True, f"bn{tag}_branch2b", f"scale{tag}_branch2b")
        x = conv_bn(f"res{tag}_branch2c", x, 4 * width, 1, 1, 0, False, f"bn{tag}_branch2c", f"scale{tag}_branch2c")
        lines.append(f'layer {{ name: "res{tag}" type: "Eltwise" bottom: "{short}" bottom: "{x}" top: "res{tag}" }}')
        lines.append(f'layer {{ name: "res{tag}_relu" type: "ReLU" bottom: "res{tag}" top: "res{tag}" }}')
        top = f"res{tag}"
lines.append(f'layer {{ name: "pool5" type: "Pooling" bottom: "{top}" top: "pool5" '
             'pooling_param { pool: AVE kernel_size: 7 stride: 1 } }')
lines.append('layer { name: "fc1000" type: "InnerProduct" bottom: "pool5" top: "fc1000" inner_product_param { num_output: 1000 } }')
lines.append('layer { name: "prob" type: "Softmax" bottom: "fc1000" top: "prob" }')

if __name__ == "__main__":
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")
