"""What this machine has for bench/gpu/run.sh, checked before anything is installed: Python, torch,
the device, the SDPA kernel the run will force (tried on the attention calls the bench makes), the
packages the image holds. Prints one line per fact, writes them as JSON (--out), and on the first
failing check prints one line `check failed: ...` and exits 1.

Runs on the image's own Python, before sharpv or the carried wheels are on the path: standard
library and torch only.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from importlib import metadata

#: the packages whose image versions the run reports (transformers: the image's, replaced by the carried one)
PACKAGES = ("torch", "transformers", "huggingface_hub", "tokenizers", "safetensors", "numpy", "matplotlib", "pillow",
            "typer", "rich", "kernels", "pip", "av")
#: attention calls of the shapes the GPU run measures (LLaVA-OneVision-7B and Qwen2.5-VL-7B share them):
#: 28 query heads, 4 key/value heads, head size 128; a causal prefill and a one-token decode step
HEADS, KV_HEADS, HEAD_DIM = 28, 4, 128


def fail(message: str) -> None:
    print(f"check failed: {message}", flush=True)
    sys.exit(1)


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def try_kernel(torch, kernel: str, device: str, dtype) -> dict:
    """The prefill and decode attention calls of the bench, under ``kernel`` alone."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "math": SDPBackend.MATH}[kernel]
    out = {}
    for name, q_len, causal in (("prefill", 512, True), ("decode", 1, False)):
        q = torch.randn(1, HEADS, q_len, HEAD_DIM, device=device, dtype=dtype)
        k = torch.randn(1, KV_HEADS, 512, HEAD_DIM, device=device, dtype=dtype)
        v = torch.randn_like(k)
        try:
            with sdpa_kernel([backend]):
                got = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
            with sdpa_kernel([SDPBackend.MATH]):
                reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal,
                                                           enable_gqa=True)
        except RuntimeError as exc:
            fail(f"the {kernel} SDPA kernel refused the bench's {name} call ({q_len} queries, {HEADS}/{KV_HEADS} "
                 f"heads, head size {HEAD_DIM}, {dtype}, causal={causal}): {str(exc).splitlines()[0]}")
        error = (got.float() - reference).abs().max().item()
        if not error < 0.05:
            fail(f"the {kernel} SDPA kernel's {name} call differs from the math kernel by {error:.3g}")
        out[name] = f"ok (max difference to math {error:.1e})"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), required=True)
    parser.add_argument("--sdpa-kernel", choices=("flash", "efficient", "math"), required=True)
    parser.add_argument("--min-gpu-gib", type=float, default=40.0, help="free GPU memory the run needs")
    parser.add_argument("--out", help="write the facts as JSON here")
    args = parser.parse_args()
    start = time.perf_counter()
    facts: dict = {"python": platform.python_version(), "executable": sys.executable, "platform": platform.platform()}
    print(f"python {facts['python']} at {sys.executable}")
    if sys.version_info < (3, 10):
        fail(f"python {facts['python']}: sharpv needs 3.10 or later")
    facts["packages"] = versions()
    print("image packages: " + ", ".join(f"{k} {v or '-'}" for k, v in facts["packages"].items()))
    for name in ("torch", "numpy", "matplotlib", "pillow", "pip"):
        if facts["packages"][name] is None:
            fail(f"the image has no {name}, which the run takes from it (bench/gpu/wheels.txt does not carry it)")
    import torch

    facts["torch"] = torch.__version__
    facts["torch_cuda"] = torch.version.cuda
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {torch.get_num_threads()} CPU threads")
    dtype = torch.bfloat16
    if args.device == "cuda":
        if not torch.cuda.is_available():
            fail(f"torch {torch.__version__} sees no CUDA device (built for CUDA {torch.version.cuda})")
        props = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info(0)
        facts.update(gpu=props.name, capability=f"{props.major}.{props.minor}", gpu_memory_gib=round(total / 2**30, 1),
                     gpu_free_gib=round(free / 2**30, 1), multiprocessors=props.multi_processor_count,
                     flash_available=torch.backends.cuda.is_flash_attention_available())
        print(f"GPU {props.name}, compute capability {props.major}.{props.minor}, {props.multi_processor_count} SMs, "
              f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free")
        if free / 2**30 < args.min_gpu_gib:
            fail(f"{free / 2**30:.1f} GiB free on the GPU; the 7B shapes need about {args.min_gpu_gib:.0f}")
        if args.sdpa_kernel == "flash" and not facts["flash_available"]:
            fail(f"torch {torch.__version__} has no flash SDPA kernel (torch.backends.cuda.is_flash_attention_available)")
        if not torch.cuda.is_bf16_supported():
            fail(f"{props.name} has no bfloat16")
    facts["sdpa"] = {args.sdpa_kernel: try_kernel(torch, args.sdpa_kernel, args.device, dtype)}
    print(f"SDPA {args.sdpa_kernel} kernel, bf16, the bench's prefill and decode calls: "
          + ", ".join(f"{k} {v}" for k, v in facts["sdpa"][args.sdpa_kernel].items()))
    facts["check_seconds"] = round(time.perf_counter() - start, 2)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(facts, f, indent=2)
    print(f"checks passed in {facts['check_seconds']:.1f} s")


if __name__ == "__main__":
    main()
