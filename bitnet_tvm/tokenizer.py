"""A byte-level tokenizer for models without their own: UTF-8 bytes are the token ids.

Ids ``0..255`` are the bytes.  A vocabulary larger than 256 gets special ids after the bytes:
BOS ``256`` (prepended by :meth:`ByteTokenizer.encode`) and, when there is room, EOS ``257``.
The built-in tiny model has exactly 256 ids, so it has neither.  A trained model brings its own
tokenizer; anything with ``encode``/``decode``/``bos_id``/``eos_id`` can take this one's place.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ByteTokenizer"]

_BYTES = 256


class ByteTokenizer:
    """UTF-8 bytes as token ids, plus optional BOS/EOS ids after the byte range.

    Parameters
    ----------
    vocab_size : int
        The model's vocabulary size, at least 256.  BOS is ``256`` when ``vocab_size > 256``
        and EOS ``257`` when ``vocab_size > 257``; otherwise they are None.
    add_bos : bool
        Whether :meth:`encode` starts with BOS (when the vocabulary has one).
    """

    def __init__(self, vocab_size: int = _BYTES, *, add_bos: bool = True) -> None:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
        if vocab_size < _BYTES:
            raise ValueError(
                f"a byte-level tokenizer needs vocab_size >= {_BYTES} (one id per byte), "
                f"got {vocab_size}"
            )
        self.vocab_size = vocab_size
        self.add_bos = add_bos
        self.bos_id: int | None = _BYTES if vocab_size > _BYTES else None
        self.eos_id: int | None = _BYTES + 1 if vocab_size > _BYTES + 1 else None

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``: BOS (if any and ``add_bos``) then its UTF-8 bytes."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = list(text.encode("utf-8"))
        if self.add_bos and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; special ids are skipped, invalid UTF-8 becomes U+FFFD.

        Raises
        ------
        ValueError
            If an id lies outside ``[0, vocab_size)``.
        """
        data = bytearray()
        for token in ids:
            token = int(token)
            if not 0 <= token < self.vocab_size:
                raise ValueError(f"token id {token} is outside [0, {self.vocab_size})")
            if token < _BYTES:
                data.append(token)
        return data.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return (
            f"ByteTokenizer(vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
            f"eos_id={self.eos_id})"
        )
