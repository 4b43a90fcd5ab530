"""The runner: attack rows in resumable chunks, defense rows, the robustness ledger, sanity checks."""
