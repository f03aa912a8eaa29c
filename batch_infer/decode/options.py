"""The decode options: how a file's pixels become the model's size (`Resize`), and what a file may
cost and how it is turned upright (`DecodeOptions`); the run options of the same names. No
TensorFlow here, so `inspect` and the fingerprint can name them cheaply."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resize:
    """How upright pixels become the model's size: the run options of the same names.

    Every mode first takes a centred box of the image, then resizes that box to the model size
    with `interpolation` (antialiased when shrinking, if `antialias`):
    - stretch: the whole image, both sides to the model size (aspect ratio not kept);
    - crop: the largest centred box of the model's aspect ratio, exactly as Keras'
      `smart_resize` (`crop_to_aspect_ratio=True`) computes it;
    - pad: the whole image scaled to fit, zeros around it, as `tf.image.resize_with_pad`
      (Keras' `pad_to_aspect_ratio=True`).
    `crop_fraction` F < 1 then keeps the centre F of that box (each side floor(F * side)), which
    is timm's crop_pct: "resize to size/F, then take the centre" with the crop done first, so only
    the pixels kept are resized.
    """

    mode: str = "stretch"
    crop_fraction: float = 1.0
    interpolation: str = "bilinear"
    antialias: bool = True

    @classmethod
    def from_config(cls, config) -> "Resize":
        return cls(config.resize, config.crop_fraction, config.interpolation, config.antialias)

    @property
    def is_default(self) -> bool:
        return self == Resize()

    def flags(self) -> str:
        """The run flags that give this resize, defaults left out: "--resize crop --no-antialias"."""
        words = [] if self.mode == "stretch" else [f"--resize {self.mode}"]
        if self.crop_fraction != 1.0:
            words.append(f"--crop-fraction {self.crop_fraction:g}")
        if self.interpolation != "bilinear":
            words.append(f"--interpolation {self.interpolation}")
        if not self.antialias:
            words.append("--no-antialias")
        return " ".join(words)

    def describe(self) -> str:
        """In words: "crop, centre 0.875, bicubic, antialiased"."""
        words = [self.mode] + ([f"centre {self.crop_fraction:g}"] if self.crop_fraction != 1.0 else [])
        return ", ".join(words + [self.interpolation, "antialiased" if self.antialias else "no antialias"])

    def metadata(self) -> dict[str, str]:
        return {"resize": self.mode, "crop_fraction": repr(float(self.crop_fraction)),
                "interpolation": self.interpolation, "antialias": str(self.antialias).lower()}


@dataclass(frozen=True)
class DecodeOptions:
    """What a file may cost, how it is turned upright and resized: the run options of the same
    names. `decoder` "keras" (set by --preset keras) decodes every file with
    `tf.io.decode_image(channels=C, expand_animations=False)`, as Keras' dataset utility does,
    instead of the DECODERS table."""

    max_pixels: int
    max_file_mb: int
    exif_transpose: bool
    scaled_decode: bool
    resize: Resize = Resize()
    decoder: str = "batch-infer"
    preset: str | None = None

    @classmethod
    def from_config(cls, config) -> "DecodeOptions":
        return cls(config.max_pixels, config.max_file_mb, config.exif_transpose, config.scaled_decode,
                   Resize.from_config(config), "keras" if config.preset == "keras" else "batch-infer",
                   config.preset)

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mb * 2**20

    def metadata(self) -> dict[str, str]:
        return {"exif_transpose": str(self.exif_transpose).lower(), "max_pixels": str(self.max_pixels),
                "max_file_mb": str(self.max_file_mb), "scaled_decode": str(self.scaled_decode).lower(),
                **self.resize.metadata(), "decoder": self.decoder, "preset": self.preset or "none"}
