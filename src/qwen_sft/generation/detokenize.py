"""Incremental detokenisation with stop strings: constant work per token, whatever the answer's length.

As vLLM and TGI do it: decode only a window of the last few tokens (`prefix`..end) and emit what it adds
beyond the window's already-emitted head (`prefix`..`read`). Text ending in U+FFFD is half of a multi-byte
character: it waits for the next token. For byte-level BPE (Qwen) the emitted pieces concatenate to exactly
`tokenizer.decode(all_ids, skip_special_tokens=True)`.

Stop strings are searched only in the new text plus the longest stop string's length before it, and a tail
that could still grow into a stop string is held back until it can't.
"""

from __future__ import annotations


class IncrementalDetokenizer:
    """Turns one answer's token ids into text, piece by piece.

    `push(token)` returns the text that is final now; `finish()` the rest once the answer is over.
    `stopped` turns true when the text reached a stop string (the text is cut before it).
    """

    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.longest_stop = max((len(s) for s in self.stop), default=0)
        self.ids: list[int] = []
        self.prefix = 0  # window start
        self.read = 0  # end of the window's part already turned into text
        self.prefix_text = ""  # decode(ids[prefix:read])
        self.text = ""  # the answer's text so far (complete characters)
        self.sent = 0  # characters of `text` already returned
        self.stopped = False

    def push(self, token: int) -> str:
        """Add one generated token; returns the text that became final."""
        if self.stopped:
            return ""
        self.ids.append(token)
        window = self._decode(self.ids[self.prefix:])
        if len(window) > len(self.prefix_text) and not window.endswith("\ufffd"):
            self._append(window[len(self.prefix_text):])
            self.prefix, self.read = self.read, len(self.ids)
            self.prefix_text = self._decode(self.ids[self.prefix:self.read])
        return self._release(final=False)

    def finish(self) -> str:
        """The text held back so far (an incomplete character decodes to U+FFFD, as a full decode would)."""
        if not self.stopped:
            window = self._decode(self.ids[self.prefix:])
            if len(window) > len(self.prefix_text):
                self._append(window[len(self.prefix_text):])
                self.prefix = self.read = len(self.ids)
                self.prefix_text = ""
        return self._release(final=True)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _append(self, new: str) -> None:
        start = max(0, len(self.text) - self.longest_stop + 1)  # a stop string may straddle old and new text
        self.text += new
        if self.stop:
            cut = min((i for i in (self.text.find(s, start) for s in self.stop) if i >= 0), default=-1)
            if cut >= 0:
                self.text, self.stopped = self.text[:cut], True

    def _release(self, final: bool) -> str:
        end = len(self.text) if final or self.stopped else len(self.text) - self._held_back()
        if end <= self.sent:
            return ""
        piece, self.sent = self.text[self.sent:end], end
        return piece

    def _held_back(self) -> int:
        """Length of the longest tail of the text that could still grow into a stop string."""
        text = self.text
        for n in range(min(self.longest_stop - 1, len(text)), 0, -1):
            tail = text[-n:]
            if any(s.startswith(tail) for s in self.stop):
                return n
        return 0
