"""Lays the stand-in model files of ``models/`` out as a Hugging Face hub cache.

    python make_hf_cache.py HUB_CACHE_DIR

``models/ORG/NAME/*`` becomes ``HUB_CACHE_DIR/models--ORG--NAME/snapshots/<rev>/*`` with
``refs/main`` naming ``<rev>``, so that with ``HF_HUB_CACHE=HUB_CACHE_DIR`` and
``HF_HUB_OFFLINE=1`` vLLM resolves ``ORG/NAME`` to these files, under its real name,
without the network. Only configuration (and tokenizer stand-ins): no weights. The
revision is a fixed fake (the SHA-1 of the repository id); re-running overwrites.

A ``tokenizer_stub.json`` (vocabulary size, special tokens and their ids) becomes a
``tokenizer.json``: a word-level tokenizer (``tokenizers`` serialization, written as
plain JSON, so no third-party module is needed here) whose other ids are placeholders.
"""

import hashlib
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def tokenizer_json(stub: dict) -> dict:
    """A ``tokenizers`` WordLevel serialization with ``stub``'s size and special ids."""
    special = stub["special_tokens"]
    by_id = {i: tok for tok, i in special.items()}
    vocab = {by_id.get(i, f"<tok{i}>"): i for i in range(stub["vocab_size"])}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": tok,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for tok, i in sorted(special.items(), key=lambda kv: kv[1])
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": stub["unk_token"]},
    }


def main(dest: str) -> None:
    cache = Path(dest)
    models = HERE / "models"
    for org in sorted(p for p in models.iterdir() if p.is_dir()):
        for model in sorted(p for p in org.iterdir() if p.is_dir()):
            repo_id = f"{org.name}/{model.name}"
            rev = hashlib.sha1(repo_id.encode()).hexdigest()
            root = cache / f"models--{org.name}--{model.name}"
            snap = root / "snapshots" / rev
            if snap.exists():
                shutil.rmtree(snap)
            shutil.copytree(model, snap, ignore=shutil.ignore_patterns("tokenizer_stub.json"))
            stub = model / "tokenizer_stub.json"
            if stub.exists():
                tok = tokenizer_json(json.loads(stub.read_text()))
                (snap / "tokenizer.json").write_text(json.dumps(tok))
            (root / "refs").mkdir(parents=True, exist_ok=True)
            (root / "refs" / "main").write_text(rev)
            print(f"{repo_id} -> {snap}")


if __name__ == "__main__":
    main(sys.argv[1])
