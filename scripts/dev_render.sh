#!/usr/bin/env bash
# Developer loop for the template: render the current template into DIR/my-dl-project (re-rendering keeps the
# project's data/ and runs/), and on first use install it into DIR/venv (editable, sharing .venv's packages).
#   bash scripts/dev_render.sh /tmp/mywork     then   cd /tmp/mywork/my-dl-project && ../venv/bin/python -m pytest
set -euo pipefail
dir=$(realpath -m "${1:?usage: dev_render.sh DIR [cookiecutter key=value ...]}"); shift
repo=$(cd "$(dirname "$0")/.." && pwd)
py="$repo/.venv/bin/python"
stage=$(mktemp -d)
TEMPLATE_SKIP_TIMM_CHECK=1 "$py" -m cookiecutter --no-input -o "$stage" "$repo" "$@" >/dev/null
mkdir -p "$dir/my-dl-project"
# The hook git-inits and commits each render: keep an existing checkout's own history instead of overwriting it.
if [ -d "$dir/my-dl-project/.git" ]; then rm -rf "$stage"/*/.git; fi
for part in src configs tests scripts; do rm -rf "${dir:?}/my-dl-project/$part"; done
cp -r "$stage"/*/. "$dir/my-dl-project/"
rm -rf "$stage"
if [ ! -x "$dir/venv/bin/python" ]; then
  (cd "$repo" && "$py" -c "from pathlib import Path; from scripts.rendered_env import install_rendered; install_rendered(Path('$dir/my-dl-project'), Path('$dir/venv'))")
fi
echo "rendered into $dir/my-dl-project (python: $dir/venv/bin/python)"
