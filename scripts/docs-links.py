#!/usr/bin/env python3
"""Check the internal links and #anchors of the README (and other top-level
Markdown files) and of the built manual's HTML. External links (http:, https:,
mailto:) are not fetched. Exit 1 on the first run with any broken link.

usage: docs-links.py [--md FILE ...] [--html DIR]
"""
import argparse
import html.parser
import os
import re
import sys
from urllib.parse import unquote, urlsplit

EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def slug(text):
    """GitHub's heading anchor: lowercase, punctuation dropped, spaces to '-'."""
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[`*_]", "", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def strip_code(md):
    """Markdown without fenced blocks and inline code (links there are not links)."""
    out, fenced = [], False
    for line in md.split("\n"):
        if re.match(r"^\s*(```|~~~)", line):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def md_anchors(path):
    anchors, seen = set(), {}
    for line in strip_code(open(path, encoding="utf-8").read()).split("\n"):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            anchors.add(s if n == 0 else f"{s}-{n}")
    anchors.update(re.findall(r'id="([^"]+)"', open(path, encoding="utf-8").read()))
    return anchors


def check_md(path, problems):
    text = strip_code(open(path, encoding="utf-8").read())
    base = os.path.dirname(os.path.abspath(path))
    links = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    links += re.findall(r'<(?:img|a)\s[^>]*(?:src|href)="([^"]+)"', text)
    for link in links:
        if EXTERNAL.match(link):
            continue
        target, _, frag = link.partition("#")
        full = os.path.normpath(os.path.join(base, unquote(target))) if target else os.path.abspath(path)
        if not os.path.exists(full):
            problems.append(f"{path}: broken link {link} ({os.path.relpath(full)} does not exist)")
            continue
        if frag and full.endswith(".md") and frag not in md_anchors(full):
            problems.append(f"{path}: broken anchor {link} (no heading #{frag} in {os.path.relpath(full)})")
    return len(links)


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.refs = set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        for key in ("href", "src"):
            if a.get(key) is not None and tag in ("a", "img", "link", "script", "source", "iframe"):
                self.refs.append((tag, a[key]))


def check_html(root, problems):
    pages = {}
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".html"):
                p = Page()
                p.feed(open(os.path.join(d, f), encoding="utf-8").read())
                pages[os.path.normpath(os.path.join(d, f))] = p
    count = 0
    for path, page in pages.items():
        # mdBook's 404 page uses site-absolute links ("/…"), and the print page
        # repeats every page's links: both are checked through the pages themselves.
        if os.path.basename(path) in ("404.html", "print.html"):
            continue
        for tag, ref in page.refs:
            if EXTERNAL.match(ref) or ref.startswith("//"):
                continue
            count += 1
            parts = urlsplit(ref)
            target = unquote(parts.path)
            full = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target else path
            if os.path.isdir(full):
                full = os.path.join(full, "index.html")
            if not os.path.exists(full):
                problems.append(f"{os.path.relpath(path, root)}: broken {tag} {ref}")
                continue
            if parts.fragment and full.endswith(".html"):
                ids = pages[full].ids if full in pages else set()
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{os.path.relpath(path, root)}: broken anchor {ref}")
    return len(pages), count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--md", nargs="*", default=[])
    ap.add_argument("--html")
    args = ap.parse_args()
    problems = []
    md_links = sum(check_md(p, problems) for p in args.md)
    pages = html_links = 0
    if args.html:
        if not os.path.isdir(args.html):
            sys.exit(f"docs-links: {args.html} is not a directory: build the manual first (make docs)")
        pages, html_links = check_html(args.html, problems)
    for p in problems:
        print(p)
    print(f"docs-links: {len(args.md)} Markdown file(s), {md_links} link(s); "
          f"{pages} HTML page(s), {html_links} internal link(s); {len(problems)} broken",
          file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
