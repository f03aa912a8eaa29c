"""TensorFlow, imported with its native start-up chatter kept off our stderr, and with its
pooling allocator on the CPU; and its error messages made short enough for an error row.

TensorFlow's C++ side prints CUDA probing lines before its log settings apply, so the only way
to keep stderr to our own messages is to point file descriptor 2 elsewhere during the import and
the first device query. With BATCH_INFER_DEBUG set, nothing is hidden.
"""

import os
import re
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow's default CPU allocator is malloc, which hands tensors this large (a batch's
# activations run to a hundred megabytes) back to the kernel after every op, so each batch pays
# for zeroing fresh pages again: a third of the CPU time of a MobileNetV2 run went to the kernel.
# The BFC allocator, the one TensorFlow uses on GPUs, keeps and reuses them.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")


def _import_quietly():
    if os.environ.get("BATCH_INFER_DEBUG"):
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow

            tensorflow.config.list_physical_devices("GPU")
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tensorflow


tf = _import_quietly()


_TF_NOISE = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$")


def short_error(error: Exception) -> str:
    """A TensorFlow error message without the op and device decorations.

    Errors raised inside a tf.function start with "Graph execution error" and a Python stack;
    the op's own message is the last line before its "[[{{node ...}}]]" tag.
    """
    message = (getattr(error, "message", None) or str(error)).strip()
    if message.startswith("Graph execution error"):
        message = re.split(r"\n\s*\[\[", message)[0].strip().splitlines()[-1]
    return _TF_NOISE.sub("", message).strip().splitlines()[0] if message else type(error).__name__
