#!/usr/bin/env bash
# Checks the docs a newcomer reads first:
#  1. every relative link in README.md and docs/*.md resolves to an existing file, and, when it
#     names a heading of a Markdown file (`file.md#heading`), to an existing heading (GitHub's
#     anchor rules); http(s) and mailto links are skipped, code blocks and code spans ignored;
#  2. the README's commands (the `scripts/…` lines of its shell blocks: scripts/demo.sh, then
#     scripts/test.sh) are the ones .ci/run runs, in the same order.
# Exits non-zero with one line per problem. Needs only bash and python3 (standard library).
# Usage: scripts/check-docs.sh
set -euo pipefail
cd "$(dirname "$0")/.."

python3 - README.md docs/*.md <<'PY'
import os, re, sys
from urllib.parse import unquote

problems = []
FENCE = re.compile(r"^\s{0,3}(```+|~~~+)")

def prose(text, spans=False):
    """The text with fenced code blocks blanked (line numbers kept) and, unless spans, code
    spans removed."""
    out, fence = [], None
    for line in text.split("\n"):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)[0] * 3
            out.append("")
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            out.append("")
        elif spans:
            out.append(line)
        else:
            out.append(re.sub(r"(`+)(?:(?!\1).)+?\1", lambda c: " " * len(c.group(0)), line))
    return "\n".join(out)

def code_blocks(text):
    """(info string, lines) of every fenced code block."""
    blocks, fence, info, lines = [], None, "", []
    for line in text.split("\n"):
        m = FENCE.match(line)
        if fence is None and m:
            fence, info, lines = m.group(1)[0] * 3, line.strip()[3:].strip(), []
        elif fence is not None:
            if line.strip().startswith(fence):
                blocks.append((info, lines))
                fence = None
            else:
                lines.append(line)
    return blocks

def slug(heading):
    h = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    h = re.sub(r"<[^>]+>", "", h).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")

anchor_cache = {}
def anchors(path):
    if path not in anchor_cache:
        text = prose(open(path, encoding="utf-8").read(), spans=True)
        seen, found = {}, set()
        for line in text.split("\n"):
            m = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
            if m:
                base = slug(m.group(1))
                n = seen.get(base, 0)
                seen[base] = n + 1
                found.add(base if n == 0 else f"{base}-{n}")
            found.update(re.findall(r"""<a\s+(?:name|id)=["']([^"']+)["']""", line))
        anchor_cache[path] = found
    return anchor_cache[path]

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)", re.S)
REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)

for doc in sys.argv[1:]:
    text = prose(open(doc, encoding="utf-8").read())
    targets = [(m.group(1), m.start()) for m in LINK.finditer(text)]
    targets += [(m.group(1), m.start()) for m in REFDEF.finditer(text)]
    for target, pos in targets:
        line = text.count("\n", 0, pos) + 1
        if not target or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            continue  # external (http:, https:, mailto:, …)
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(doc), unquote(path))) if path else doc
        if not os.path.exists(resolved):
            problems.append(f"{doc}:{line}: broken link: {target} ({resolved} does not exist)")
            continue
        if anchor and resolved.endswith(".md") and os.path.isfile(resolved):
            if unquote(anchor).lower() not in anchors(resolved):
                problems.append(f"{doc}:{line}: broken link: {target} (no heading #{anchor} in {resolved})")

# The README's commands against CI's.
def commands(lines):
    out = []
    for raw in lines:
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)+", "", line)  # VAR=value prefixes
        m = re.match(r"^(?:\./)?(scripts/[\w.-]+)(.*)$", line)
        if m:
            out.append((m.group(1), m.group(2).strip()))
    return out

readme = open("README.md", encoding="utf-8").read()
shells = [lines for info, lines in code_blocks(readme) if info.split(" ")[0] in ("", "sh", "bash", "shell", "console")]
readme_cmds = [c for lines in shells for c in commands(lines)]
ci_cmds = commands(open(".ci/run", encoding="utf-8").read().split("\n"))

readme_scripts = [s for s, _ in readme_cmds]
want = ["scripts/demo.sh", "scripts/test.sh"]
if readme_scripts != want:
    problems.append(f"README.md: its shell commands are {readme_scripts or 'none'}; expected exactly {want}, in that order")
ci_scripts = [s for s, _ in ci_cmds]
for script, args in readme_cmds:
    if script not in ci_scripts:
        problems.append(f"README.md: `{script}` is a README command but .ci/run does not run it")
expected_ci = [("scripts/demo.sh", "--exit"), ("scripts/test.sh", "")]
found = [c for c in ci_cmds if c in expected_ci]
if found != expected_ci:
    problems.append(f".ci/run: expected it to run `scripts/demo.sh --exit`, then `scripts/test.sh` (the README's commands); it runs {[' '.join(filter(None, c)) for c in ci_cmds]}")

if problems:
    print("check-docs: FAILED", file=sys.stderr)
    for p in problems:
        print("  " + p, file=sys.stderr)
    sys.exit(1)
print(f"check-docs: ok ({len(sys.argv) - 1} files; README commands = .ci/run's)")
PY
