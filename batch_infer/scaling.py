"""Which pixel scaling a model was trained with: read from the model where it says so, checked
on the first images where it does not, and never changed silently.

Feeding 0..255 pixels to a model trained on x/255 gives confident, wrong answers, and nothing
fails. So before a run: a `Rescaling` or `Normalization` layer at the model's input means it
takes 0..255 (`raw`); a Keras Applications backbone, known by its layer names, means its
documented `preprocess_input`; an explicit --preprocess (or --preset) is the user's word. Where
nothing says, `check` scores a few images under the run's scaling and the other candidates: if
the run's outputs are saturated (nearly every top-1 score at 1) or collapsed (one class for
nearly every image) while a candidate's are not, the run warns, naming the candidate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .config import PREPROCESS_MODES

AUTO = "auto"
# Layer classes that scale pixels inside the model, so it takes 0..255 as decoded.
SCALING_LAYERS = {"Rescaling", "Normalization"}
# tf_keras records arithmetic on the input (x / 127.5 - 1 written in the model) as TFOpLambda
# layers named after the op.
ARITHMETIC = re.compile(r"^tf\.(math\.(truediv|divide|multiply|subtract|add)|__operators__\.(add|sub))")
WEIGHTED = re.compile(r"Conv|Dense")  # a layer past which pixels have become features
# Keras Applications families by layer names only they have, and their preprocess_input mode.
# Families that rescale inside (EfficientNet, ConvNeXt, MobileNetV3 by default) are found by
# their Rescaling/Normalization layer first; listed here for when it was left out.
BACKBONES = (
    ("DenseNet", "torch", {"pool2_conv", "conv2_block1_concat"}),
    ("ResNetV2", "symmetric", {"conv2_block1_preact_bn", "post_bn"}),
    ("ResNet", "caffe", {"conv2_block1_3_conv", "conv2_block1_add"}),
    ("MobileNetV2", "symmetric", {"bn_Conv1", "block_1_expand"}),
    ("MobileNetV3", "symmetric", {"expanded_conv_depthwise", "expanded_conv_project"}),
    ("MobileNet", "symmetric", {"conv_dw_1", "conv_pw_1"}),
    ("InceptionResNetV2", "symmetric", {"mixed_5b", "block35_1"}),
    ("InceptionV3", "symmetric", {"mixed0", "mixed10"}),
    ("Xception", "symmetric", {"block2_sepconv1", "block14_sepconv2"}),
    ("VGG", "caffe", {"block1_conv1", "block5_conv3"}),
    ("NASNet", "symmetric", {"stem_conv1", "stem_bn1"}),
    ("EfficientNet", "raw", {"stem_conv", "block1a_project_conv"}),
)
# The label-free check. A model fed pixels 255 times larger than it was trained on has logits
# so far apart that softmax gives exactly 1 in float32; trained models on their own scaling do
# that for some images, rarely for most. Measured on 9 public models trained on x/255 or
# x/127.5-1: 77-100 % of top-1 scores pinned at 1 under raw, 0 % under the right scaling.
PINNED = 1 - 1e-6
SUSPECT, CLEAR, CLOSE = 0.7, 0.25, 0.05
CHECK_IMAGES = 32
MIN_CHECK_IMAGES = 8  # fewer images than this say too little to warn on
UNSAID = "the default: the model does not say, so the first images are checked"


@dataclass(frozen=True)
class Scaling:
    preprocess: str
    source: str  # where the choice came from, in words

    @property
    def from_model(self) -> bool:
        return self.source.startswith("the model")


def from_layers(layers: list[tuple[str, str]], ordered: bool = True) -> Scaling | None:
    """The scaling the model's layers say, from (class name, layer name) pairs listed from the
    input on (nested models in place); None when they say nothing. Unordered lists (a
    SavedModel's graph scopes) count a scaling layer anywhere."""
    for class_name, name in layers:
        if class_name in SCALING_LAYERS or (class_name == "TFOpLambda" and ARITHMETIC.match(name)):
            return Scaling("raw", f"the model: its {class_name} layer {name!r} scales the pixels itself")
        if ordered and WEIGHTED.search(class_name):
            break
    names = {name for _, name in layers}
    for family, mode, marks in BACKBONES:
        if marks <= names:
            return Scaling(mode, f"the model: a Keras Applications {family} backbone, whose "
                                 f"preprocess_input is {mode}")
    return None


def keras_layers(model) -> list[tuple[str, str]]:
    """(class name, name) of every layer of a Keras model, nested models' layers in place."""
    found = []
    for layer in model.layers:
        found.append((type(layer).__name__, layer.name))
        if hasattr(layer, "layers"):
            found.extend(keras_layers(layer))
    return found


_SCOPE_SUFFIX = re.compile(r"_\d+$")


def graph_scopes(function) -> list[tuple[str, str]]:
    """A SavedModel signature's name scopes (Keras layer names, when Keras built the graph), as
    pairs with a class guessed from the default names of the scaling layers."""
    graph = function.graph.as_graph_def()
    names = {node.name for node in graph.node}
    for library_function in graph.library.function:
        names.update(node.name for node in library_function.node_def)
    scopes: set[str] = set()
    for name in names:
        for part in name.split("/")[:-1]:
            scopes.update((part, _SCOPE_SUFFIX.sub("", part)))
    classes = {"rescaling": "Rescaling", "normalization": "Normalization"}
    return [(classes.get(_SCOPE_SUFFIX.sub("", scope), ""), scope) for scope in sorted(scopes)]


def decide(given: str, found: Scaling | None) -> tuple[Scaling, str | None]:
    """(the scaling to use, a warning when the user's choice contradicts the model's)."""
    if given != AUTO:
        chosen = Scaling(given, "set by --preprocess or --preset")
        if found is not None and found.preprocess != given:
            return chosen, (f"--preprocess {given} was asked for, but {found.source[len('the model: '):]}"
                            f" ({found.preprocess}); scoring with {given} as asked")
        return chosen, None
    if found is not None:
        return found, None
    return Scaling("raw", UNSAID), None


def candidates(spec) -> list[str]:
    """The scalings that apply to an input: uint8 inputs take raw only; caffe and torch need RGB."""
    if spec.dtype.name == "uint8":
        return ["raw"]
    if spec.channels == 1:
        return ["raw", "unit", "symmetric"]
    return list(PREPROCESS_MODES)


@dataclass(frozen=True)
class Collapse:
    """How degenerate one scaling's outputs are on the sample."""

    pinned: float  # share of images whose top-1 score is 1 within 1e-6
    one_class: float  # share of images in the most common top-1 class

    @classmethod
    def of(cls, scores: np.ndarray) -> "Collapse":
        top1 = scores.argmax(axis=1)
        counts = np.bincount(top1, minlength=scores.shape[1])
        return cls(float((scores.max(axis=1) >= PINNED).mean()), float(counts.max() / len(top1)))


def check(current: str, collapses: dict[str, Collapse], images: int) -> str | None:
    """The warning for a run whose scaling looks wrong while other candidates look right, or
    None. Candidates about as good as the best are all named: a sample without labels cannot
    tell them apart (`inspect --against` can)."""
    mine = collapses[current].pinned
    others = {name: collapse.pinned for name, collapse in collapses.items() if name != current}
    if mine < SUSPECT or not others or min(others.values()) > CLEAR:
        return None
    best = min(others.values())
    named = [name for name, pinned in others.items() if pinned <= best + CLOSE]
    against = " and ".join(f"{others[name]:.0%} with {name}" for name in named)
    return (f"--preprocess {current} looks wrong for this model: on {images} of the images, "
            f"{mine:.0%} of top-1 scores are pinned at 1, against {against}; if the model was "
            f"trained on such pixels, run with --preprocess {' or '.join(named)} (batch-infer "
            "inspect MODEL --against LABELLED_DIR tells which)")
