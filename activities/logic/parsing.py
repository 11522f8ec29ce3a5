"""Turn uploaded bytes into plain text: .txt, .md, .html and .pdf (pypdf). Errors say what is wrong."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import PurePath

# What each accepted type is called on the wire; file suffixes map onto these.
MIME_TYPES = {
    "text/plain": (".txt", ".text"),
    "text/markdown": (".md", ".markdown"),
    "text/html": (".html", ".htm"),
    "application/pdf": (".pdf",),
}


class DocumentRejected(ValueError):
    """The upload cannot become a document. ``code`` is machine-readable, ``status`` the HTTP answer."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def mime_type_of(filename: str | None, declared: str | None) -> str:
    """The accepted type an upload is, from its declared content type or else its file name."""
    if declared:
        base = declared.split(";")[0].strip().lower()
        if base in MIME_TYPES:
            return base
        if base not in ("application/octet-stream", ""):
            raise DocumentRejected(
                "unsupported_type",
                f"{base} is not supported; send one of {', '.join(MIME_TYPES)}",
                415,
            )
    suffix = PurePath(filename or "").suffix.lower()
    for mime, suffixes in MIME_TYPES.items():
        if suffix in suffixes:
            return mime
    raise DocumentRejected(
        "unsupported_type",
        f"cannot tell the type of {filename or 'the upload'!r}; use .txt, .md, .html or .pdf",
        415,
    )


def check_pdf(content: bytes) -> int:
    """Open the PDF (no text extraction) so a broken file is refused at the door; its page count."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(content))
        return len(reader.pages)
    except (PyPdfError, ValueError, KeyError, OSError) as exc:
        raise DocumentRejected("broken_pdf", f"the PDF cannot be read: {exc}") from exc


def parse(content: bytes, mime_type: str) -> str:
    """Plain text of the document, whitespace tidied; DocumentRejected when nothing usable is inside."""
    if mime_type == "application/pdf":
        text = _pdf_text(content)
    else:
        try:
            raw = content.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DocumentRejected("not_utf8", f"the text is not UTF-8 (byte {exc.start})") from exc
        text = _html_text(raw) if mime_type == "text/html" else raw
    text = _tidy(text)
    if not text:
        raise DocumentRejected("empty_document", "the document has no text")
    return text


def _pdf_text(content: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(content))
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except (PyPdfError, ValueError, KeyError, OSError) as exc:
        raise DocumentRejected("broken_pdf", f"the PDF cannot be read: {exc}") from exc


class _TextOfHtml(HTMLParser):
    SKIP = frozenset({"script", "style", "noscript", "template", "head"})
    BLOCK = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def _html_text(raw: str) -> str:
    parser = _TextOfHtml()
    parser.feed(raw)
    parser.close()
    return "".join(parser.parts)


def _tidy(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
