"""After converting: page-range documents joined, chunks (Docling's HybridChunker with an offline
approximate tokenizer, never a hub download), and the hub's offline mode."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from xenios_ai.extraction.models import DEFAULT_CHUNK_MAX_TOKENS, Chunk
from xenios_ai.hub import hub_offline

if TYPE_CHECKING:
    from docling_core.types.doc.document import DoclingDocument


def join_pages(documents: list[DoclingDocument]) -> DoclingDocument:
    """Concatenate page-range documents, keeping the original page numbers (concatenate renumbers from 1)."""
    if len(documents) == 1:
        return documents[0]
    from docling_core.types.doc.common.content_layer import ContentLayer  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
    from docling_core.types.doc.document import DoclingDocument  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
    from docling_core.types.doc.items.node import DocItem  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    original = [page for document in documents for page in sorted(document.pages)]
    joined = DoclingDocument.concatenate(documents)
    mapping = dict(zip(sorted(joined.pages), original, strict=True))
    joined.pages = {mapping[number]: page for number, page in joined.pages.items()}
    for number, page in joined.pages.items():
        page.page_no = number
    for item, _level in joined.iterate_items(
        traverse_pictures=True, included_content_layers=set(ContentLayer)
    ):
        if isinstance(item, DocItem):
            for prov in item.prov:
                prov.page_no = mapping[prov.page_no]
    return joined


def chunk(document: DoclingDocument, max_tokens: int | None) -> list[Chunk]:
    from docling_core.transforms.chunker.doc_chunk import DocMeta  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only
    from docling_core.transforms.chunker.hybrid_chunker import HybridChunker  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    tokenizer = approx_tokenizer(max_tokens or DEFAULT_CHUNK_MAX_TOKENS)
    chunks = []
    for chunk in HybridChunker(tokenizer=tokenizer).chunk(document):
        meta = chunk.meta
        assert isinstance(meta, DocMeta)  # the hybrid chunker yields DocChunks
        pages = sorted({prov.page_no for item in meta.doc_items for prov in item.prov})
        chunks.append(Chunk(text=chunk.text, headings=list(meta.headings or []), pages=pages))
    return chunks


_TOKEN = re.compile(r"\w+|[^\w\s]")


def approx_tokenizer(max_tokens: int) -> Any:
    """A chunker tokenizer of `max_tokens` counting words and punctuation (see `approx_tokenizer_class`)."""
    return approx_tokenizer_class()(max_tokens=max_tokens)


@functools.cache
def approx_tokenizer_class() -> Any:
    """A docling-core tokenizer that counts words and punctuation marks; needs no model and no hub.

    BPE tokenizers count about 1.3 tokens per English word, so leave a margin when a chunk must fit an
    embedding model's window. (The default HybridChunker tokenizer downloads one from the hub: 52 s of
    retries offline.)
    """
    from docling_core.transforms.chunker.tokenizer.base import BaseTokenizer  # noqa: PLC0415 - heavy engine: loaded lazily, by workers only

    class _ApproxTokenizer(BaseTokenizer):
        max_tokens: int

        def count_tokens(self, text: str) -> int:
            return len(_TOKEN.findall(text))

        def get_max_tokens(self) -> int:
            return self.max_tokens

        def get_tokenizer(self) -> Callable[[str], int]:
            return self.count_tokens  # semchunk accepts a token counter

    return _ApproxTokenizer


def force_hub_offline() -> None:
    """No model lookup may wait on the Hugging Face hub: set HF_HUB_OFFLINE, also if the hub is imported.
    Also silence transformers' advice that torch is missing (normal here), which it prints to stderr."""
    hub_offline(force=True)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
