"""What ``advkit serve`` accepts from a browser, read as hostile input.

- ``read_body``: a request body, refused beyond a byte limit (the declared ``Content-Length``
  first, then while streaming, so a lying or chunked client cannot get more in).
- ``decode_image``: PNG or JPEG only, decoded by Pillow alone; the image's size is read from its
  header and refused beyond ``MAX_PIXELS`` before any pixel is decoded, and Pillow's own
  decompression-bomb limit is set to the same number (``Image.MAX_IMAGE_PIXELS``; its warning is
  an error here). A truncated or corrupt file is a 422. The image becomes the model's input
  contract: grey or RGB as the model's channels, resized to its side, scaled into its bounds.
- ``parse_spec_upload``: an audit spec in YAML through the same strict reader and validator as
  ``advkit audit`` (safe tags only, bounded size, every field checked); an uploaded spec may only
  name built-in datasets and zoo models, never a file or URL on the server's side.

Every refusal is a :class:`~advkit.errors.WebRequestError` with a 4xx status and a message that
says what to do.
"""

from __future__ import annotations

import io
import warnings

import torch

from advkit.errors import AdvkitError, AuditSpecError, WebRequestError

MAX_IMAGE_BYTES = 4 << 20  # 4 MiB: a photo of a digit is far less
MAX_SPEC_BYTES = 1 << 20  # the YAML reader's own limit
MAX_PIXELS = 4096 * 4096
FORMATS = ("PNG", "JPEG")


async def read_body(request, limit: int) -> bytes:
    """The request body; 413 when it (declared or streamed) exceeds ``limit`` bytes, 400 when
    it is empty."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise WebRequestError(f"the upload is larger than the limit of {limit} bytes; send a "
                              "smaller file", 413)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise WebRequestError(f"the upload is larger than the limit of {limit} bytes; send "
                                  "a smaller file", 413)
    if not raw:
        raise WebRequestError("the upload is empty; choose a file first", 400)
    return bytes(raw)


def decode_image(raw: bytes, *, shape: tuple[int, ...], bounds: tuple[float, float],
                 invert: bool = False) -> torch.Tensor:
    """A PNG or JPEG file as one input of ``shape`` (C, H, W) within ``bounds``."""
    from PIL import Image, UnidentifiedImageError

    if len(shape) != 3 or shape[0] not in (1, 3):
        raise WebRequestError(f"this model takes inputs of shape {list(shape)}, not images; "
                              "pick one of its dataset's samples instead", 422)
    # Pillow's decompression-bomb limit: never looser than ours (it warns above it, here an error)
    Image.MAX_IMAGE_PIXELS = min(Image.MAX_IMAGE_PIXELS or MAX_PIXELS, MAX_PIXELS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(raw), formats=list(FORMATS))  # reads the header only
            w, h = im.size
            if w < 1 or h < 1 or w * h > MAX_PIXELS:
                raise WebRequestError(f"the image is {w} x {h} pixels; at most {MAX_PIXELS} "
                                      "pixels are decoded (4096 x 4096): scale it down", 413)
            im.load()
            im = im.convert("L" if shape[0] == 1 else "RGB")
            im = im.resize((shape[2], shape[1]), Image.Resampling.BILINEAR)
    except WebRequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise WebRequestError(f"the image has more than {MAX_PIXELS} pixels (a decompression "
                              "bomb); scale it down", 413) from None
    except UnidentifiedImageError:
        raise WebRequestError("the upload is not a PNG or JPEG image; upload a .png or .jpg "
                              "file", 415) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt data
        raise WebRequestError(f"the image could not be decoded ({str(exc)[:120]}); it is "
                              "truncated or corrupt: export it again as PNG or JPEG", 422) from None
    data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).to(torch.float32) / 255.0
    x = data.reshape(shape[1], shape[2], shape[0]).permute(2, 0, 1)
    if invert:
        x = 1.0 - x
    lo, hi = bounds
    return (lo + x * (hi - lo)).contiguous()


def parse_spec_upload(raw: bytes):
    """An uploaded YAML spec, validated as ``advkit audit`` validates a spec file; ``(spec,
    sha256 of the bytes)``. 422 with the validator's message when it is refused."""
    import hashlib

    from advkit.audit.spec import parse_spec
    from advkit.audit.yaml_limits import load_yaml

    if len(raw) > MAX_SPEC_BYTES:
        raise WebRequestError(f"the spec is larger than {MAX_SPEC_BYTES} bytes", 413)
    try:
        spec = parse_spec(load_yaml(raw, source="uploaded spec"), source="uploaded spec")
    except AdvkitError as exc:
        raise WebRequestError(str(exc), 422) from None
    m, d = spec.model, spec.dataset
    server_side = [name for name, v in (("model.path", m.path), ("model.class", m.class_),
                                        ("model.weights", m.weights), ("model.url", m.url),
                                        ("dataset.path", d.path)) if v is not None]
    if server_side or m.zoo is None:
        raise WebRequestError(str(AuditSpecError(
            "uploaded spec: a spec sent from the browser may only use built-in datasets and zoo "
            f"models (model: {{zoo: ...}}), not {', '.join(server_side) or 'a model file'}; run "
            "`advkit audit SPEC` on the command line for a spec with files")), 422)
    return spec, hashlib.sha256(raw).hexdigest()
