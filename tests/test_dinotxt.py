"""Tests for the dino.txt model family (vslib.dinotxt) and the CLIP BPE tokenizer (vslib.bpe)."""

from __future__ import annotations

import gzip
import html
import json
import math
import unicodedata

import numpy as np
import ftfy
import pytest
import regex
import torch
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from vslib import dinotxt as dinotxt_module
from vslib.bpe import ClipTokenizer, bytes_to_unicode, read_bpe_merges, train_bpe_merges, write_bpe_vocab
from vslib.dinotxt import (
    DinoTxtBackboneError,
    DinoTxtConfig,
    DinoTxtKeyError,
    DinoTxtModel,
    backbone_sha256,
    check_state_dict,
    clip_loss,
    convert_official_backbone,
    load_dinotxt,
    save_dinotxt,
)

CORPUS = [
    "a red circle on a blue background",
    "a photo of a small green square",
    "the big yellow triangle",
    "a photo of the red circle",
    "it's a cat's toy: 1234 blue squares!",
    "a bright photo of a big red square",
]


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def merges() -> list[tuple[str, str]]:
    return train_bpe_merges(CORPUS * 3, 60)


@pytest.fixture(scope="module")
def tokenizer(merges) -> ClipTokenizer:
    return ClipTokenizer(merges)


def tiny_backbone(seed: int = 0) -> DINOv3ViTModel:
    torch.manual_seed(seed)
    config = DINOv3ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        patch_size=8, image_size=32, num_register_tokens=4,
    )
    return DINOv3ViTModel(config).eval()


def tiny_config(vocab_size: int, embed_dim: int = 48) -> DinoTxtConfig:
    return DinoTxtConfig(
        embed_dim=embed_dim, backbone_hidden_size=32, backbone_num_register_tokens=4, patch_size=8,
        head_blocks=2, head_heads=2, text_vocab_size=vocab_size, text_width=32, text_layers=2,
        text_heads=2, image_size=32, resize_size=36,
    )


@pytest.fixture()
def model(tokenizer) -> DinoTxtModel:
    backbone = tiny_backbone()
    torch.manual_seed(1)
    return DinoTxtModel(tiny_config(tokenizer.vocab_size), backbone, tokenizer).eval()


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""")


def reference_alphabet() -> list[str]:
    """CLIP's byte alphabet, in id order: printable bytes as themselves, then the rest from U+0100."""
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    others = [b for b in range(256) if b not in printable]
    chars = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}
    return [chars[b] for b in printable + others], chars


def reference_encode(text: str, merges: list[tuple[str, str]]) -> list[int]:
    """A plain BPE loop: repeatedly merge the best-ranked adjacent pair, left to right."""
    order, byte_chars = reference_alphabet()
    vocab = order + [c + "</w>" for c in order] + [a + b for a, b in merges]
    ids = {token: i for i, token in enumerate(vocab)}
    ranks = {pair: i for i, pair in enumerate(merges)}
    text = unicodedata.normalize("NFC", html.unescape(html.unescape(ftfy.fix_text(text))))
    text = " ".join(text.split()).lower()
    out = []
    for piece in SPLIT.findall(text):
        word = [byte_chars[b] for b in piece.encode("utf-8")]
        word[-1] += "</w>"
        while len(word) > 1:
            best = min(range(len(word) - 1), key=lambda i: ranks.get((word[i], word[i + 1]), math.inf))
            pair = (word[best], word[best + 1])
            if pair not in ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == pair:
                    merged.append(pair[0] + pair[1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        out.extend(ids[token] for token in word)
    return out


def test_byte_alphabet_matches_clip_rule():
    order, chars = reference_alphabet()
    mapping = bytes_to_unicode()
    assert list(mapping.values()) == order
    assert all(mapping[b] == chars[b] for b in range(256))
    assert len(set(mapping.values())) == 256


def test_tokenize_layout(tokenizer):
    ids = tokenizer.tokenize(["a red circle", "square"])
    assert ids.shape == (2, 77) and ids.dtype == torch.long
    assert tokenizer.sot_id == tokenizer.vocab_size - 2
    assert tokenizer.eot_id == tokenizer.vocab_size - 1
    for row, text in zip(ids, ["a red circle", "square"]):
        body = tokenizer.encode(text)
        assert row[0] == tokenizer.sot_id
        assert row[1 : 1 + len(body)].tolist() == body
        assert row[1 + len(body)] == tokenizer.eot_id
        assert row[2 + len(body) :].eq(0).all()
        assert int(row.argmax()) == 1 + len(body)  # the text tower pools here


def test_tokenize_lowercases_and_cleans_whitespace(tokenizer):
    a = tokenizer.tokenize(["A  Red\tCIRCLE \n"])
    b = tokenizer.tokenize(["a red circle"])
    assert torch.equal(a, b)
    assert torch.equal(tokenizer.tokenize(["fish &amp; chips"]), tokenizer.tokenize(["fish & chips"]))


@pytest.mark.parametrize("raw, plain", [
    ("don\u2019t say \u201cred\u201d", "don't say \"red\""),  # curly quotes
    ("an e\ufb03cient \ufb01sh", "an efficient fish"),  # ligatures
    ("\uff21 \uff32\uff45\uff44 \uff11\uff12", "a red 12"),  # full-width letters and digits
    ("caf\u00c3\u00a9 au lait", "caf\u00e9 au lait"),  # mojibake: UTF-8 read as Latin-1
])
def test_text_is_cleaned_like_the_official_tokenizer(tokenizer, raw, plain):
    assert tokenizer.encode(raw) == tokenizer.encode(plain)
    assert torch.equal(tokenizer.tokenize([raw]), tokenizer.tokenize([plain]))


def test_truncation_keeps_end_token(tokenizer):
    long_text = "a red circle " * 60
    row = tokenizer.tokenize([long_text])[0]
    body = tokenizer.encode(long_text)
    assert len(body) > 77
    assert row[0] == tokenizer.sot_id and row[-1] == tokenizer.eot_id
    assert row[1:-1].tolist() == body[:75]
    short = tokenizer.tokenize(["a"], context_length=2)[0]
    assert short.tolist() == [tokenizer.sot_id, tokenizer.eot_id]


@pytest.mark.parametrize(
    "text",
    [
        "a red circle on a blue background",
        "A Photo of the BIG, yellow triangle!!",
        "it's 12 cats' toys &amp; they're 3.5 cm",
        "ünïcödé → ★ 日本語 text\twith   tabs",
        "aaaaaaa squaresquare",
        "it\u2019s a \ufb01sh \uff08ｆｕｌｌ\uff09",
        "",
    ],
)
def test_encoding_matches_reference_bpe(tokenizer, merges, text):
    assert tokenizer.encode(text) == reference_encode(text, merges)


def test_hand_written_merges_match_reference():
    merges = [("r", "e"), ("re", "d</w>"), ("c", "i"), ("ci", "r"), ("l", "e</w>"), ("cir", "c"), ("circ", "le</w>")]
    tokenizer = ClipTokenizer(merges)
    assert tokenizer.vocab_size == 512 + len(merges) + 2
    for text in ["red circle", "reddish circles", "circ red", "RED  Circle"]:
        assert tokenizer.encode(text) == reference_encode(text, merges)
    assert tokenizer.encode("red circle") == [512 + 1, 512 + 6]
    assert tokenizer.decode(tokenizer.tokenize("RED  Circle")[0]) == "red circle"


def test_decode_round_trip(tokenizer):
    ids = tokenizer.tokenize(["A photo of the  RED circle"])[0]
    assert tokenizer.decode(ids) == "a photo of the red circle"
    # One byte of a three-byte character is not UTF-8 on its own: it decodes as U+FFFD.
    first_byte = tokenizer.encode("\u65e5")[:1]
    assert first_byte == [list(bytes_to_unicode()).index(0xE6)]
    assert tokenizer.decode(first_byte) == "\ufffd"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.decode([tokenizer.vocab_size + 5])


def test_vocab_file_round_trip(tmp_path, merges, tokenizer):
    path = tmp_path / "bpe_vocab.txt.gz"
    write_bpe_vocab(merges, path)
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    assert lines[0].startswith("#") and lines[1] == " ".join(merges[0])
    assert len(lines) == 1 + len(merges)  # no trailing empty line
    assert read_bpe_merges(path) == merges
    assert read_bpe_merges(path, max_merges=5) == merges[:5]
    loaded = ClipTokenizer.from_file(path, vocab_size=tokenizer.vocab_size)
    assert torch.equal(loaded.tokenize(CORPUS), tokenizer.tokenize(CORPUS))
    smaller = ClipTokenizer.from_file(path, vocab_size=514 + 10)
    assert smaller.vocab_size == 524 and smaller.merges == merges[:10]
    with pytest.raises(ValueError, match="fewer than"):
        ClipTokenizer.from_file(path, vocab_size=514 + len(merges) + 1)
    assert ClipTokenizer.from_file(path, vocab_size=514).merges == []  # bytes and specials only
    with pytest.raises(ValueError, match="^vocab_size must be at least 514, got 513$"):
        ClipTokenizer.from_file(path, vocab_size=513)
    write_bpe_vocab(merges, tmp_path / "again.txt.gz")
    assert (tmp_path / "again.txt.gz").read_bytes() == path.read_bytes()
    assert path.read_bytes()[4:8] == bytes(4)  # the gzip header's time stamp is zero, not the clock
    everything = ClipTokenizer.from_file(path)  # no vocab_size: every merge
    assert everything.merges == merges and everything.vocab_size == tokenizer.vocab_size


def test_bad_vocab_files(tmp_path):
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(gzip.compress(b"#version: 0.2\na b\nnot-a-pair\n"))
    with pytest.raises(ValueError, match="line 3"):
        read_bpe_merges(bad)
    blank = tmp_path / "blank.txt.gz"
    blank.write_bytes(gzip.compress(b"#version: 0.2\na b\n\nc d\n"))  # a blank line is skipped, not the end
    assert read_bpe_merges(blank) == [("a", "b"), ("c", "d")]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_bpe_merges(tmp_path / "nowhere.txt.gz")
    with pytest.raises(ValueError, match="whitespace"):
        write_bpe_vocab([("a b", "c")], tmp_path / "x.txt.gz")


def test_train_bpe_merges(merges):
    assert len(merges) == 60
    assert train_bpe_merges(CORPUS * 3, 60) == merges
    assert train_bpe_merges(CORPUS * 3, 10) == merges[:10]
    known = {c for c in bytes_to_unicode().values()} | {c + "</w>" for c in bytes_to_unicode().values()}
    for left, right in merges:  # every merge joins symbols that exist before it
        assert left in known and right in known
        known.add(left + right)
    tokenizer = ClipTokenizer(merges)
    assert len(tokenizer.encode("photo")) == 1  # a frequent word became one token
    assert train_bpe_merges(list(reversed(CORPUS * 3)), 60) == merges  # order does not matter
    assert train_bpe_merges(["ab"], 50) == [("a", "b</w>")]  # the corpus runs out of pairs
    # A pair's count sums over the words that hold it: (a, b) is in "abc" and "abd", 2 in all,
    # and beats (x, y</w>) at 2 alphabetically; then (ab, c) is in two words, 2 again.
    assert train_bpe_merges(["abc abd xy xy"], 1) == [("a", "b")]
    assert train_bpe_merges(["abce abcf xy xy"], 2) == [("a", "b"), ("ab", "c")]
    # Counts by hand: "ab" x3 -> (a, b</w>) 3; then "ac" and "bc" tie at 1, alphabetical order wins.
    assert train_bpe_merges(["ab ab ab ac bc"], 3) == [("a", "b</w>"), ("a", "c</w>"), ("b", "c</w>")]
    with pytest.raises(ValueError, match="num_merges must be >= 0, got -1"):
        train_bpe_merges(CORPUS, -1)
    assert train_bpe_merges(CORPUS, 0) == []
    # "abc" x3: (a, b) and (b, c</w>) tie at 3, (a, b) wins; merging it removes (b, c</w>), which
    # must not come back as a stale count: only (ab, c</w>) is left to merge.
    assert train_bpe_merges(["abc abc abc"], 5) == [("a", "b"), ("ab", "c</w>")]


def test_tokenize_rejects_non_strings(tokenizer):
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str, got int"):
        tokenizer.tokenize(["ok", 3])
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        tokenizer.encode(b"ok")
    with pytest.raises(ValueError, match="context_length must be at least 2, got 1"):
        tokenizer.tokenize("ok", context_length=1)


def test_tokenize_takes_one_text_as_a_batch_of_one(tokenizer):
    assert torch.equal(tokenizer.tokenize("a red circle"), tokenizer.tokenize(["a red circle"]))
    assert tokenizer.tokenize("a red circle").shape == (1, 77)


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def test_config_json_round_trip(tmp_path):
    config = tiny_config(600)
    path = tmp_path / "config.json"
    config.to_json(path)
    assert DinoTxtConfig.from_json(path) == config
    assert DinoTxtConfig.from_json(config.to_json()) == config
    assert json.loads(path.read_text())["image_mean"] == [0.485, 0.456, 0.406]
    with pytest.raises(ValueError, match="head_size_typo"):
        DinoTxtConfig.from_dict({**config.to_dict(), "head_size_typo": 3})
    with pytest.raises(ValueError, match="embed_dim"):
        DinoTxtConfig(embed_dim=47)
    with pytest.raises(ValueError, match="text_heads"):
        DinoTxtConfig(text_width=30, text_heads=4)


def test_released_model_defaults():
    config = DinoTxtConfig()
    assert (config.embed_dim, config.text_vocab_size, config.text_context_length) == (2048, 49408, 77)
    assert (config.text_width, config.text_layers, config.text_heads) == (1280, 24, 20)
    assert config.embed_dim == 2 * config.backbone_hidden_size
    assert config.init_logit_scale == pytest.approx(math.log(1 / 0.07))


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def test_shapes_and_halves(model):
    pixels = torch.randn(3, 3, 32, 48)
    with torch.no_grad():
        image = model.encode_image(pixels)
        patches = model.patch_features(pixels)
        cls, flat_patches = model.head_outputs(model.backbone_tokens(pixels))
        text = model.encode_text(model.tokenize(["a red circle", "a blue square", "x"]))
    assert image.shape == (3, 48) and text.shape == (3, 48)
    assert patches.shape == (3, 4, 6, 24)
    assert flat_patches.shape == (3, 24, 24)  # registers dropped
    torch.testing.assert_close(image[:, :24], cls)
    torch.testing.assert_close(image[:, 24:], patches.mean(dim=(1, 2)))
    assert (model.image_size, model.image_mean, model.image_std) == (32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_identity_projection_when_sizes_match(tokenizer):
    model = DinoTxtModel(tiny_config(tokenizer.vocab_size, embed_dim=64), tiny_backbone(), tokenizer)
    assert not any("visual_model.head.linear_projection" in k for k in model.trainable_state_dict())
    assert model.encode_image(torch.randn(1, 3, 32, 32)).shape == (1, 64)


def test_text_pools_at_end_token(model):
    ids = model.tokenize(["a red circle"])
    eot = int(ids[0].argmax())
    changed = ids.clone()
    changed[0, eot + 1 :] = 5  # tokens after the end token are masked out by causality
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(ids), model.encode_text(changed))
        before = ids.clone()
        before[0, 1] = 7
        assert not torch.allclose(model.encode_text(ids), model.encode_text(before))


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        model.encode_image(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model.encode_image(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="token ids must be in"):
        model.encode_text(torch.full((1, 77), model.config.text_vocab_size))
    with pytest.raises(ValueError, match="context length"):
        model.encode_text(torch.zeros(1, 78, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model.encode_text(torch.zeros(1, 77))


def test_backbone_must_fit_config(tokenizer):
    config = tiny_config(tokenizer.vocab_size)
    config.backbone_num_register_tokens = 2
    with pytest.raises(DinoTxtBackboneError, match="backbone_num_register_tokens=2 but the backbone has 4"):
        DinoTxtModel(config, tiny_backbone(), tokenizer)
    with pytest.raises(ValueError, match="tokenizer has"):
        DinoTxtModel(tiny_config(tokenizer.vocab_size + 1), tiny_backbone(), tokenizer)


def test_backbone_frozen_and_bit_identical(model):
    before = backbone_sha256(model.backbone)
    model.train()
    assert model.head.training and model.text_model.training
    assert not model.backbone.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model.loss(model.encode_image(torch.randn(4, 3, 32, 32)), model.encode_text(model.tokenize(CORPUS[:4])))
    loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.logit_scale.grad is not None
    assert model.head.blocks[0].attn.qkv.weight.grad is not None
    optimiser.step()
    assert backbone_sha256(model.backbone) == before


def test_backbone_sha256_sees_one_changed_value():
    a, b = tiny_backbone(), tiny_backbone()
    assert backbone_sha256(a) == backbone_sha256(b)
    with torch.no_grad():
        b.norm.bias[3] += 1e-6
    assert backbone_sha256(a) != backbone_sha256(b)


def test_loss_falls(model):
    torch.manual_seed(0)
    pixels = torch.randn(6, 3, 32, 32)
    ids = model.tokenize(CORPUS)
    model.train()
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    tokens = model.backbone_tokens(pixels)
    losses = []
    for _ in range(15):
        loss = model.loss(model.embed_backbone_tokens(tokens), model.encode_text(ids))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1


def test_clip_loss_by_hand():
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    text = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    scale = 2.0
    cos = torch.tensor([[1.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]])
    logits = scale * cos
    rows = -torch.log_softmax(logits, 1).diagonal().mean()
    cols = -torch.log_softmax(logits, 0).diagonal().mean()
    expected = (rows + cols) / 2
    got = clip_loss(image, text, torch.tensor([math.log(scale)]))
    torch.testing.assert_close(got, expected)
    capped = clip_loss(image, text, torch.tensor([10.0]))
    torch.testing.assert_close(capped, clip_loss(image, text, torch.tensor([math.log(100.0)])))
    lowered = clip_loss(image, text, torch.tensor([10.0]), max_logit_scale=math.log(3.0))
    torch.testing.assert_close(lowered, clip_loss(image, text, torch.tensor([math.log(3.0)])))
    assert not torch.allclose(lowered, capped)
    with pytest.raises(ValueError, match="equal shape"):
        clip_loss(image, text[:1], torch.tensor([0.0]))


def test_model_loss_caps_the_temperature_where_its_config_says(model):
    torch.manual_seed(0)
    image, text = torch.randn(4, 48), torch.randn(4, 48)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(400.0))
    at_clip_cap = clip_loss(image, text, torch.tensor([math.log(100.0)]))
    torch.testing.assert_close(model.loss(image, text), at_clip_cap)
    model.config.max_logit_scale = math.log(1000.0)
    uncapped = clip_loss(image, text, torch.tensor([math.log(400.0)]), math.log(1e4))
    torch.testing.assert_close(model.loss(image, text), uncapped)
    assert not torch.allclose(uncapped, at_clip_cap)


# ---------------------------------------------------------------------------------------------
# State dicts, saving and loading
# ---------------------------------------------------------------------------------------------


def official_layout(config: DinoTxtConfig) -> dict[str, tuple[int, ...]]:
    """Key names and shapes of the official head + text checkpoint, written out from its modules."""
    d, e, w, v = config.backbone_hidden_size, config.embed_dim, config.text_width, config.text_vocab_size
    swiglu = int(d * config.head_mlp_ratio * 2 / 3)
    swiglu += -swiglu % 64
    keys: dict[str, tuple[int, ...]] = {"logit_scale": (1,)}
    for i in range(config.head_blocks):
        p = f"visual_model.head.blocks.{i}."
        keys |= {p + "norm1.weight": (d,), p + "norm1.bias": (d,), p + "attn.qkv.weight": (3 * d, d),
                 p + "attn.proj.weight": (d, d), p + "attn.proj.bias": (d,), p + "ls1.gamma": (d,),
                 p + "norm2.weight": (d,), p + "norm2.bias": (d,), p + "mlp.w1.weight": (swiglu, d),
                 p + "mlp.w1.bias": (swiglu,), p + "mlp.w2.weight": (swiglu, d), p + "mlp.w2.bias": (swiglu,),
                 p + "mlp.w3.weight": (d, swiglu), p + "mlp.w3.bias": (d,), p + "ls2.gamma": (d,)}
    keys |= {"visual_model.head.ln_final.weight": (d,), "visual_model.head.ln_final.bias": (d,)}
    if 2 * d != e:
        keys["visual_model.head.linear_projection.weight"] = (e // 2, d)
    t = "text_model.backbone."
    keys |= {t + "token_embedding.weight": (v, w), t + "positional_embedding": (config.text_context_length, w),
             t + "ln_final.weight": (w,), t + "ln_final.bias": (w,),
             "text_model.head.linear_projection.weight": (e, w)}
    for i in range(config.text_layers):
        p = f"{t}blocks.{i}."
        keys |= {p + "attention_norm.weight": (w,), p + "attention_norm.bias": (w,),
                 p + "attention.qkv.weight": (3 * w, w), p + "attention.proj.weight": (w, w),
                 p + "attention.proj.bias": (w,), p + "ffn_norm.weight": (w,), p + "ffn_norm.bias": (w,),
                 p + "feed_forward.fc1.weight": (4 * w, w), p + "feed_forward.fc1.bias": (4 * w,),
                 p + "feed_forward.fc2.weight": (w, 4 * w), p + "feed_forward.fc2.bias": (w,)}
    return keys


def random_official_state_dict(config: DinoTxtConfig) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return {k: torch.randn(shape, generator=generator) * 0.05 for k, shape in official_layout(config).items()}


def test_official_key_layout_loads_strictly(model):
    state_dict = random_official_state_dict(model.config)
    check_state_dict(model, state_dict)
    model.load_trainable_state_dict(state_dict)
    loaded = model.trainable_state_dict()
    assert loaded.keys() == state_dict.keys()
    assert all(torch.equal(loaded[k], state_dict[k]) for k in state_dict)


def test_corrupted_state_dict_names_the_keys(model):
    state_dict = random_official_state_dict(model.config)
    state_dict["visual_model.head.blocks.0.attn.qkv_renamed.weight"] = state_dict.pop(
        "visual_model.head.blocks.0.attn.qkv.weight"
    )
    state_dict["text_model.extra.bias"] = torch.zeros(3)
    with pytest.raises(DinoTxtKeyError) as info:
        model.load_trainable_state_dict(state_dict)
    message = str(info.value)
    assert "visual_model.head.blocks.0.attn.qkv.weight" in message  # missing
    assert "visual_model.head.blocks.0.attn.qkv_renamed.weight" in message  # unexpected
    assert "text_model.extra.bias" in message
    assert info.value.missing == ["visual_model.head.blocks.0.attn.qkv.weight"]
    assert sorted(info.value.unexpected) == sorted(
        ["visual_model.head.blocks.0.attn.qkv_renamed.weight", "text_model.extra.bias"]
    )
    wrong_shape = random_official_state_dict(model.config)
    wrong_shape["logit_scale"] = torch.zeros(2)
    with pytest.raises(DinoTxtKeyError, match=r"logit_scale \(model \(1,\), state dict \(2,\)\)"):
        check_state_dict(model, wrong_shape)


def test_key_error_lists_at_most_ten_names():
    error = DinoTxtKeyError([f"k{i:02d}" for i in range(25)], [])
    assert "25 missing keys" in str(error) and "k09" in str(error) and "k10" not in str(error)
    assert "15 more" in str(error)


def test_save_load_round_trip(tmp_path, model):
    model.backbone.save_pretrained(tmp_path / "tiny-dinov3")
    save_dinotxt(model, tmp_path / "tiny-dinotxt", backbone_ref="../tiny-dinov3")
    config = json.loads((tmp_path / "tiny-dinotxt" / "config.json").read_text())
    assert config["backbone"] == "../tiny-dinov3"
    assert config["backbone_sha256"] == backbone_sha256(model.backbone)
    loaded = load_dinotxt(tmp_path / "tiny-dinotxt")
    assert backbone_sha256(loaded.backbone) == backbone_sha256(model.backbone)
    assert not loaded.backbone.training and not any(p.requires_grad for p in loaded.backbone.parameters())
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(pixels), model.encode_image(pixels))
        assert torch.equal(loaded.patch_features(pixels), model.patch_features(pixels))
        ids = loaded.tokenize(CORPUS)
        assert torch.equal(ids, model.tokenize(CORPUS))
        assert torch.equal(loaded.encode_text(ids), model.encode_text(ids))
    assert torch.equal(loaded.logit_scale, model.logit_scale)
    # Saving again elsewhere keeps pointing at the same backbone.
    save_dinotxt(loaded, tmp_path / "copies" / "again")
    assert json.loads((tmp_path / "copies" / "again" / "config.json").read_text())["backbone"] == "../../tiny-dinov3"
    again = load_dinotxt(tmp_path / "copies" / "again", dtype=torch.bfloat16)
    assert again.logit_scale.dtype == torch.bfloat16
    assert again.encode_image(pixels).dtype == torch.bfloat16


def test_load_refuses_a_different_backbone(tmp_path, model):
    model.backbone.save_pretrained(tmp_path / "tiny-dinov3")
    save_dinotxt(model, tmp_path / "tiny-dinotxt", backbone_ref="../tiny-dinov3")
    other = tiny_backbone(seed=7)
    with pytest.raises(DinoTxtBackboneError, match="bit-identical"):
        load_dinotxt(tmp_path / "tiny-dinotxt", backbone=other)
    (tmp_path / "tiny-dinotxt" / "config.json").write_text(
        (tmp_path / "tiny-dinotxt" / "config.json").read_text().replace("../tiny-dinov3", "../gone")
    )
    with pytest.raises(FileNotFoundError, match="gone"):
        load_dinotxt(tmp_path / "tiny-dinotxt")


def test_load_reports_missing_files(tmp_path, model):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dinotxt(tmp_path / "nothing")
    (tmp_path / "partial").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_dinotxt(tmp_path / "partial")
    with pytest.raises(ValueError, match="backbone_ref"):
        save_dinotxt(model, tmp_path / "out")


def official_backbone_state_dict(hf: DINOv3ViTModel) -> dict[str, torch.Tensor]:
    """The official DINOv3 layout of a transformers backbone: fused qkv with a masked k bias."""
    sd = hf.state_dict()
    d = hf.config.hidden_size
    out = {
        "cls_token": sd["embeddings.cls_token"],
        "storage_tokens": sd["embeddings.register_tokens"],
        "mask_token": sd["embeddings.mask_token"].reshape(1, d),
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.bias"],
        "rope_embed.periods": 1.0 / hf.rope_embeddings.inv_freq,
        "norm.weight": sd["norm.weight"],
        "norm.bias": sd["norm.bias"],
    }
    for i in range(hf.config.num_hidden_layers):
        h, o = f"model.layer.{i}.", f"blocks.{i}."
        a = h + "attention."
        out |= {
            o + "norm1.weight": sd[h + "norm1.weight"], o + "norm1.bias": sd[h + "norm1.bias"],
            o + "norm2.weight": sd[h + "norm2.weight"], o + "norm2.bias": sd[h + "norm2.bias"],
            o + "attn.qkv.weight": torch.cat(
                [sd[a + "q_proj.weight"], sd[a + "k_proj.weight"], sd[a + "v_proj.weight"]]
            ),
            # A nonzero stored k bias, masked out as in the official checkpoints.
            o + "attn.qkv.bias": torch.cat([sd[a + "q_proj.bias"], torch.ones(d), sd[a + "v_proj.bias"]]),
            o + "attn.qkv.bias_mask": torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)]),
            o + "attn.proj.weight": sd[a + "o_proj.weight"], o + "attn.proj.bias": sd[a + "o_proj.bias"],
            o + "ls1.gamma": sd[h + "layer_scale1.lambda1"], o + "ls2.gamma": sd[h + "layer_scale2.lambda1"],
            o + "mlp.fc1.weight": sd[h + "mlp.up_proj.weight"], o + "mlp.fc1.bias": sd[h + "mlp.up_proj.bias"],
            o + "mlp.fc2.weight": sd[h + "mlp.down_proj.weight"], o + "mlp.fc2.bias": sd[h + "mlp.down_proj.bias"],
        }
    return out


def test_convert_official_backbone():
    hf = tiny_backbone(seed=3)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    official = official_backbone_state_dict(hf)
    converted = convert_official_backbone(official, image_size=32)
    assert converted.config.num_attention_heads == 2 and converted.config.num_register_tokens == 4
    assert backbone_sha256(converted) == backbone_sha256(hf)
    pixels = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        torch.testing.assert_close(converted(pixels).last_hidden_state, hf(pixels).last_hidden_state)
    official["blocks.1.attn.surprise"] = torch.zeros(1)
    del official["blocks.0.ls2.gamma"]
    with pytest.raises(DinoTxtKeyError) as info:
        convert_official_backbone(official)
    assert info.value.missing == ["blocks.0.ls2.gamma"]
    assert info.value.unexpected == ["blocks.1.attn.surprise"]


def test_load_official_file_set(tmp_path, model, merges):
    torch.save(official_backbone_state_dict(model.backbone), tmp_path / "backbone.pth")
    head_text = random_official_state_dict(model.config)
    torch.save(head_text, tmp_path / "head_text.pth")
    write_bpe_vocab(merges, tmp_path / "bpe.txt.gz")
    with pytest.raises(ValueError, match="bpe_vocab="):
        load_dinotxt(tmp_path / "head_text.pth", backbone=tmp_path / "backbone.pth")
    loaded = load_dinotxt(
        tmp_path / "head_text.pth", backbone=tmp_path / "backbone.pth", bpe_vocab=tmp_path / "bpe.txt.gz",
        config=model.config,
    )
    model.load_trainable_state_dict(head_text)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(pixels), model.encode_image(pixels))
        ids = loaded.tokenize(CORPUS)
        torch.testing.assert_close(loaded.encode_text(ids), model.encode_text(ids))
    # The loaded model remembers its backbone file, so it can be saved in the vslib format.
    save_dinotxt(loaded, tmp_path / "converted")
    assert json.loads((tmp_path / "converted" / "config.json").read_text())["backbone"] == "../backbone.pth"
    assert torch.equal(load_dinotxt(tmp_path / "converted").encode_image(pixels), loaded.encode_image(pixels))



def test_backbone_weights_compare_across_dtypes():
    backbone = tiny_backbone()
    fp32 = dinotxt_module.backbone_weights(backbone)
    as_bf16 = dinotxt_module.backbone_weights(backbone, dtype=torch.bfloat16)
    loaded_bf16 = dinotxt_module.backbone_weights(tiny_backbone().to(torch.bfloat16))
    key = "embeddings.patch_embeddings.weight"
    assert all(v.dtype == np.float32 for v in fp32.values()) and list(fp32) == sorted(fp32)
    assert not np.array_equal(fp32[key], as_bf16[key])  # bf16 rounds the weights
    assert all(np.array_equal(as_bf16[k], loaded_bf16[k]) for k in fp32)


def test_official_file_set_warns_about_extra_keys_and_refuses_missing_ones(tmp_path, model, merges):
    torch.save(official_backbone_state_dict(model.backbone), tmp_path / "backbone.pth")
    write_bpe_vocab(merges, tmp_path / "bpe.txt.gz")
    head_text = random_official_state_dict(model.config)
    extra = {**head_text, "visual_model.head.pos_scale": torch.ones(1), "text_model.mask": torch.zeros(3)}
    torch.save(extra, tmp_path / "extra.pth")
    files = dict(backbone=tmp_path / "backbone.pth", bpe_vocab=tmp_path / "bpe.txt.gz", config=model.config)
    with pytest.warns(dinotxt_module.DinoTxtExtraKeysWarning,
                      match="2 keys this model does not use.*text_model.mask, visual_model.head.pos_scale"):
        loaded = load_dinotxt(tmp_path / "extra.pth", **files)
    model.load_trainable_state_dict(head_text)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(pixels), model.encode_image(pixels))
    with pytest.raises(DinoTxtKeyError):  # a vslib directory stays strict
        model.load_trainable_state_dict(extra)
    missing = dict(extra)
    del missing["logit_scale"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(DinoTxtKeyError, match="1 missing keys: logit_scale"):
        load_dinotxt(tmp_path / "missing.pth", **files)
    wrong = {**head_text, "logit_scale": torch.zeros(2)}
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(DinoTxtKeyError, match="wrong shapes: logit_scale"):
        load_dinotxt(tmp_path / "wrong.pth", **files)
