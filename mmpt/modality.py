"""The two modalities and the sentinel tokens that frame an NL→code instance."""

NL = 0
CODE = 1

# Sentinels (docs/method.md). `<comments>` opens the docstring, `<python>` opens the code, `<eot>` ends
# an instance; `<mask>` replaces corrupted docstring tokens; `<pad>` fills the tail of a row.
COMMENTS = "<comments>"
PYTHON = "<python>"
EOT = "<eot>"
MASK = "<mask>"
PAD = "<pad>"
SENTINELS = (COMMENTS, PYTHON, EOT, MASK, PAD)
# The official code opens every signature-first instance with this token (`prepare --code-format keep-flat`, imports)
OFFICIAL_BOS = "<|beginoftext|>"

LAYOUTS = ("docstring-first", "signature-first")
SEPARATIONS = ("none", "partial", "full")
OBJECTIVES = ("text-code-clm", "code-clm", "corrupt-code-clm", "prefix-code-clm")
# how prompts are built and programs executed at evaluation; paper: the official evaluation (mmpt.eval.styles.paper)
PROMPT_STYLES = ("mmpt", "paper")
