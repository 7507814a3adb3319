import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded SmolLM2 tokenizer (real, offline)."""
    from transformers import AutoTokenizer
    from ftlab.models import embedded_folder
    tok = AutoTokenizer.from_pretrained(embedded_folder("smollm2-135m-instruct"))
    tok.pad_token = tok.pad_token or tok.eos_token
    return tok


@pytest.fixture
def tiny_model(tokenizer):
    """A 2-layer random Llama with the real tokenizer: for testing code paths only, never quality."""
    import torch
    from ftlab.models import tiny_test_model
    torch.manual_seed(0)
    return tiny_test_model(tokenizer)


@pytest.fixture
def tiny_folder(tiny_model, tokenizer, tmp_path):
    """The tiny model and the real tokenizer saved as a model folder: what cfg.model names and load_for loads."""
    folder = tmp_path / "tiny"
    tiny_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def load_script():
    """A script of scripts/ imported as a module, so that its functions are tested without running it."""
    import importlib.util
    from pathlib import Path

    def load(name: str):
        path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
