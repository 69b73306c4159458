"""Typed settings, declared once beside their fields (no torch here).

- `limits`  `Range` rules, `LIMITS`/`CHECKS` conventions, and the checks that apply them
- `types`   types several stages share: `AugmentSpec`, `Normalization`
- `files`   YAML within bounds, `section.key=value` overrides
- `merge`   merging files and overrides into a config dataclass, type by type, naming the key

Each stage's own config lives in its module under `pointkd.stages` (e.g. `RunConfig` in
`pointkd.stages.train`).
"""
