"""Tiny, randomly initialised models for smoke tests and examples (no download needed).

`make_tiny_bundle` writes a complete bundle (tiny BERT sentence encoder, tiny GPT-2 or Llama decoder
with a byte-level BPE tokenizer trained on a few sentences, random denoiser, prompt generator and one
random binary classifier). Its text is gibberish; it exists to exercise every code path in seconds.
"""

import tempfile
from pathlib import Path

import torch

from dglm_cli.bundle import save_bundle
from dglm_cli.classifier import ClassifierConfig, LinearClassifier
from dglm_cli.decoder import DecoderConfig
from dglm_cli.denoiser import Denoiser, DenoiserConfig
from dglm_cli.encoder import EncoderConfig, LatentStats
from dglm_cli.loaders import save_lm
from dglm_cli.prompt_generator import PromptGenerator, PromptGeneratorConfig

SENTENCES = [
    "The restaurant on the corner serves the best soup in town.",
    "I loved every minute of this wonderful film.",
    "The service was slow and the food was cold.",
    "Stocks fell sharply after the announcement on Monday.",
    "What a terrible, boring waste of time.",
    "The new phone has a bright screen and a long battery life.",
    "She smiled and said the weather would be lovely tomorrow.",
    "The committee will meet again next week to discuss the budget.",
    "This product broke after two days and support never answered.",
    "An honest, moving story with a brilliant cast.",
    "The train was late again this morning.",
    "We walked along the river and watched the sun go down.",
    "Prices of coffee and tea rose for the third month in a row.",
    "The book is dull, long and badly written.",
    "Our team won the final match in the last minute!",
    "He fixed the old bicycle and rode it to school.",
]
ENCODER_DIM = 32
DECODER_FAMILIES = ("gpt2", "llama")
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]


def tiny_bpe_tokenizer(vocab_size: int = 300):
    """A byte-level BPE tokenizer trained on SENTENCES, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|pad|>")


def tiny_lm(family: str = "gpt2", seed: int = 0, width: int = 48):
    """(model, tokenizer): a 2-layer randomly initialised causal LM of the given family."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_bpe_tokenizer()
    common = dict(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    if family == "gpt2":
        config = GPT2Config(n_embd=width, n_layer=2, n_head=4, n_positions=256, bos_token_id=tokenizer.eos_token_id, **common)
        model = GPT2LMHeadModel(config)
    elif family == "llama":
        config = LlamaConfig(
            hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, **common,
        )
        model = LlamaForCausalLM(config)
    else:
        raise ValueError(f"unknown tiny decoder family {family!r}; choose from {', '.join(DECODER_FAMILIES)}")
    return model.eval(), tokenizer


ENCODER_FAMILIES = ("bert", "t5")


def save_tiny_lm(directory: Path, family: str = "gpt2", seed: int = 0) -> Path:
    """A tiny causal LM and its tokenizer saved as a Hugging Face model directory."""
    save_lm(Path(directory), *tiny_lm(family, seed))
    return Path(directory)


def tiny_sentence_encoder(seed: int = 0, dim: int = ENCODER_DIM, family: str = "bert"):
    """A sentence-transformers model: tiny random BERT or T5 encoder -> mean pooling -> L2 normalisation."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast, T5Config, T5EncoderModel

    if family not in ENCODER_FAMILIES:
        raise ValueError(f"unknown tiny encoder family {family!r}; choose from {', '.join(ENCODER_FAMILIES)}")
    words = sorted({w.strip(".,!?").lower() for s in SENTENCES for w in s.split()} - {""})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *".,!?'", *"abcdefghijklmnopqrstuvwxyz0123456789", *words]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
        tokenizer = BertTokenizerFast(vocab_file=str(Path(tmp) / "vocab.txt"))
        torch.manual_seed(seed)
        if family == "bert":
            config = BertConfig(
                vocab_size=len(tokenizer), hidden_size=dim, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=2 * dim, max_position_embeddings=128,
            )
            BertModel(config).save_pretrained(tmp)
        else:
            config = T5Config(vocab_size=len(tokenizer), d_model=dim, d_kv=dim // 4, d_ff=2 * dim, num_layers=2, num_heads=4)
            T5EncoderModel(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        transformer = models.Transformer(tmp, max_seq_length=64)
    modules = [transformer, models.Pooling(dim, pooling_mode="mean"), models.Normalize()]
    return SentenceTransformer(modules=modules, device="cpu")


def bag_of_words_encoder(vocabulary: list[str]):
    """A sentence-transformers bag-of-words encoder (one dimension per word, L2-normalised counts).

    Its embedding says exactly which words a text contains, which makes it a transparent encoder for
    checking that a trained soft prompt carries the latent's information.
    """
    from sentence_transformers import SentenceTransformer, models

    bag = models.BoW(vocab=vocabulary, word_weights={w: 1.0 for w in vocabulary}, unknown_word_weight=0.0, cumulative_term_frequency=True)
    return SentenceTransformer(modules=[bag, models.Normalize()], device="cpu")


def tiny_components(decoder_family: str = "gpt2", seed: int = 0, prompt_length: int = 4) -> dict:
    """Everything `save_bundle` needs, randomly initialised."""
    encoder_model = tiny_sentence_encoder(seed)
    lm, tokenizer = tiny_lm(decoder_family, seed)
    lm_dim = lm.get_input_embeddings().embedding_dim
    torch.manual_seed(seed)
    embeddings = encoder_model.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True).float()
    denoiser = Denoiser(DenoiserConfig(latent_dim=ENCODER_DIM, dim=32, depth=2, dim_head=16, num_tokens=4))
    prompt_generator = PromptGenerator(
        PromptGeneratorConfig(latent_dim=ENCODER_DIM, lm_dim=lm_dim, prompt_length=prompt_length, dim=32, depth=1, dim_head=16)
    )
    classifier = LinearClassifier(ClassifierConfig(labels=["negative", "positive"], embedding_dim=ENCODER_DIM))
    torch.nn.init.normal_(classifier.weight, std=3.0)
    return dict(
        encoder_config=EncoderConfig({"kind": "embedded", "path": "encoder/model"}, ENCODER_DIM),
        encoder_model=encoder_model,
        stats=LatentStats.fit(embeddings),
        denoiser=denoiser.eval(),
        prompt_generator=prompt_generator.eval(),
        decoder_config=DecoderConfig({"kind": "embedded", "path": "decoder/lm"}, lm_dim, fine_tuned=True),
        lm=(lm, tokenizer),
        classifiers={"tiny-sentiment": classifier},
    )


CARD = """# Tiny random dglm bundle

Randomly initialised components for smoke tests and examples: a 2-layer BERT sentence encoder
({dim}-d), a 2-layer {family} decoder with a byte-level BPE tokenizer trained on {n} sentences, an
untrained denoiser and prompt generator, and a random binary classifier `tiny-sentiment`
(labels `negative`, `positive`). Its output is gibberish by construction. Made by `dglm bundle tiny`.
"""


def make_tiny_bundle(path: Path, decoder_family: str = "gpt2", seed: int = 0, overwrite: bool = False) -> Path:
    card = CARD.format(dim=ENCODER_DIM, family=decoder_family, n=len(SENTENCES))
    info = {"kind": "tiny-random", "seed": seed, "decoder_family": decoder_family}
    return save_bundle(Path(path), **tiny_components(decoder_family, seed), card=card, info=info, overwrite=overwrite)
