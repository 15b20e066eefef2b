"""Upstream's kernel tests for a cross target, run under its emulator.

ctest cannot do this: llama.cpp registers its tests as ``add_test(COMMAND $<TARGET_FILE:…>)`` and
cmake 3.25 does not put ``CMAKE_CROSSCOMPILING_EMULATOR`` in front of those, so the RISC-V binary
would be handed to /bin/sh. q3build builds the test binaries in the target's build directory and
runs them through the recipe's emulator itself:

- ``test-quantize-fns -v``: for every ggml type, quantize/dequantize and the vec_dot kernels (ggml's
  RVV code on riscv64) against the scalar reference implementation in the same binary, per VLEN.
- ``test-backend-ops test -b CPU`` for the ops Qwen3-TTS runs. test-backend-ops compares a backend with
  the CPU backend, and skips the CPU backend itself unless it is named with ``-b CPU``. Then it compares
  the CPU backend with the CPU backend in *reference mode* (``ggml_backend_cpu_set_use_ref``), which
  turns off graph fusion and the tiled/chunked flash-attention paths but runs the same vec/RVV kernels.
  So this tier catches crashes, NaN/Inf, buffer overruns (the test's sentinels) and fusion bugs under
  the emulator; it cannot catch wrong RVV arithmetic in mul_mat. test-quantize-fns is the arithmetic
  check.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from q3build.core.plan import BuildPlan
from q3build.errors import BuildError
from q3build.toolchains import emulation

QUANTIZE_FNS = "test-quantize-fns"
BACKEND_OPS = "test-backend-ops"
TEST_BINARIES = (QUANTIZE_FNS, BACKEND_OPS)

# The ops the Qwen3-TTS talker and codec decoder run on the CPU backend (ggml_op_desc names), each with
# a test-backend-ops -p filter on the test case parameters. Upstream's full case list for these ops
# takes far too long under qemu (mul_mat alone has cases with m=1700000), so the filters keep the
# weight types the speech model ships (f32, f16, q8_0, q4_0) at small sizes, the NORMAL and NEOX rope
# modes at head size 128, and the 1-D convolutions (conv_1d is im2col + mul_mat in ggml; the codec
# upsamples with conv_transpose_1d). An empty filter keeps every case.
TTS_OPS = (
    ("MUL_MAT", r"^type_a=(f32|f16|q8_0|q4_0),type_b=f32,m=16,n=(1|8|16),k=(256|1024),bs=\[1,1\],nr=\[1,1\],"
                r"per=\[0,1,2,3\]"),
    ("GET_ROWS", r"^type=(f32|f16|q8_0|q4_0),n=256,m=5,r=4,be1=[0-9],"),
    ("ROPE", r"^type=f32,ne_a=\[128,32,2,1\],n_dims=128,mode=(0|2),"),
    ("RMS_NORM", r"^type=f32,"),
    ("SOFT_MAX", r"^type=f32,ne=\[[0-9]{1,2},"),
    ("IM2COL", r"is_2D=0"),
    ("CONV_TRANSPOSE_1D", ""),
    ("SNAKE_FUSE", ""),   # the codec's fused Snake activation (patch ggml-cpu-fuse-the-snake-activation-chain)
)

_QF_LINE = re.compile(r"^\s*(?P<type>\S+) (?P<check>[a-z][a-z ()=0-9]*?):\s+(?P<result>ok|FAILED) \((?P<err>[^)]*)\)")
_QF_F32 = re.compile(r"^\s*f32 vec_dot n=\s*(?P<n>\d+):\s+(?P<result>ok|FAILED)")
_BO_CASE = re.compile(r"^\s+(?P<op>[A-Z_0-9]+)\((?P<params>.*?)\): .*?(?P<result>\bOK\b|\bFAIL\b|not supported)")
_BO_SUMMARY = re.compile(r"(?P<passed>\d+)/(?P<total>\d+) tests passed")


@dataclass
class Run:
    test: str
    vlen: int
    op: str | None
    argv: list[str]
    returncode: int
    seconds: float
    passed: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    cases: dict[str, int] = field(default_factory=dict)   # op or type -> checks passed
    tail: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.passed > 0

    def to_json(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def parse_quantize_fns(out: str, run: Run) -> None:
    for line in out.splitlines():
        m = _QF_LINE.match(line) or _QF_F32.match(line)
        if not m:
            continue
        what = m.groupdict().get("type", "f32")
        if m.group("result") == "ok":
            run.passed += 1
            run.cases[what] = run.cases.get(what, 0) + 1
        else:
            run.failed += 1
            run.failures.append(line.strip())


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_backend_ops(out: str, run: Run) -> None:
    out = _ANSI.sub("", out)
    for line in out.splitlines():
        m = _BO_CASE.match(line)
        if not m or m.group("result") == "not supported":
            continue
        if m.group("result") == "OK":
            run.passed += 1
            run.cases[m.group("op")] = run.cases.get(m.group("op"), 0) + 1
        else:
            run.failed += 1
            run.failures.append(f"{m.group('op')}({m.group('params')})")
    s = _BO_SUMMARY.search(out)
    if s:   # the summary line is authoritative; the per-case lines give the names
        run.passed, run.failed = int(s.group("passed")), int(s.group("total")) - int(s.group("passed"))
    else:   # no summary: the run died before the end
        run.failed += 1
        run.failures.append("no summary line (the test binary stopped early)")


def backend_ops_args(op: str, params: str) -> list[str]:
    return ["test", "-b", "CPU", "-o", op, *(["-p", params] if params else [])]


def run_test(plan: BuildPlan, test: str, vlen: int, env: Mapping[str, str], *, op: str | None = None,
             params: str = "") -> Run:
    exe = plan.build_dir / "bin" / test
    if not exe.is_file():
        raise BuildError(f"target {plan.target_name}: {exe} was not built")
    args = ["-v"] if test == QUANTIZE_FNS else backend_ops_args(op or "", params)
    t0 = time.monotonic()
    log = plan.log_dir / (f"{test}-vlen{vlen}.log" if op is None else f"{test}-{op}-vlen{vlen}.log")
    rc = emulation.run_logged(plan, [exe, *args], env, log, vlen=vlen)
    out = log.read_text(errors="replace")
    run = Run(test=test, vlen=vlen, op=op, argv=[*emulation.argv(plan, vlen=vlen), str(exe), *args],
              returncode=rc, seconds=round(time.monotonic() - t0, 1))
    (parse_quantize_fns if test == QUANTIZE_FNS else parse_backend_ops)(out, run)
    if not run.ok:
        run.tail = "\n".join(out.splitlines()[-15:])
    return run
