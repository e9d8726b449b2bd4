"""Text cleaning: unicode and whitespace normalization, HTML to text, PII redaction, content hashes."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_LOOKS_HTML = re.compile(r"<(html|body|div|p|br|span|a|table|h[1-6]|ul|li|script|style)\b", re.I)
_BOILERPLATE_TAGS = ("script", "style", "noscript", "nav", "header", "footer", "aside", "form", "iframe", "svg",
                     "template")
_BLOCK_TAGS = ("p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article",
               "blockquote", "pre", "table", "ul", "ol")


def normalize_text(text: str) -> str:
    """NFKC, control characters removed, runs of spaces folded, paragraph breaks kept as one blank line."""
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def looks_like_html(text: str) -> bool:
    return bool(_LOOKS_HTML.search(text[:5000]))


def html_to_text(html: str) -> tuple[str, str]:
    """(title, body text) of an HTML page, with scripts, styles, navigation, headers and footers removed."""
    from selectolax.lexbor import LexborHTMLParser as HTMLParser

    tree = HTMLParser(html)
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node else ""
    for tag in _BOILERPLATE_TAGS:
        for node in tree.css(tag):
            node.decompose()
    root = tree.css_first("main") or tree.css_first("article") or tree.body or tree.root
    if root is None:
        return title, ""
    for tag in _BLOCK_TAGS:
        for node in root.css(tag):
            node.insert_after("\n\n")
    return title, root.text(separator=" ", strip=False)


# ---------------------------------------------------------------- PII

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_PHONE = re.compile(r"(?<![\w.+-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[.-])\d{3,4}[.-]\d{3,5}(?![\w-]|[ .]\d)")


def luhn_ok(digits: str) -> bool:
    """Luhn checksum of a digit string."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN (spaces ignored)."""
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def redact_pii(text: str) -> tuple[str, dict[str, int]]:
    """Replace emails, IBANs, Luhn-valid card numbers and phone numbers; returns the text and counts per kind."""
    counts = {"email": 0, "iban": 0, "card": 0, "phone": 0}

    def sub(kind: str, pattern: re.Pattern[str], check=None):  # noqa: ANN001
        def repl(m: re.Match[str]) -> str:
            if check is not None and not check(m.group(0)):
                return m.group(0)
            counts[kind] += 1
            return f"[{kind.upper()}]"

        return lambda t: pattern.sub(repl, t)

    text = sub("email", _EMAIL)(text)
    text = sub("iban", _IBAN, iban_ok)(text)
    text = sub("card", _CARD, lambda s: luhn_ok(re.sub(r"\D", "", s)))(text)
    text = sub("phone", _PHONE, lambda s: 7 <= len(re.sub(r"\D", "", s)) <= 15)(text)
    return text, counts


def content_hash(title: str, text: str, length: int = 32) -> str:
    """The document version: sha256 of the cleaned title and text."""
    return hashlib.sha256(f"{title}\x1f{text}".encode()).hexdigest()[:length]
