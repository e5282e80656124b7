"""DiKE (METHOD.md §5): the KRD disentangler (trained once per model) and the DKE closed-form edit."""
