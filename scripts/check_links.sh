#!/usr/bin/env bash
# Check the relative links of the project's Markdown: every `](path)` and `](path#anchor)` in
# *.md, docs/*.md and bench/*.md must name a file or directory that exists, and an anchor must
# name a heading of that file (GitHub's rule: lowercase, punctuation dropped, spaces to
# hyphens). Links inside code (fenced blocks, `inline`) and absolute URLs are not checked.
# Prints one line per broken link and exits 1 if there is any; no network.
set -euo pipefail
cd "$(dirname "$0")/.."

shopt -s nullglob
files=(*.md docs/*.md bench/*.md)

python3 - "${files[@]}" <<'PY'
import os, re, sys

LINK = re.compile(r'\]\(([^)\s]+)(?:\s+"[^"]*")?\)')

def blank(m):
    """A code block or span as blank space, keeping its line breaks (for line numbers)."""
    return re.sub(r'[^\n]', ' ', m.group(0))

def prose(text):
    """The text with fenced code blocks and inline code spans blanked out."""
    text = re.sub(r'^(```|~~~).*?^\1[^\n]*$', blank, text, flags=re.S | re.M)
    return re.sub(r'`[^`\n]*`', blank, text)

def anchors(path):
    """GitHub's heading ids for a Markdown file (duplicates get -1, -2, ...)."""
    seen, ids = {}, set()
    text = re.sub(r'^(```|~~~).*?^\1[^\n]*$', blank, open(path, encoding='utf-8').read(),
                  flags=re.S | re.M)
    for m in re.finditer(r'^#{1,6}\s+(.*?)\s*#*\s*$', text, re.M):
        slug = re.sub(r'[^\w\- ]', '', m.group(1).strip().lower()).replace(' ', '-')
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f'{slug}-{n}')
    return ids

broken = 0
for md in sys.argv[1:]:
    text = prose(open(md, encoding='utf-8').read())
    for m in LINK.finditer(text):
        target = m.group(1)
        if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I):  # http:, https:, mailto:, ...
            continue
        path, _, anchor = target.partition('#')
        dest = os.path.normpath(os.path.join(os.path.dirname(md), path)) if path else md
        line = text.count('\n', 0, m.start()) + 1
        if not os.path.exists(dest):
            print(f'{md}:{line}: {target}: no such file {dest}')
            broken += 1
        elif anchor and dest.endswith('.md') and anchor not in anchors(dest):
            print(f'{md}:{line}: {target}: no heading #{anchor} in {dest}')
            broken += 1
if broken:
    print(f'{broken} broken link(s)')
    sys.exit(1)
print(f'links ok in {len(sys.argv) - 1} Markdown files')
PY
