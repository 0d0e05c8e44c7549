"""Local mode (`modelplane local`): model servers and the gateway on one machine, on CPU,
without a cluster: the process stack (`stack`), its command (`command`), and the CPU
split between the servers (`cpu_binding`)."""
