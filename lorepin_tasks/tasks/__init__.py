"""The Invoke surface: one module per area; each parses its flags, asks a plan for the
steps, hands them to the executor and maps errors to exit codes. Modules here never
import each other; what they share is in `_common`."""
