"""The contracts that cross posthoc's boundaries: pure pydantic models, no I/O.

Import the public models from here; the submodules are an implementation detail.
"""

from schemas.analyzer import (
    AnalyzerSpec,
    AnalyzerTrigger,
    HttpTool,
    JsonlSink,
    ModelSettings,
    OutputSpec,
    SinkRoute,
    SlackSink,
    WebhookSink,
)
from schemas.conversation import Conversation, Event, Turn
from schemas.job import RunMessage
from schemas.outputs import OUTPUT_MODELS, FollowUp, NextStep, QualityAssessment
from schemas.procedure import (
    Condition,
    IfStep,
    InstructionStep,
    Parameter,
    Procedure,
    ProcedureTrigger,
    ToolStep,
)
from schemas.procedure_execution import ProcedureExecution, SourcedValue, StepExecution
from schemas.result import (
    AnalysisResult,
    Provenance,
    RecordedOutput,
    RunError,
    RunStatus,
    Timings,
    ToolCallRecord,
)
from schemas.rules import RuleViolation
from schemas.snapshot import AnalyzerSnapshot
from schemas.usage import Cost, Usage

__all__ = [
    "OUTPUT_MODELS",
    "AnalysisResult",
    "AnalyzerSnapshot",
    "AnalyzerSpec",
    "AnalyzerTrigger",
    "Condition",
    "Conversation",
    "Cost",
    "Event",
    "FollowUp",
    "HttpTool",
    "IfStep",
    "InstructionStep",
    "JsonlSink",
    "ModelSettings",
    "NextStep",
    "OutputSpec",
    "Parameter",
    "Procedure",
    "ProcedureExecution",
    "ProcedureTrigger",
    "Provenance",
    "QualityAssessment",
    "RecordedOutput",
    "RuleViolation",
    "RunError",
    "RunMessage",
    "RunStatus",
    "SinkRoute",
    "SlackSink",
    "SourcedValue",
    "StepExecution",
    "Timings",
    "ToolCallRecord",
    "ToolStep",
    "Turn",
    "Usage",
    "WebhookSink",
]
