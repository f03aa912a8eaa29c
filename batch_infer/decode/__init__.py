"""From a file's bytes to one model input, and the reason when that fails.

`options` (the decode run options), `headers` (header fields read in plain Python), `plan` (what
a header decides before any pixel is decoded: the CHECKS and each file's `Plan`), `graph` (the
DECODERS table and the tf.data decode), `geometry` (pixels to the model's channels, size, dtype
and scaling), `pillow` (the fallback decoder), `diagnose` (Pillow's rescue and the reason for an
error row) and `pipeline` (files through tf.data as `DecodedBatch`es).
"""
