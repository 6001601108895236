"""The measuring side of HERSR, behind ``hersr bench``: latency, memory and kernel launches against
peers (``harness``), the equal-budget quality proxy (``proxy``), the component ablation
(``ablation``), parameter/MAC counts (``model_cost``) and the launch counter (``launch_count``).
The targets the reports check are data: ``targets.json``."""
