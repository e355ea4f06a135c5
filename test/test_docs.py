"""The user documents (README.md, CHANGELOG.md, docs/**/*.md) point only at things that exist.

Links, images and ``#anchors`` resolve (GitHub's heading slugs); every ``make`` target, console
script, ``bin/`` tool, ``python -m`` module, launch file and launch argument (``name:=``) they
name exists; the README stays at most 300 lines; no issue numbers; one version in
mtl_perception/__init__.py (read by setup.py), package.xml and the CHANGELOG's newest release.
Each checker returns the offenders by name, so a failure says which one; the first tests run
the checkers on small hand-written documents whose offenders are known, so they are seen to fail.
"""

import ast
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300

FENCE = re.compile(r"^(```|~~~)\s*([\w+-]*)[^\n]*\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"<(?:img|a)\b[^>]*?(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
# Commands a shell block may start with that this project does not provide.
EXTERNAL_COMMANDS = {"ros2", "pip", "pip3", "python", "python3", "make", "cd", "export", "source", ".",
                     "colcon", "rosdep", "torchrun", "git", "sudo", "polygraphy", "nvpmodel", "jetson_clocks",
                     "taskset", "echo", "cat", "ls", "rm", "mkdir", "cp", "mv", "tar", "unset"}
ISSUE_REFERENCE = re.compile(r"\bissues?\s*#?\s*\d+|(?<![\w/&#])#\d+(?![\w-])", re.IGNORECASE)


def user_documents(root=REPO):
    return [root / "README.md", root / "CHANGELOG.md", *sorted((root / "docs").rglob("*.md"))]


def without_code(text):
    """``text`` with fenced blocks and inline code blanked (line numbers kept)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return INLINE_CODE.sub(lambda m: " " * len(m.group(0)), text)


def shell_blocks(text):
    """The contents of fenced blocks marked bash/sh/shell/console."""
    return [m.group(3) for m in FENCE.finditer(text) if m.group(2).lower() in SHELL_LANGUAGES]


def code_texts(text):
    """Every fenced block and inline code span of ``text``."""
    fenced = [m.group(3) for m in FENCE.finditer(text)]
    prose = FENCE.sub("", text)
    return fenced + [m.group(2) for m in INLINE_CODE.finditer(prose)]


def inline_spans(text):
    return [m.group(2) for m in INLINE_CODE.finditer(FENCE.sub("", text))]


def github_slug(heading):
    """GitHub's anchor for a heading: the rendered text lower-cased, characters other than letters,
    digits, ``_``, ``-`` and spaces dropped, spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"(\*{1,3})(\S.*?\S|\S)\1", r"\2", text)  # emphasis markers (* always, _ between words)
    text = re.sub(r"(?<!\w)(_{1,3})(\S.*?\S|\S)\1(?!\w)", r"\2", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text):
    """The ``#fragment`` names of a document's headings, duplicates numbered as GitHub does."""
    seen, names = {}, set()
    for match in HEADING.finditer(FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)):
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        names.add(slug if count == 0 else f"{slug}-{count}")
    return names


def link_targets(text):
    prose = without_code(text)
    return [*LINK.findall(prose), *HTML_SRC.findall(prose), *REFERENCE_DEFINITION.findall(prose)]


def broken_links(root, documents):
    """``document: target (why)`` for every relative link, image or anchor that does not resolve."""
    broken = []
    for document in documents:
        text = document.read_text(encoding="utf-8")
        for target in link_targets(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
                continue
            path_part, _, fragment = target.partition("#")
            where = f"{document.relative_to(root)}: {target}"
            file = (document.parent / path_part).resolve() if path_part else document
            if not file.exists():
                broken.append(f"{where} (no such file)")
            elif fragment and file.suffix == ".md" and fragment not in anchors(file.read_text(encoding="utf-8")):
                broken.append(f"{where} (no such heading)")
            elif fragment and file.suffix != ".md":
                broken.append(f"{where} (anchor into a non-Markdown file)")
    return broken


def makefile_targets(makefile):
    """Targets defined by rules of the Makefile (not variables, not pattern or file rules)."""
    targets = set()
    for line in makefile.read_text().splitlines():
        match = re.match(r"^([A-Za-z][\w.-]*(?:\s+[A-Za-z][\w.-]*)*)\s*:(?![=:])", line)
        if match and not line.startswith("."):
            targets.update(match.group(1).split())
    return targets


def console_scripts(setup_py):
    """Names of setup.py's console_scripts entry points (read with ast, setup() not run)."""
    for node in ast.walk(ast.parse(setup_py.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            entry_points = ast.literal_eval(node.value)
            return {spec.split("=", 1)[0].strip() for spec in entry_points.get("console_scripts", [])}
    return set()


def unknown_make_targets(texts, targets):
    """``make X`` in code (fenced or inline) where X is not a target; VAR=value words skipped."""
    unknown = []
    for text in texts:
        for code in code_texts(text):
            for match in re.finditer(r"(?<![\w-])make((?:\s+[A-Z_][A-Z0-9_]*=\S*)*)\s+([a-z][\w.-]*)", code):
                if match.group(2) not in targets:
                    unknown.append(match.group(2))
    return sorted(set(unknown))


def shell_commands(block):
    """(first word, words) of each command in a shell block: continuations joined (a trailing
    backslash, or an indented line of a usage synopsis), comments dropped, split at ``;``,
    ``&&`` and ``&``; leading VAR=value assignments skipped."""
    commands = []
    for line in re.sub(r"\\?\n[ \t]+(?=\S)", " ", block.replace("\\\n", " ")).splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)
        for part in re.split(r"&&|;|(?<![<>&])&(?!&)", line):
            words = part.split()
            while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                words.pop(0)
            if words:
                commands.append((words[0], words))
    return commands


def unknown_commands(root, texts, tools, launch_files):
    """Project commands named in the documents that do not exist:
    - the first word of a shell-block command that is neither a tool (console script or bin/) nor
      a common external command nor an existing path;
    - ``ros2 run mtl_perception X`` with X not in bin/, ``ros2 launch mtl_perception F`` with F not
      in launch/;
    - an inline code span starting with ``mtl-`` that is no tool."""
    unknown = []
    for text in texts:
        for block in shell_blocks(text):
            for first, words in shell_commands(block):
                if "/" in first:
                    if not (root / first).exists():
                        unknown.append(first)
                elif first not in tools and first not in EXTERNAL_COMMANDS:
                    unknown.append(first)
        for code in code_texts(text):
            for match in re.finditer(r"ros2\s+(run|launch)\s+mtl_perception\s+([A-Za-z_][\w.-]*)", code):
                kind, name = match.groups()
                if (kind == "run" and name not in tools) or (kind == "launch" and name not in launch_files):
                    unknown.append(f"ros2 {kind} mtl_perception {name}")
        for span in inline_spans(text):
            first = span.split()[0] if span.split() else ""
            if first.startswith("mtl-") and first not in tools:
                unknown.append(first)
    return sorted(set(unknown))


def python_modules(texts):
    """Modules run with ``-m`` (python -m, torchrun -m) in the documents' code."""
    modules = set()
    for text in texts:
        for code in code_texts(text):
            modules.update(re.findall(r"(?<![\w-])(?:python3?|torchrun)\b[^\n`]*?\s-m\s+([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)",
                                      code))
    return modules


def missing_modules(modules):
    missing = []
    for name in sorted(modules):
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:  # a parent package that does not exist
            found = False
        if not found:
            missing.append(name)
    return missing


def launch_arguments_used(texts):
    """``name:=`` words in the documents' code, leaving out ``-p``/``-r`` (ros-args parameters
    and remaps)."""
    used = set()
    for text in texts:
        for code in code_texts(text):
            for match in re.finditer(r"(?<![\w:/-])([A-Za-z_]\w*):=", code):
                before = code[:match.start()].rstrip()
                if not re.search(r"(?:^|\s)(?:-p|-r|--param|--remap)$", before):
                    used.add(match.group(1))
    return used


def declared_launch_arguments(launch_support, launch_files):
    """Every launch argument the launch files declare, read from ``launch_support`` with ast (no
    ``launch`` import: launch_ros is not on PyPI): the ``DeclareLaunchArgument("name", ...)``
    literals and the per-graph ``_CHECKPOINT_ARGUMENTS``. Each launch file must build its
    description with ``graph_launch_description("<graph>")`` of a graph listed there."""
    tree = ast.parse(launch_support.read_text())
    names, per_graph = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument" \
                and node.args and isinstance(node.args[0], ast.Constant):
            names.add(node.args[0].value)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_CHECKPOINT_ARGUMENTS" for t in node.targets):
            per_graph = ast.literal_eval(node.value)
    for launch_file in launch_files:
        graphs = re.findall(r"graph_launch_description\(\s*[\"']([\w]+)[\"']\s*\)", launch_file.read_text())
        assert graphs and set(graphs) <= set(per_graph), f"{launch_file.name} builds no graph of launch_support"
        names.update(name for graph in graphs for name, _ in per_graph[graph])
    return names


def issue_references(root, documents):
    """``document:line: text`` for each ``issue N`` / ``#N`` outside links' URLs."""
    found = []
    for document in documents:
        for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), 1):
            visible = re.sub(r"\]\([^)]*\)", "]", re.sub(r"https?://\S+", "", line))
            for match in ISSUE_REFERENCE.finditer(visible):
                found.append(f"{document.relative_to(root)}:{number}: {match.group(0)}")
    return found


# --- the checkers on documents whose offenders are known ---------------------------------------

def test_slugs_follow_githubs_rules():
    assert github_slug("Several cameras: one network (`multicam_node`)") == "several-cameras-one-network-multicam_node"
    assert github_slug("What `make demo` shows") == "what-make-demo-shows"
    assert github_slug("Fast DDS and large images: `FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`") == \
        "fast-dds-and-large-images-fastdds_builtin_transportslarge_data"
    assert github_slug("/diagnostics") == "diagnostics"
    assert github_slug("[0.2.0] - 2026-12-01") == "020---2026-12-01"
    assert github_slug("**Bold** and *it* and _that_") == "bold-and-it-and-that"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1", "a-2"}


def test_link_checker_names_each_broken_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## Two words\n")
    (tmp_path / "docs" / "fig.png").write_bytes(b"png")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Top\n[ok](docs/page.md) [ok anchor](docs/page.md#two-words) [self](#top) ![ok](docs/fig.png)\n"
        "[web](https://example.com/x#y) [gone](docs/missing.md) ![gone](docs/missing.png)\n"
        "[bad anchor](docs/page.md#three-words) [bad self](#bottom)\n"
        "`[in code](nowhere.md)`\n```\n[in a block](nowhere.md)\n```\n[ref]: docs/none.md\n")
    assert broken_links(tmp_path, [readme]) == [
        "README.md: docs/missing.md (no such file)", "README.md: docs/missing.png (no such file)",
        "README.md: docs/page.md#three-words (no such heading)", "README.md: #bottom (no such heading)",
        "README.md: docs/none.md (no such file)"]


def test_name_checkers_name_each_unknown_one(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "real.sh").write_text("")
    doc = ("Run `make demo`, `make BUDGET=x demo`, `make demoo`, `mtl-train`, `mtl-trian --x`.\n"
           "```bash\nmake test PYTEST_ARGS='-k x'; make tset\nmtl-eval --checkpoint C \\\n    --out m.json && mtl-evl\n"
           "GPU_CHECK_DRY=1 scripts/real.sh\nscripts/gone.sh   # a comment\n"
           "ros2 run mtl_perception replay_eval --bag B &\nros2 run mtl_perception replay_evl  # or: ros2 run mtl_perception ...\n"
           "mtl-train --config C [--resume]\n    [--set k=v]   # a usage synopsis goes on indented\n"
           "ros2 launch mtl_perception multitask.launch.py camera_topic:=/c use_rvz:=true\n"
           "ros2 run x y --ros-args -p some_param:=1\npython -m mtl_perception.replay.compare\n"
           "python3 -P -m mtl_perception.replay.nothere; torchrun --nproc_per_node 2 -m mtl_perception.training\n```\n")
    assert unknown_make_targets([doc], {"demo", "test"}) == ["demoo", "tset"]
    assert unknown_commands(tmp_path, [doc], {"mtl-train", "mtl-eval", "replay_eval"}, {"multitask.launch.py"}) == [
        "mtl-evl", "mtl-trian", "ros2 run mtl_perception replay_evl", "scripts/gone.sh"]
    assert python_modules([doc]) == {"mtl_perception.replay.compare", "mtl_perception.replay.nothere",
                                     "mtl_perception.training"}
    assert missing_modules({"mtl_perception.replay.compare", "mtl_perception.replay.nothere", "nopackage.x"}) == [
        "mtl_perception.replay.nothere", "nopackage.x"]
    assert launch_arguments_used([doc]) == {"camera_topic", "use_rvz"}


def test_issue_checker_names_each_reference(tmp_path):
    doc = tmp_path / "CHANGELOG.md"
    doc.write_text("Fixed in issue 12.\nSee #34 and Issue #5.\n"
                   "Upstream [ros2/launch#666](https://github.com/ros2/launch/issues/666) is fine,\n"
                   "as are [a heading](#3d-view), colour #ff0000 and the issue's targets.\n")
    assert issue_references(tmp_path, [doc]) == [
        "CHANGELOG.md:1: issue 12", "CHANGELOG.md:2: #34", "CHANGELOG.md:2: Issue #5"]


def test_launch_argument_reader_on_a_small_launch_support(tmp_path):
    support = tmp_path / "launch_support.py"
    support.write_text('_CHECKPOINT_ARGUMENTS = {"solo": (("checkpoint", "c"),), "pair": (("a_ckpt", "a"),)}\n'
                       'def graph_launch_description(graph):\n'
                       '    return [DeclareLaunchArgument("camera_topic", default_value="x"),\n'
                       '            *(DeclareLaunchArgument(n, default_value="") for n, t in _CHECKPOINT_ARGUMENTS[graph])]\n')
    solo = tmp_path / "solo.launch.py"
    solo.write_text('from x import graph_launch_description\ndef generate_launch_description():\n'
                    '    return graph_launch_description("solo")\n')
    assert declared_launch_arguments(support, [solo]) == {"camera_topic", "checkpoint"}
    stray = tmp_path / "stray.launch.py"
    stray.write_text('def generate_launch_description():\n    return graph_launch_description("other")\n')
    with pytest.raises(AssertionError, match="stray.launch.py builds no graph"):
        declared_launch_arguments(support, [stray])


def test_makefile_and_setup_readers_on_the_real_files():
    assert {"test", "demo", "bench", "build", "learn-report", "gpu-wheels"} <= makefile_targets(REPO / "Makefile")
    assert "VENV" not in makefile_targets(REPO / "Makefile")
    assert {"mtl-train", "make-bag", "bag-info"} <= console_scripts(REPO / "setup.py")


# --- the real documents ------------------------------------------------------------------------

DOCUMENTS = user_documents()
TEXTS = [path.read_text(encoding="utf-8") for path in DOCUMENTS]


def test_the_documents_exist():
    assert all(path.is_file() for path in DOCUMENTS[:2]), "README.md and CHANGELOG.md"
    assert len(DOCUMENTS) > 2, "docs/*.md"


def test_readme_is_at_most_300_lines():
    lines = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines"


def test_every_relative_link_image_and_anchor_resolves():
    assert broken_links(REPO, DOCUMENTS) == []


def test_every_make_target_named_exists():
    assert unknown_make_targets(TEXTS, makefile_targets(REPO / "Makefile")) == []


def test_every_project_command_named_exists():
    tools = console_scripts(REPO / "setup.py") | {p.name for p in (REPO / "bin").iterdir() if p.is_file()}
    launch_files = {p.name for p in (REPO / "launch").glob("*.launch.py")}
    assert unknown_commands(REPO, TEXTS, tools, launch_files) == []


def test_every_python_m_module_named_exists():
    modules = python_modules(TEXTS)
    assert "mtl_perception.graphs.graph" in modules  # the documents are read at all
    assert missing_modules(modules) == []


LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
LAUNCH_SUPPORT = REPO / "mtl_perception" / "graphs" / "launch_support.py"


def test_every_launch_argument_named_is_declared_by_a_launch_file():
    declared = declared_launch_arguments(LAUNCH_SUPPORT, LAUNCH_FILES)
    assert {"camera_topic", "checkpoint", "segmentation_checkpoint", "cameras", "budget", "use_rviz"} <= declared
    assert sorted(launch_arguments_used(TEXTS) - declared) == []


@pytest.mark.needs_launch
def test_the_launch_argument_reader_agrees_with_launch():
    """Where launch_ros exists: the arguments launch itself sees are those read with ast."""
    declared = set()
    for launch_file in LAUNCH_FILES:
        spec = importlib.util.spec_from_file_location(launch_file.stem.replace(".", "_"), launch_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        declared.update(argument.name for argument in module.generate_launch_description().get_launch_arguments())
    assert declared == declared_launch_arguments(LAUNCH_SUPPORT, LAUNCH_FILES)


def test_no_issue_numbers_in_user_documents():
    assert issue_references(REPO, DOCUMENTS) == []


def package_versions(root=REPO):
    """(__version__ of the Python package, <version> of package.xml, newest released version of
    CHANGELOG.md), each read on its own: ast, the XML parser, the Markdown headings."""
    import xml.etree.ElementTree as ElementTree

    python_version = next(node.value.value for node in ast.parse((root / "mtl_perception" / "__init__.py").read_text()).body
                          if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__version__")
    xml_version = ElementTree.parse(root / "package.xml").getroot().findtext("version").strip()
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}\s*$", (root / "CHANGELOG.md").read_text(), re.MULTILINE)
    return python_version, xml_version, released[0] if released else None


def test_version_reader_sees_a_disagreement(tmp_path):
    (tmp_path / "mtl_perception").mkdir()
    (tmp_path / "mtl_perception" / "__init__.py").write_text('"""doc"""\n__version__ = "1.3.0"\n')
    (tmp_path / "package.xml").write_text("<package format=\"3\"><name>x</name><version> 1.2.0 </version></package>")
    (tmp_path / "CHANGELOG.md").write_text("# Changelog\n\n## [Unreleased]\n\n## [1.2.0] - 2026-01-02\n\n## [1.1.0] - 2026-01-01\n")
    assert package_versions(tmp_path) == ("1.3.0", "1.2.0", "1.2.0")


def test_package_xml_setup_py_and_the_changelog_name_one_version():
    """setup.py reads __version__ from mtl_perception/__init__.py; package.xml states it again."""
    python_version, xml_version, released = package_versions()
    assert python_version == xml_version == released
