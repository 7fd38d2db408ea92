"""CLIP's byte-level BPE tokenizer, as used by dino.txt's text tower.

The vocabulary is defined by a merges file in the format of OpenAI's
``bpe_simple_vocab_16e6.txt.gz``: a gzip-compressed text file whose first line
is a header and whose other lines are merge pairs ``"a b"``, best first. The
token ids follow from the merges alone:

- ids 0 to 255: the 256 byte characters of :func:`bytes_to_unicode`, in its
  order (printable bytes first);
- ids 256 to 511: the same characters with the end-of-word marker ``</w>``;
- one id per merge, in file order (the concatenated pair);
- the last two ids: ``<|startoftext|>`` and ``<|endoftext|>``.

With the official file's first 48,894 merges that makes 49,408 ids. The
end-of-text token has the largest id, which the text tower relies on to find it
with an ``argmax`` over the token ids.

Text is cleaned as CLIP and the official dino.txt tokenizer do it
(``ftfy.fix_text``, which straightens curly quotes, splits ligatures, narrows
full-width characters and repairs mojibake; HTML entities unescaped; Unicode NFC;
runs of whitespace collapsed to one space; lowercased) and split by CLIP's pattern
(contractions, runs of letters, single digits, runs of other symbols) before
BPE. Literal
``<|startoftext|>`` / ``<|endoftext|>`` strings in the input are tokenized as
ordinary text, never as the special tokens.

The encoding itself runs in the Hugging Face ``tokenizers`` library (a BPE
model with the ``</w>`` end-of-word suffix behind a byte-level pre-tokenizer).
"""

from __future__ import annotations

import gzip
import html
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import ftfy
import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

__all__ = [
    "CONTEXT_LENGTH",
    "END_OF_TEXT",
    "START_OF_TEXT",
    "ClipTokenizer",
    "bytes_to_unicode",
    "read_bpe_merges",
    "train_bpe_merges",
    "write_bpe_vocab",
]

START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
END_OF_WORD = "</w>"
CONTEXT_LENGTH = 77
#: Number of ids that do not come from merges: 256 bytes, 256 end-of-word bytes, 2 specials.
NUM_BASE_IDS = 2 * 256 + 2
# CLIP's split pattern, without its special-token alternatives (see the module docstring).
_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_HEADER = "#version: 0.2"


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Map each of the 256 byte values to a printable Unicode character.

    Printable Latin-1 bytes map to themselves; the others (control characters,
    space, and a few more) map to code points from 256 upwards, in byte order.
    This is the alphabet of byte-level BPE (GPT-2 and CLIP).

    Returns:
        A dict from byte value to a one-character string. Its order defines the
        first 256 token ids: the printable bytes first, then the others.

    Introduced in chapter 3.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def clean_text(text: str) -> str:
    """CLIP's cleaning: ``ftfy.fix_text``, then HTML unescaping twice; the normaliser does the rest.

    Without ``ftfy`` everyday text such as ``don’t`` (a curly apostrophe), ``ﬁsh`` (a
    ligature) or full-width ``ＡＢＣ`` gets other token ids than the released model saw.

    Args:
        text: Raw input text.

    Returns:
        The repaired text with HTML entities unescaped.

    Introduced in chapter 3.
    """
    return html.unescape(html.unescape(ftfy.fix_text(text)))


def read_bpe_merges(path: str | Path, max_merges: int | None = None) -> list[tuple[str, str]]:
    """Read merge pairs from a CLIP-format ``.txt.gz`` (or plain ``.txt``) merges file.

    Args:
        path: The merges file. Its first line is a header and is skipped.
        max_merges: Keep only the first ``max_merges`` merges. The official CLIP
            file holds far more merges than CLIP uses (48,894 for 49,408 ids), so
            pass ``vocab_size - 514`` to get a given vocabulary size.

    Returns:
        The merges as ``(left, right)`` pairs, best first.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If a line is not a pair of symbols, or the file holds fewer
            than ``max_merges`` merges.

    Introduced in chapter 3.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BPE merges file {str(path)!r} does not exist")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    lines = raw.decode("utf-8").split("\n")[1:]
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=2):
        if max_merges is not None and len(merges) == max_merges:
            break
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}: line {number} is not a merge pair 'a b': {line!r}")
        merges.append((parts[0], parts[1]))
    if max_merges is not None and len(merges) < max_merges:
        raise ValueError(
            f"{path} holds {len(merges)} merges, fewer than the {max_merges} requested"
        )
    return merges


def write_bpe_vocab(merges: Sequence[tuple[str, str]], path: str | Path) -> None:
    """Write merges in the CLIP ``.txt.gz`` format that :func:`read_bpe_merges` reads.

    The gzip header carries no timestamp, so equal merges give identical files.
    There is no newline after the last merge: CLIP's own reader would take an
    empty last line for one more (empty) token.

    Args:
        merges: ``(left, right)`` pairs, best first.
        path: Destination file; compressed with gzip whatever its suffix.

    Raises:
        ValueError: If a symbol is empty or contains whitespace.

    Introduced in chapter 3.
    """
    lines = [_HEADER]
    for left, right in merges:
        for symbol in (left, right):
            if not symbol or any(ch.isspace() for ch in symbol):
                raise ValueError(f"merge symbol {symbol!r} is empty or contains whitespace")
        lines.append(f"{left} {right}")
    data = "\n".join(lines).encode("utf-8")
    Path(path).write_bytes(gzip.compress(data, mtime=0))


def _normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence(
        [
            normalizers.NFC(),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
            normalizers.Lowercase(),
        ]
    )


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            # Keep the matches of the pattern, drop everything between them (whitespace).
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def train_bpe_merges(texts: Iterable[str], num_merges: int) -> list[tuple[str, str]]:
    """Learn CLIP-format BPE merges from a corpus (used for the tiny models' vocabularies).

    Text is cleaned and split by the same normaliser and pre-tokenizer as
    :class:`ClipTokenizer`, so the merges fit the tokenizer. Each step merges the
    most frequent adjacent pair; ties go to the alphabetically first pair, so the
    result depends only on the word counts (not on the order of ``texts``, nor on
    hash order, which makes the ``tokenizers`` library's BPE trainer
    non-deterministic on ties). Merges are learned in order, so the first
    ``n`` of a longer run form a valid smaller vocabulary.

    Args:
        texts: Training texts (for example, every caption and prompt).
        num_merges: How many merges to learn.

    Returns:
        Up to ``num_merges`` merges, best first; fewer if the corpus runs out of
        pairs to merge (every word already a single token).

    Raises:
        ValueError: If ``num_merges`` is negative.

    Introduced in chapter 3.
    """
    if num_merges < 0:
        raise ValueError(f"num_merges must be >= 0, got {num_merges}")
    normalizer, pre_tokenizer = _normalizer(), _pre_tokenizer()
    word_counts: Counter[str] = Counter()
    for text in texts:
        pieces = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(clean_text(text)))
        word_counts.update(piece for piece, _ in pieces)
    words = [[*w[:-1], w[-1] + END_OF_WORD] for w in sorted(word_counts)]
    freqs = [word_counts[w] for w in sorted(word_counts)]
    pair_counts: Counter[tuple[str, str]] = Counter()
    pair_words: dict[tuple[str, str], set[int]] = defaultdict(set)
    for index, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += freqs[index]
            pair_words[pair].add(index)
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges:
        candidates = [(-count, pair) for pair, count in pair_counts.items() if count > 0]
        if not candidates:
            break
        best = min(candidates)[1]
        merges.append(best)
        for index in sorted(pair_words.pop(best)):
            symbols, freq = words[index], freqs[index]
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] -= freq
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            words[index] = merged
            for pair in zip(merged, merged[1:]):
                pair_counts[pair] += freq
                pair_words[pair].add(index)
        del pair_counts[best]
    return merges


class ClipTokenizer:
    """CLIP's BPE tokenizer: text to fixed-length id tensors with start and end tokens.

    Args:
        merges: ``(left, right)`` merge pairs, best first (see :func:`read_bpe_merges`).

    Introduced in chapter 3.
    """

    def __init__(self, merges: Sequence[tuple[str, str]]) -> None:
        self.merges: list[tuple[str, str]] = [(a, b) for a, b in merges]
        byte_chars = list(bytes_to_unicode().values())
        tokens = byte_chars + [c + END_OF_WORD for c in byte_chars]
        tokens += [a + b for a, b in self.merges]
        tokens += [START_OF_TEXT, END_OF_TEXT]
        self.vocab_size = len(tokens)
        # As in CLIP, a token string that appears twice keeps its later id.
        vocab = {token: index for index, token in enumerate(tokens)}
        self.sot_id = vocab[START_OF_TEXT]
        self.eot_id = vocab[END_OF_TEXT]
        self._id_to_token = dict(enumerate(tokens))
        tokenizer = Tokenizer(
            models.BPE(
                vocab=vocab,
                merges=self.merges,
                end_of_word_suffix=END_OF_WORD,
                continuing_subword_prefix="",
            )
        )
        tokenizer.normalizer = _normalizer()
        tokenizer.pre_tokenizer = _pre_tokenizer()
        self._tokenizer = tokenizer

    @classmethod
    def from_file(cls, path: str | Path, vocab_size: int | None = None) -> ClipTokenizer:
        """Build a tokenizer from a CLIP-format merges file.

        Args:
            path: The ``.txt.gz`` merges file.
            vocab_size: Expected number of ids; only the first ``vocab_size - 514``
                merges are read (49,408 for the official CLIP file). ``None`` reads
                every merge.

        Returns:
            The tokenizer.

        Raises:
            ValueError: If ``vocab_size`` is too small or the file has too few merges.

        Introduced in chapter 3.
        """
        max_merges = None
        if vocab_size is not None:
            if vocab_size < NUM_BASE_IDS:
                raise ValueError(f"vocab_size must be at least {NUM_BASE_IDS}, got {vocab_size}")
            max_merges = vocab_size - NUM_BASE_IDS
        return cls(read_bpe_merges(path, max_merges=max_merges))

    def save(self, path: str | Path) -> None:
        """Write this tokenizer's merges as a CLIP-format ``.txt.gz`` file.

        Args:
            path: Destination file.

        Introduced in chapter 3.
        """
        write_bpe_vocab(self.merges, path)

    def encode(self, text: str) -> list[int]:
        """Return the BPE ids of one text, without start/end tokens or padding.

        Args:
            text: Input text.

        Returns:
            The token ids.

        Raises:
            TypeError: If ``text`` is not a string.

        Introduced in chapter 3.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._tokenizer.encode(clean_text(text), add_special_tokens=False).ids

    def tokenize(self, texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
        """Turn texts into a ``(N, context_length)`` tensor of token ids.

        Each row is ``<|startoftext|>``, the text's ids, ``<|endoftext|>``, then
        zeros. A text too long for the context is cut, and its last id replaced by
        ``<|endoftext|>``, so every row ends its text with the end token.

        Args:
            texts: One text or a list of texts.
            context_length: Row length (77 for CLIP and dino.txt).

        Returns:
            A ``torch.long`` tensor of shape ``(N, context_length)``.

        Raises:
            TypeError: If an element of ``texts`` is not a string.
            ValueError: If ``context_length`` is below 2.

        Introduced in chapter 3.
        """
        if isinstance(texts, str):
            texts = [texts]
        if context_length < 2:
            raise ValueError(f"context_length must be at least 2, got {context_length}")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] must be a str, got {type(text).__name__}")
        encodings = self._tokenizer.encode_batch(
            [clean_text(t) for t in texts], add_special_tokens=False
        )
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, encoding in enumerate(encodings):
            ids = [self.sot_id, *encoding.ids][: context_length - 1] + [self.eot_id]
            result[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return result

    def decode(self, ids: Iterable[int]) -> str:
        """Turn ids back into text (lowercased and whitespace-normalised, as encoded).

        Padding zeros after the end token and the start/end tokens themselves are dropped.

        Args:
            ids: Token ids, for example a row of :meth:`tokenize`'s output.

        Returns:
            The decoded text.

        Raises:
            ValueError: If an id is outside the vocabulary.

        Introduced in chapter 3.
        """
        pieces = []
        for token_id in (int(i) for i in ids):
            if token_id == self.eot_id:
                break
            if token_id == self.sot_id:
                continue
            if token_id not in self._id_to_token:
                raise ValueError(f"token id {token_id} is outside the vocabulary of {self.vocab_size}")
            pieces.append(self._id_to_token[token_id])
        byte_values = {ch: b for b, ch in bytes_to_unicode().items()}
        text = "".join(pieces).replace(END_OF_WORD, " ")
        # Every other character maps back to one byte; the spaces came from the marker.
        data = bytearray()
        for ch in text:
            data.extend(b" " if ch == " " else bytes([byte_values[ch]]))
        return data.decode("utf-8", errors="replace").strip()

    def __repr__(self) -> str:
        return f"ClipTokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)})"
