"""Text encoder wrapper: the bundled MiniLM offline, any local HF encoder, masks, pooling, the cache."""

import socket

import pytest
import torch
from polydiff.core.text import TextEncoder, TextEncoderError, default_encoder_path


@pytest.fixture(scope="module")
def no_network():
    """Any attempt to open a connection fails the test (and HF is told it is offline)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        before = torch.get_num_threads()
        torch.set_num_threads(1)  # a small model on a shared machine: one thread is faster
        yield
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def minilm(no_network):
    return TextEncoder().load()


def test_minilm_loads_offline_and_gives_tokens_mask_pooled(minilm):
    cond = minilm(["a person walks forward", "jump"])
    assert minilm.dim == 384
    assert cond.tokens.shape[0] == 2 and cond.tokens.shape[2] == 384 and cond.pooled.shape == (2, 384)
    assert torch.equal(cond.tokens[~cond.mask], torch.zeros(int((~cond.mask).sum()), 384))  # padding is 0


def test_mask_counts_the_tokens_the_tokenizer_makes(minilm):
    prompts = ["a person walks forward", "jump", "the quick brown fox jumps over the lazy dog twice"]
    cond = minilm(prompts)
    expected = [len(minilm.tokenizer.tokenize(p)) + 2 for p in prompts]  # + [CLS] and [SEP]
    assert cond.mask.sum(1).tolist() == expected
    assert cond.mask.shape[1] == max(expected)
    long = TextEncoder(max_length=8).load()
    assert long(" ".join(["word"] * 50)).mask.sum().item() == 8  # truncated at max_length


def test_pooled_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    prompts = ["A man is playing a guitar.", "a dog runs in the park"]
    reference = st.SentenceTransformer(str(default_encoder_path()), device="cpu").encode(
        prompts, convert_to_tensor=True)
    ours = minilm(prompts).pooled
    assert torch.allclose(ours, reference.float(), atol=1e-4)
    assert torch.allclose(ours.norm(dim=-1), torch.ones(2), atol=1e-5)  # MiniLM's Normalize module


def test_deterministic_and_independent_of_batch(minilm):
    a = TextEncoder().load()(["a person waves with the left hand"])
    b = minilm(["jump", "a person waves with the left hand", "sit down slowly on a chair"])
    assert torch.allclose(a.pooled[0], b.pooled[1], atol=1e-5)
    assert torch.allclose(a.tokens[0], b.tokens[1, : a.tokens.shape[1]], atol=1e-5)
    again = TextEncoder().load()(["a person waves with the left hand"])
    assert torch.equal(a.tokens, again.tokens) and torch.equal(a.pooled, again.pooled)


def test_paraphrases_are_closer_than_unrelated_sentences(minilm):
    p = minilm(["A man is playing a guitar.", "Someone plays the guitar.",
                "The stock market fell sharply today.", "A person walks slowly to the left.",
                "Somebody strolls leftwards at a slow pace."]).pooled
    cos = p @ p.T
    assert cos[0, 1] > cos[0, 2] + 0.3 and cos[0, 1] > cos[0, 3] + 0.3
    assert cos[3, 4] > cos[3, 2] + 0.3 and cos[3, 4] > cos[3, 0] + 0.3


def test_cache_returns_identical_tensors_without_reencoding(no_network):
    enc = TextEncoder(cache_size=3)
    first = enc(["walk", "run"])
    assert enc.n_encoded == 2
    second = enc(["run", "walk", "walk"])
    assert enc.n_encoded == 2  # all three came from the cache
    assert torch.equal(second.tokens[1, :3], first.tokens[0, :3]) and torch.equal(second.pooled[0], first.pooled[1])
    enc.max_length = 2  # another max length is another key
    enc(["walk"])
    assert enc.n_encoded == 3
    enc.max_length = 77
    enc(["kick", "turn"])  # cache holds 3: (walk, 77) is now the least recently used and goes
    enc(["walk"])
    assert enc.n_encoded == 6


def test_missing_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "no_such_encoder"
    with pytest.raises(TextEncoderError, match="no_such_encoder.*not found.*save_pretrained"):
        TextEncoder(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextEncoderError, match="config.json"):
        TextEncoder(tmp_path / "empty")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random 2-layer BERT with a 12-word vocabulary, saved like any Hugging Face model folder."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny_bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "man", "plays", "the", "guitar", "dog", "runs"]
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    BertModel(config).eval().save_pretrained(folder)
    return folder


def test_any_local_encoder_through_the_same_wrapper(tiny_bert, no_network):
    from transformers import BertModel

    enc = TextEncoder(tiny_bert)
    assert enc.dim == 32 and enc._model is None  # size known from config.json, nothing loaded yet
    cond = enc(["a man plays the guitar", "a dog runs"])
    assert cond.tokens.shape == (2, 7, 32) and cond.mask.sum(1).tolist() == [7, 5]
    assert not enc.normalize  # no sentence-transformers modules.json: plain mean pooling
    # reference: the same model run directly on the hand-tokenised ids ([CLS]=2, [SEP]=3)
    ids = torch.tensor([[2, 5, 6, 7, 8, 9, 3]])
    with torch.no_grad():
        ref = BertModel.from_pretrained(tiny_bert, local_files_only=True).eval()(input_ids=ids).last_hidden_state
    assert torch.allclose(cond.tokens[0], ref[0], atol=1e-5)
    assert torch.allclose(cond.pooled[0], ref[0].mean(0), atol=1e-5)


def _tiny_folder(folder, model):
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "man", "plays", "the", "guitar", "dog", "runs"]
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["clip", "t5"])
def test_clip_and_t5_folders_load_their_text_encoder(kind, tmp_path, no_network):
    from transformers import CLIPConfig, CLIPModel, CLIPTextModel, T5Config, T5EncoderModel, T5Model

    torch.manual_seed(0)
    if kind == "clip":  # a full CLIP folder (text + vision towers): only the text tower is loaded
        tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
        config = CLIPConfig(text_config=dict(vocab_size=12, max_position_embeddings=16, **tower),
                            vision_config=dict(image_size=32, patch_size=16, **tower), projection_dim=16)
        folder, want = _tiny_folder(tmp_path, CLIPModel(config)), CLIPTextModel
    else:  # an encoder-decoder folder: only the encoder stack is loaded
        config = T5Config(vocab_size=12, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2)
        folder, want = _tiny_folder(tmp_path, T5Model(config)), T5EncoderModel
    enc = TextEncoder(folder)
    assert enc.dim == 32
    cond = enc(["a man plays the guitar", "a dog runs"])
    assert isinstance(enc.model, want) and cond.tokens.shape == (2, 7, 32) and cond.mask.sum(1).tolist() == [7, 5]
    with torch.no_grad():
        ref = want.from_pretrained(folder, local_files_only=True).eval()(
            input_ids=torch.tensor([[2, 5, 10, 11, 3]])).last_hidden_state  # [CLS] a dog runs [SEP]
    assert torch.allclose(cond.tokens[1, :5], ref[0], atol=1e-5)


def test_weights_that_do_not_fit_the_config_are_a_clear_error(tmp_path, no_network):
    import json

    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=12, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    folder = _tiny_folder(tmp_path, BertModel(config))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] = 2  # the config now asks for a layer the weights do not have
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TextEncoderError, match="lack .* tensors"):
        TextEncoder(folder).encode("a man")
