"""Every `multitask-mx ...` command shown in README.md and docs/*.md parses with the real CLI parser.

The guide cannot drift from the CLI: a renamed or removed flag, an invalid choice or a misspelt command in a
code block fails here. Placeholders are allowed: `...` (the rest of a command), upper-case values (`DIR`,
`LIST.lst`) where a typed flag expects something else, and synopsis lines with `[--flag VALUE]` parts, whose
flags are checked to exist. Fast: builds the parsers, runs nothing.
"""
import contextlib
import glob
import io
import os
import re
import shlex

import pytest

from multitask_mx import cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
# the command word where a shell command starts: at the line's start (after VAR=value settings), after && or ;,
# or as a path ending in bin/ (.venv/bin/multitask-mx, ExecStart=/srv/.../bin/multitask-mx)
START = re.compile(r"(?:^\s*(?:[A-Z_]+=\S*\s+)*|&&\s*|;\s*|bin/)(?:multitask-mx|python3? -m multitask_mx)\s")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(?:[.,|][A-Za-z0-9_]+)*$")  # DIR, LIST.lst, N, FILE.params, KEY=VALUE
PARSER = cli.build_parser()


def documents():
    """README.md and every docs/*.md, as paths relative to the repository."""
    return ["README.md"] + sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))


def shown_commands(text):
    """[(line number, words after `multitask-mx`)] of every command in the text's code blocks."""
    found = []
    for block in FENCE.finditer(text):
        if block.group(0).startswith(("```python", "```json", "```ini")):
            continue
        number, pending, pending_at = text.count("\n", 0, block.start(1)), "", 0
        for raw in block.group(1).split("\n"):
            number += 1
            pending_at = pending_at or number
            if raw.endswith("\\"):  # a continuation line: join it with the next
                pending += raw[:-1] + " "
                continue
            line, pending, at, pending_at = pending + raw, "", pending_at, 0
            match = START.search(line)
            if match and not line.lstrip().startswith("#"):
                found.append((at, shlex.split(line[match.end():], comments=True)))
    return found


@contextlib.contextmanager
def _optional_flags(command):
    """Within: ``command``'s required flags are optional, so an elided command's other flags are still checked."""
    actions = [a for a in _subparser(command)._actions if a.required and a.option_strings] if command else []
    for action in actions:
        action.required = False
    try:
        yield
    finally:
        for action in actions:
            action.required = True


def _parse(words, relaxed=False):
    """argparse's error message for ``words`` (None when they parse)."""
    err = io.StringIO()
    command = words[0] if relaxed and words and words[0] in _commands() else None
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), _optional_flags(command):
            PARSER.parse_args(words)
    except SystemExit as exc:
        return None if exc.code == 0 else err.getvalue().strip().splitlines()[-1]
    return None


def _commands():
    return PARSER._subparsers._group_actions[0].choices


def _subparser(command):
    return _commands()[command]


def _flags_of(command):
    return set(_subparser(command)._option_string_actions)


def problem(words):
    """Why ``words`` (a command line after `multitask-mx`) does not parse, or None."""
    if words and words[0] == "launch" and "--" in words:  # launch's own flags, then the train command
        cut = words.index("--")
        return _problem(words[:cut] + ["--", "train"]) or _problem(words[cut + 1:])
    return _problem(words)


def _problem(words):
    # elided ("...") or filled in from a run's config.json (--config): required flags may be missing
    elided = "--config" in words or any(w.startswith("...") or w.endswith("...") for w in words)
    words = _without_elisions(words)
    if any(w.startswith("[") for w in words):  # a synopsis: every flag it names must exist
        if words[0] not in _commands():
            return "no command %r" % words[0]
        named = {m for w in words for m in re.findall(r"(?<![\w-])--?[a-zA-Z][\w-]*", w)}
        missing = sorted(named - _flags_of(words[0]) - {"--"})
        return "unknown flag(s) %s" % ", ".join(missing) if missing else None
    message = _parse(words, relaxed=elided)
    if message is None:
        return None
    if elided and "the following arguments are required" in message:
        return None
    value = re.search(r"invalid .*?value: '([^']*)'", message)
    if value and PLACEHOLDER.match(value.group(1)):
        return None
    return message


def _without_elisions(words):
    """``words`` less `...`, `flags...` and `...the usual train flags...` (from `...X` to `Y...`)."""
    kept, inside = [], False
    for word in words:
        if word.startswith("..."):
            inside = not word.endswith("...") or word == "..."
            inside = inside and word != "..."
            continue
        if inside or word.endswith("..."):
            inside = inside and not word.endswith("...")
            continue
        kept.append(word)
    return kept


def test_the_guide_shows_commands():
    commands = [c for doc in documents() for c in shown_commands(open(os.path.join(REPO, doc)).read())]
    readme = shown_commands(open(os.path.join(REPO, "README.md")).read())
    assert len(readme) >= 25 and len(commands) >= 100
    shown = {words[0] for _, words in readme}
    assert {"make-list", "train", "evaluate", "predict", "serve", "export", "launch", "doctor"} <= shown


@pytest.mark.parametrize("doc", documents())
def test_every_command_shown_parses_with_the_real_parser(doc):
    bad = ["%s:%d: multitask-mx %s\n    -> %s" % (doc, number, " ".join(words), why)
           for number, words in shown_commands(open(os.path.join(REPO, doc)).read())
           for why in [problem(words)] if why]
    assert not bad, "commands that no longer match the CLI:\n" + "\n".join(bad)


def test_the_check_catches_a_wrong_flag_a_bad_choice_and_a_missing_command():
    assert problem(["train", "--data-train", "t.lst", "--save-result", "r"]) is None
    assert "unrecognized arguments: --no-such-flag" in problem(["train", "--data-train", "t.lst",
                                                                "--save-result", "r", "--no-such-flag"])
    assert "invalid choice" in problem(["train", "--augment", "extreme", "--data-train", "t", "--save-result", "r"])
    assert "invalid choice" in problem(["trian", "--data-train", "t.lst"])
    assert problem(["evaluate", "--save-result", "DIR", "[--epoch", "N|best]", "--data", "LIST.lst"]) is None
    assert "--nope" in problem(["evaluate", "--save-result", "DIR", "[--nope", "N]"])
    assert problem(["train", "--freeze-trunk", "..."]) is None  # required flags elided
    assert _without_elisions(["a", "...the", "usual", "flags...", "b", "c...", "...", "d"]) == ["a", "b", "d"]
    assert problem(["launch", "-n", "2", "-s", "1", "--", "train", "--kv-store", "dist_sync", "--bogus", "..."])


LINK = re.compile(r"\]\(([^)\s]+)\)")
PENDING = {"docs/learning.md"}  # written by another change: linked already as the home of the learning tables


def _slug(title):
    """GitHub's anchor of a heading."""
    title = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return title.replace(" ", "-")


def _anchors(path):
    with open(path) as f:
        text = FENCE.sub("", f.read())
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("doc", documents())
def test_relative_links_point_to_files_and_headings_that_exist(doc):
    with open(os.path.join(REPO, doc)) as f:
        text = FENCE.sub("", f.read())
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(REPO, os.path.dirname(doc), path)) if path else os.path.join(REPO, doc)
        relative = os.path.relpath(full, REPO)
        if relative in PENDING:
            continue
        if not os.path.exists(full):
            broken.append("%s (no such file)" % target)
        elif anchor and full.endswith(".md") and anchor not in _anchors(full):
            broken.append("%s (no such heading)" % target)
    assert not broken, "%s: broken links: %s" % (doc, ", ".join(broken))


@pytest.mark.parametrize("doc", [d for d in documents() if d.startswith("docs")])
def test_every_docs_page_opens_with_what_it_is_for_and_a_command(doc):
    with open(os.path.join(REPO, doc)) as f:
        head = "".join(f.readlines()[:22])
    assert head.startswith("# ") and "\n```" in head, "%s: say what the page is for, then show a command" % doc
    block = head.split("\n```", 1)[1]
    first = block.split("```", 1)[0]
    assert any(START.search(line) or line.startswith(("make ", ".venv/bin/python ")) for line in first.splitlines()), doc
