"""How results are shown: text formatting, images and plots as data URIs, image cards, and `TaskView`,
the contract of a task's part of the report (its summary columns, glossary, cards, drawings and plot)."""
