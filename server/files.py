"""File rules shared by ``/view`` and ``/upload``: folder roots, real-path containment, image checks.

Every path a client names is resolved with ``realpath`` and must land inside the real path of its
folder, so ``..`` and symlinks cannot escape. Uploads must decode as one of a few raster image formats
(checked by content, not by name); their names are reduced to a safe basename with the right extension.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import unquote

from server.config import ServerConfig
from server.jsonio import fail

FOLDER_TYPES = ("output", "input", "temp")
INLINE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
}
UPLOAD_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}
FORMAT_SUFFIXES = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg"),
    "WEBP": (".webp",),
    "GIF": (".gif",),
    "BMP": (".bmp",),
}
MAX_PIXELS = 64 * 1024 * 1024
_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>:\"|?*\\/]+")


def folder(config: ServerConfig, kind: str) -> Path:
    """The real path of one of the output, input and temp folders (created on demand)."""
    if kind not in FOLDER_TYPES:
        fail(f"type must be one of {', '.join(FOLDER_TYPES)}", type="invalid_type")
    path = {"output": config.output, "input": config.input, "temp": config.temp}[kind]
    path.mkdir(parents=True, exist_ok=True)
    return Path(os.path.realpath(path))


def split_annotation(name: str, default: str) -> tuple[str, str]:
    """``'x.png [input]'`` → ``('x.png', 'input')``."""
    for kind in FOLDER_TYPES:
        if name.endswith(f" [{kind}]"):
            return name[: -len(kind) - 3], kind
    return name, default


def contained(root: Path, subfolder: str, filename: str) -> Path:
    """The real path of ``root/subfolder/filename``; 400 when any part tries to leave ``root``."""
    if not filename or "\x00" in filename or "\x00" in subfolder:
        fail("a file name is required", type="invalid_path")
    if os.path.basename(filename) != filename or filename in (".", ".."):
        fail("the file name must not contain a path", type="invalid_path")
    if os.path.isabs(subfolder) or any(part == ".." for part in re.split(r"[\\/]", subfolder)):
        fail("the subfolder must stay inside its folder", type="invalid_path")
    path = Path(os.path.realpath(root / subfolder / filename))
    if not path.is_relative_to(root) or path == root:
        fail("the path leaves its folder", type="invalid_path")
    return path


def safe_name(name: str, fallback: str = "upload") -> str:
    """A basename without separators, control characters or a leading dot, at most 120 characters."""
    name = unquote(name).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip(" .")
    return (name or fallback)[-120:]


def safe_subfolder(subfolder: str) -> str:
    parts = [p for p in subfolder.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        fail("the subfolder must stay inside its folder", type="invalid_path")
    cleaned = [safe_name(p, "_") for p in parts]
    if len(cleaned) > 8:
        fail("the subfolder is nested too deeply", type="invalid_path")
    return "/".join(cleaned)


def check_image(data: bytes) -> str:
    """The Pillow format name of ``data`` when it is an allowed, sane raster image; else 400."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format or ""
            width, height = image.size
            image.verify()
    except Exception:
        fail("the upload is not an image in a supported format", type="invalid_image", status=415)
    if fmt not in UPLOAD_FORMATS:
        fail(
            f"image format {fmt} is not accepted; use PNG, JPEG, WebP, GIF or BMP",
            type="invalid_image",
            status=415,
        )
    if width * height > MAX_PIXELS:
        fail("the image has too many pixels", type="invalid_image", status=413)
    return fmt


def with_suffix_for(name: str, fmt: str) -> str:
    if not name.lower().endswith(FORMAT_SUFFIXES[fmt]):
        name = f"{name}{UPLOAD_FORMATS[fmt]}"
    return name


def store_upload(root: Path, subfolder: str, name: str, data: bytes, overwrite: bool) -> str:
    """Write ``data`` atomically under ``root/subfolder``; returns the final name.

    An existing file with the same content is reused; otherwise a new name gets `` (n)`` appended,
    unless ``overwrite`` is set.
    """
    target_dir = Path(os.path.realpath(root / subfolder))
    if not target_dir.is_relative_to(root):
        fail("the subfolder leaves its folder", type="invalid_path")
    target_dir.mkdir(parents=True, exist_ok=True)
    stem, dot, ext = name.rpartition(".")
    candidate, n = name, 1
    while not overwrite:
        path = contained(root, subfolder, candidate)
        if not path.exists():
            break
        if path.is_file() and _digest(path) == hashlib.sha256(data).hexdigest():
            return candidate
        candidate = f"{stem} ({n}){dot}{ext}"
        n += 1
    path = contained(root, subfolder, candidate)
    atomic_write(path, data)
    return candidate


def atomic_write(path: Path, data: bytes) -> None:
    """Write through a temporary file and a rename; a failure names ``path`` (a full disk says where)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-", suffix=".part")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def seed_example(input_dir: Path) -> bool:
    """Write ``example.png`` into an input folder that holds no file at all (as ComfyUI ships one).

    LoadImage lists the input folder; with nothing in it the editor's widget reads ``undefined``
    until the user uploads something. Returns whether it wrote the picture.
    """
    from PIL import Image, ImageDraw

    if any(p.is_file() for p in input_dir.iterdir()):
        return False
    image = Image.new("RGB", (256, 256), (232, 228, 220))
    draw = ImageDraw.Draw(image)
    draw.ellipse((28, 28, 124, 124), fill=(214, 64, 52))
    draw.rectangle((140, 36, 224, 120), fill=(52, 110, 200))
    draw.polygon([(76, 144), (28, 228), (124, 228)], fill=(60, 160, 80))
    draw.ellipse((148, 148, 220, 220), fill=(236, 190, 40))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    atomic_write(input_dir / "example.png", buffer.getvalue())
    return True


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reencode(path: Path, preview: str | None, channel: str | None) -> tuple[bytes, str]:
    """``preview='webp;90'`` re-encodes; ``channel`` is rgb, a (alpha only) or rgba."""
    from PIL import Image

    with Image.open(path) as opened:
        opened.load()
        image: Image.Image = opened
        if channel == "rgb":
            image = image.convert("RGB")
        elif channel == "a":
            rgba = image.convert("RGBA")
            alpha = rgba.getchannel("A")
            image = Image.new("RGBA", rgba.size, (0, 0, 0, 0))
            image.putalpha(alpha)
        fmt, quality = "png", 90
        if preview:
            kind, _, q = preview.partition(";")
            fmt = "jpeg" if kind.lower() in ("jpg", "jpeg") else "webp" if kind.lower() == "webp" else "png"
            quality = int(q) if q.isdigit() and 1 <= int(q) <= 100 else 90
        if fmt == "jpeg":
            image = image.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, fmt.upper(), quality=quality)
    return buffer.getvalue(), f"image/{fmt}"
