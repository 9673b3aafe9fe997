"""Planner -> Manager -> Knowledge -> Responder -> Reviewer, as a LangGraph graph (graph.py)."""

from multi_agent.agents.trace import Decision, Plan, Review, StepTrace, TurnTrace

__all__ = ["Decision", "Plan", "Review", "StepTrace", "TurnTrace"]
