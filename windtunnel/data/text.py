"""Whether a file is UTF-8 text (shared by the file sources: text_dir and installed_code)."""
from pathlib import Path


def is_text(path: Path, head: int = 8192) -> bool:
    """UTF-8 text: no NUL byte and valid UTF-8 in the first `head` bytes (a multi-byte character cut at the
    end of the head is allowed)."""
    with open(path, "rb") as f:
        chunk = f.read(head)
    if b"\0" in chunk:
        return False
    for cut in range(4):  # up to 3 bytes of a character split by the head's end
        try:
            chunk[:len(chunk) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            if len(chunk) < head:
                return False
    return False
