"""Names results.json uses for the robustness matrix, shared by its writer (`advlab.run.robustness`)
and its readers (the report, `advlab export`, `advlab compare`)."""

NO_DEFENSE, NON_ADAPTIVE, ADAPTIVE, WORST_SETTING = "no defense", "non-adaptive", "adaptive", "worst setting"
WORST_CASE = "worst case"
WHITE_BOX = "white-box"  # the threat of attacks that read the model's gradients (`register_attack(threat=...)`)
