"""`golf tokenize`: a corpus -> tokenizer, token shards and manifest."""

from pathlib import Path

import click

from golfcli.options import CONTEXT, LazyBar, params_epilog, stage_options
from golfcli.params import describe_source, load_params
from stages.data.corpus import load_corpus
from stages.data.tokenize import TokenizeParams, tokenize
from stages.files import check_outputs

SECTIONS = {"tokenize": TokenizeParams}


@click.command(name="tokenize", context_settings=CONTEXT, epilog=params_epilog(SECTIONS))
@click.option("--corpus", default="stdlib-docs", metavar="SOURCE",
              help="'stdlib-docs' (embedded), a .jsonl file of {\"text\": ...}, or a folder of .txt.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Data directory to write (replaced as a whole).")
@click.option("--tokenizer", "tokenizer_model", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Reuse this SentencePiece model instead of training one.")
@stage_options
def command(corpus, out_dir, tokenizer_model, params_file, overrides):
    """Train a tokenizer (or reuse one) and write token shards + manifest.json.

    Writes OUT/tokenizer.model, OUT/train_000000.bin..., OUT/val_000000.bin... (the official
    parameter-golf shard format) and OUT/manifest.json. The validation split is fixed by a hash of
    each document's text.
    """
    check_outputs([out_dir], [corpus if Path(corpus).exists() else None, tokenizer_model])
    p = load_params(params_file, SECTIONS, overrides)["tokenize"]
    docs = load_corpus(corpus)
    n = min(len(docs.docs), p.max_docs or len(docs.docs))
    with LazyBar(n, "encoding", "doc") as bar:
        m = tokenize(docs, p, out_dir, tokenizer_model, on_progress=bar.update)
    click.echo(f"{out_dir}: {docs.name}, {m['split']['documents']} documents, "
               f"vocab {m['tokenizer']['vocab_size']}, "
               f"train {m['train']['documents']} docs / {m['train']['tokens']:,} tokens, "
               f"val {m['val']['documents']} docs / {m['val']['tokens']:,} tokens / "
               f"{m['val']['text_bytes']:,} bytes (byte table: {m['val']['table_bytes']:,})")
    click.echo(describe_source(params_file, tuple(SECTIONS)))
