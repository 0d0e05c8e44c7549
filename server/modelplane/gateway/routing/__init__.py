"""Where a request goes: the routing table by model (`routes`), load-aware and
prefix-affine balancing (`balancing`, `affinity`), and the retry budget and
outlier ejection that keep failing replicas out (`resilience`)."""
