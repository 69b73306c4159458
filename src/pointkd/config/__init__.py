"""Typed settings, declared once beside their fields (no torch here).

- `limits`  `Range` rules, `LIMITS`/`CHECKS` conventions, and the checks that apply them
- `types`   types several stages share: `AugmentSpec`, `Normalization`
- `files`   YAML within bounds, `section.key=value` overrides
- `merge`   merging files and overrides into a config dataclass, type by type, naming the key
- `run`     `RunConfig`, the settings of `train` / `distill` (read by the loop too)
- `stages`  every other command's settings: `RecordConfig`, `EvalConfig`, `ExportConfig`, ...

A field's help, option name and rule are declared once, beside it (`limits.setting`); the CLI
(`pointkd.cli`) builds its options from these declarations, and a Python caller passes the
same fields. The stages that use them live in `pointkd.stages`.
"""
