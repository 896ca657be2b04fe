"""A dry run's plan and its text: the stages, their lines and estimates, the findings, a verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from lapo.training.estimates import Assumptions, GiB, Memory
from lapo.training.launch import Launch
from lapo.training.preflight import Finding


@dataclass
class StagePlan:
    name: str
    title: str
    lines: list[str] = field(default_factory=list)
    memory: Memory | None = None
    memory_note: str = ""
    seconds: float | None = None
    skipped: str | None = None


@dataclass
class Plan:
    config: str
    launch: Launch
    header: list[str]
    stages: list[StagePlan]
    findings: list[Finding]
    assumptions: Assumptions

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    def render(self) -> str:
        out = [f"dry run of {self.config} (nothing loaded, nothing written)"]
        out += [f"  {line}" for line in self.header]
        for stage in self.stages:
            out.append("")
            out.append(f"{stage.name}: {stage.skipped or stage.title}")
            if stage.skipped:
                continue
            out += [f"  {line}" for line in stage.lines]
            if stage.memory is not None:
                out += _render_memory(stage.memory, stage.memory_note, self.launch)
            if stage.seconds is not None:
                out.append(f"  time (estimate): {hours(stage.seconds)}")
        if any(s.memory is not None or s.seconds is not None for s in self.stages):
            out += ["", "estimates assume: " + "; ".join(self.assumptions.lines())]
        out.append("")
        if self.findings:
            out += [str(f) for f in self.findings]
        warnings = len(self.findings) - len(self.errors)
        verdict = (f"{len(self.errors)} error(s): fix them before launching" if self.errors
                   else "ok: the config passes every check"
                   + (f" ({warnings} warning(s) above)" if warnings else ""))
        out.append(verdict)
        return "\n".join(out)


def _render_memory(m: Memory, note: str, launch: Launch) -> list[str]:
    where = "per GPU" if m.gpu else "per process, RAM (CPU run)"
    out = [f"  memory {where} (estimate{'; ' + note if note else ''}):"]
    for part in m.parts:
        tag = {"static": "", "train": " [train]", "generate": " [generate]"}[part.phase]
        out.append(f"    {part.what + tag:<48} {part.formula:<34} {part.bytes / GiB:7.1f} GiB")
    rule = "static + max(train, generate): sleep mode" if m.sleep else "sum"
    total = f"    {'total (' + rule + ')':<83} {m.total / GiB:7.1f} GiB"
    if m.gpu:
        fits = "fits" if m.total <= launch.gpu_memory_gib * GiB else "DOES NOT FIT"
        total += f" of {launch.gpu_memory_gib:g}: {fits}"
    return out + [total]


def hours(seconds: float) -> str:
    return (f"{seconds / 3600:.1f} h" if seconds >= 3600 else
            f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s")
