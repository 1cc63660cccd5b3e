"""The closed-loop core of every live experiment: a source, an analyzer, a policy and a sink.

``run_loop(source, analyzer, policy, sink, decisions)`` runs one phase inside one Prefect task:
frames come from an edge stream (shared-memory references on the edge's host), a journal
replay or a watched folder (microscopes that only write files), are analysed on Ray/Dask
workers under a per-frame deadline with a local fallback, are decided by a pure policy
from ``tasks.decisions``, and the policy's commands go back to the edge with deterministic
ids; every decision is journaled next to the run's data.
"""

from __future__ import annotations

from ._analyzer import Analysis, Analyzer, AnalyzerSettings, ModeSwitch
from ._completeness import VENDOR_PROFILES, CompletionRule, VendorProfile, structure_complete
from ._decision_log import DecisionLog
from ._edge_phase import FALLBACK_OPTIONS, analyzer_for, local_model_choice, run_edge_phase
from ._folder_source import FileListSource, FileRef, WatchedFolderSource
from ._ledger import IngestLedger, LedgerEntry
from ._loop import LoopSettings, run_loop
from ._report import LoopReport
from ._routed import RoutedAnalyzer, route_by_index
from ._sink import CommandSink, SentCommand, command_id
from ._sources import EdgeStreamSource, FrameSource, JournalReplaySource, LiveFrame

__all__ = [
    "FALLBACK_OPTIONS",
    "VENDOR_PROFILES",
    "Analysis",
    "Analyzer",
    "AnalyzerSettings",
    "CommandSink",
    "CompletionRule",
    "DecisionLog",
    "EdgeStreamSource",
    "FileListSource",
    "FileRef",
    "FrameSource",
    "IngestLedger",
    "JournalReplaySource",
    "LedgerEntry",
    "LiveFrame",
    "LoopReport",
    "LoopSettings",
    "ModeSwitch",
    "RoutedAnalyzer",
    "SentCommand",
    "VendorProfile",
    "WatchedFolderSource",
    "analyzer_for",
    "command_id",
    "local_model_choice",
    "route_by_index",
    "run_edge_phase",
    "run_loop",
    "structure_complete",
]
