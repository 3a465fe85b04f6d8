//! Intake: the public feedback form and triage.
